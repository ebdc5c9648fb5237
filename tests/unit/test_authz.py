"""Istio AuthorizationPolicy and PeerAuthentication at the waypoint (issue 15, slice 2): the
seed's three policies and its STRICT mTLS, read unmodified, compiled to Envoy RBAC and TLS that
Envoy itself accepts, judged in Istio's order; and the lab CA's SPIFFE certificates.

Requests are judged here by a small reading of the generated RBAC filters (`decide`), written
from Envoy's documented matcher semantics, so the Istio cases are checked on what Envoy is
given; the Mininet test (test_authz_mininet.py) checks the same through a running Envoy."""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import shutil
import stat
import subprocess
import textwrap

import pytest
from cryptography import x509

from apps.microseg import Microseg
from apps.services import Services
from apps.services.settings import WAYPOINT
from controller.config import ConfigError, load_config
from controller.core import Core
from tests.unit.test_waypoint import fake_runner  # noqa: F401  (autouse: no real Envoy)
from vnf.waypoint import envoy
from vnf.waypoint.ca import MeshCA

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data")
ENDPOINTS = """\
endpoints:
  - {name: web, namespace: production, ip: 10.0.1.1, service_account: web-service}
  - {name: mobile, namespace: production, ip: 10.0.1.2, service_account: mobile-service}
  - {name: front, ip: 10.0.1.3, service_account: frontend}
  - {name: nobody, ip: 10.0.1.4}
  - {name: api-1, namespace: production, ip: 10.0.2.1, labels: {app: api-server}}
  - {name: api-2, namespace: production, ip: 10.0.2.2, labels: {app: api-server}}
  - {name: backend, ip: 10.0.3.1, labels: {app: backend-api}}
  - {name: plain, ip: 10.0.4.1, labels: {app: plain}}
services:
  - {name: api, vip: 10.0.100.20, port: 8080, backends: [{endpoint: api-1}, {endpoint: api-2}]}
  - {name: backend-svc, vip: 10.0.100.21, port: 80, backends: [{endpoint: backend}]}
  - {name: plain-svc, vip: 10.0.100.22, port: 80, backends: [{endpoint: plain}]}
mesh:
  waypoint: {bridge: s1, addresses: [10.0.0.250/8]}
"""
SEED_FILES = ("mtls-policy.yml", "zero-trust-policy.yml")


def lab(tmp_path, extra: str = "", seeds: bool = True, apps=(Services,)) -> tuple:
    """(core, config path): the seed's security files copied unmodified into tmp_path/policies
    and its istio-configuration.yml (with `service-auth`) as a routing file, plus `extra`
    documents in policies."""
    folder = tmp_path / "policies"
    folder.mkdir(exist_ok=True)
    if seeds:
        for name in SEED_FILES:
            shutil.copy(os.path.join(DATA, "seed-mesh", name), folder / name)
        shutil.copy(os.path.join(DATA, "seed-routing", "istio-configuration.yml"), tmp_path)
    if extra:
        (folder / "zz-extra.yaml").write_text(textwrap.dedent(extra))
    routing = f"routing: [{tmp_path / 'istio-configuration.yml'}]\n" if seeds else ""
    (tmp_path / "lab.yaml").write_text(ENDPOINTS + f"policies: [{folder}]\n" + routing)
    core = Core()
    for app in apps:
        core.add_app(app)
    return core, str(tmp_path / "lab.yaml")


def settings(tmp_path, extra: str = "", seeds: bool = True):
    core, path = lab(tmp_path, extra, seeds)
    return core.parse(load_config(path)).apps["services"]


def listener_of(s, name: str) -> dict:
    x = next(x for x in s.plan.listeners if x.name == name)
    return envoy.listener(x, s.plan.tls)


# --- an independent reading of Envoy's RBAC matchers (config.rbac.v3) -------------------------


def _string(m: dict, value: str | None) -> bool:
    if value is None:
        return False
    if "exact" in m:
        return value == m["exact"]
    if "prefix" in m:
        return value.startswith(m["prefix"])
    if "suffix" in m:
        return value.endswith(m["suffix"])
    return re.fullmatch(m["safe_regex"]["regex"], value) is not None


def _principal(p: dict, req: dict) -> bool:
    if p.get("any"):
        return True
    if "and_ids" in p:
        return all(_principal(x, req) for x in p["and_ids"]["ids"])
    if "or_ids" in p:
        return any(_principal(x, req) for x in p["or_ids"]["ids"])
    if "not_id" in p:
        return not _principal(p["not_id"], req)
    if "authenticated" in p:
        uri = req.get("spiffe")
        return _string(p["authenticated"]["principal_name"], uri)
    net = p["direct_remote_ip"]
    prefix = ipaddress.ip_network(f"{net['address_prefix']}/{net['prefix_len']}")
    return ipaddress.ip_address(req["ip"]) in prefix


def _permission(p: dict, req: dict) -> bool:
    if p.get("any"):
        return True
    if "and_rules" in p:
        return all(_permission(x, req) for x in p["and_rules"]["rules"])
    if "or_rules" in p:
        return any(_permission(x, req) for x in p["or_rules"]["rules"])
    if "not_rule" in p:
        return not _permission(p["not_rule"], req)
    if "header" in p:
        name = p["header"]["name"]
        value = req["method"] if name == ":method" else req.get("headers", {}).get(name)
        return _string(p["header"]["string_match"], value)
    return _string(p["url_path"]["path"], req["path"].split("?", 1)[0])


def decide(listener: dict, **req) -> int:
    """The status Envoy's RBAC filters give a request: 403 or 200 (reached the router)."""
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    for f in hcm["http_filters"]:
        if "rbac" not in f["name"]:
            continue
        rules = f["typed_config"]["rules"]
        matched = any(
            any(_permission(x, req) for x in pol["permissions"])
            and any(_principal(x, req) for x in pol["principals"])
            for pol in rules.get("policies", {}).values()
        )
        if matched == (rules["action"] == "DENY"):
            return 403
    return 200


def web(**kw) -> dict:
    return {"spiffe": "spiffe://cluster.local/ns/production/sa/web-service", "ip": "10.0.1.1", **kw}


def mobile(**kw) -> dict:
    return {
        "spiffe": "spiffe://cluster.local/ns/production/sa/mobile-service",
        "ip": "10.0.1.2",
        **kw,
    }


# --- the seed's policies ------------------------------------------------------------------------


def test_the_seeds_policies_waypoint_the_services_they_select_and_envoy_accepts_them(tmp_path):
    s = settings(tmp_path)
    by_name = {x.name: x for x in s.plan.listeners}
    assert set(by_name) == {"api", "backend-svc"}  # plain-svc: no policy, PERMISSIVE: switches
    assert {x.name: x.method for x in s.services}["plain-svc"] != WAYPOINT
    api, backend = by_name["api"], by_name["backend-svc"]
    assert api.mtls == "STRICT" and backend.mtls == "PERMISSIVE"
    assert [r.name for r in api.allow] == [
        "production.allow-authenticated[0]",
        "production.api-access-policy[0]",
    ]
    assert [r.name for r in backend.allow] == ["default.service-auth[0]"]
    assert api.deny == () == backend.deny
    assert envoy.check(s.plan) is None  # Envoy itself: RBAC, TLS and certificates


def test_the_seeds_rules_allow_what_they_name_and_refuse_the_rest(tmp_path):
    api = listener_of(settings(tmp_path), "api")
    # allow-authenticated: web-service, GET or POST, any path
    assert decide(api, **web(method="GET", path="/anything")) == 200
    assert decide(api, **web(method="POST", path="/api/v1/users")) == 200
    assert decide(api, **web(method="DELETE", path="/api/v1/users")) == 403
    # api-access-policy: mobile-service too, but only /api/v1/*, and not from 192.168/16
    assert decide(api, **mobile(method="GET", path="/api/v1/users?id=3")) == 200
    assert decide(api, **mobile(method="GET", path="/api/v2/users")) == 403
    assert decide(api, **mobile(method="GET", path="/api/v1/x", ip="192.168.4.4")) == 403
    assert decide(api, **mobile(method="PUT", path="/api/v1/x")) == 403
    # no principal (no client certificate), or another one
    assert decide(api, ip="10.0.1.4", method="GET", path="/api/v1/x") == 403
    other = "spiffe://cluster.local/ns/default/sa/frontend"
    assert decide(api, spiffe=other, ip="10.0.1.3", method="GET", path="/api/v1/x") == 403
    backend = listener_of(settings(tmp_path), "backend-svc")  # service-auth: frontend, GET
    assert decide(backend, spiffe=other, ip="10.0.1.3", method="GET", path="/api/v1/a") == 200
    assert decide(backend, spiffe=other, ip="10.0.1.3", method="POST", path="/api/v1/a") == 403
    assert decide(backend, **web(method="GET", path="/api/v1/a")) == 403


def test_deny_comes_first_then_any_allow_policy(tmp_path):
    deny = """\
    apiVersion: security.istio.io/v1
    kind: AuthorizationPolicy
    metadata: {name: no-admin, namespace: production}
    spec:
      action: DENY
      selector: {matchLabels: {app: api-server}}
      rules:
        - to: [{operation: {paths: ["/api/v1/admin*", "*.bak"]}}]
        - from: [{source: {ipBlocks: ["10.0.9.0/24"]}}]
    """
    api = listener_of(settings(tmp_path, deny), "api")
    names = [
        f["name"] for f in api["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
    ]
    assert names == [
        "envoy.filters.http.rbac.deny",
        "envoy.filters.http.rbac.allow",
        "envoy.filters.http.router",
    ]
    assert decide(api, **web(method="GET", path="/api/v1/users")) == 200
    assert decide(api, **web(method="GET", path="/api/v1/admin/keys")) == 403  # allowed, denied
    assert decide(api, **web(method="GET", path="/db.bak")) == 403
    assert decide(api, **web(method="GET", path="/x", ip="10.0.9.7")) == 403


def test_a_workload_with_only_deny_policies_allows_the_rest_and_allow_nothing_denies_all(
    tmp_path,
):
    docs = """\
    apiVersion: security.istio.io/v1
    kind: AuthorizationPolicy
    metadata: {name: deny-delete}
    spec:
      action: DENY
      selector: {matchLabels: {app: plain}}
      rules: [{to: [{operation: {methods: [DELETE]}}]}]
    ---
    apiVersion: security.istio.io/v1
    kind: AuthorizationPolicy
    metadata: {name: allow-nothing}
    spec: {selector: {matchLabels: {app: backend-api}}}
    """
    s = settings(tmp_path, docs, seeds=False)
    plain = listener_of(s, "plain-svc")
    assert decide(plain, ip="10.0.1.4", method="GET", path="/") == 200  # no principal needed
    assert decide(plain, ip="10.0.1.4", method="DELETE", path="/") == 403
    backend = listener_of(s, "backend-svc")
    assert decide(backend, **web(method="GET", path="/")) == 403
    assert envoy.check(s.plan) is None


def test_namespaces_ports_headers_and_istio_wildcards(tmp_path):
    doc = """\
    apiVersion: security.istio.io/v1
    kind: AuthorizationPolicy
    metadata: {name: mixed}
    spec:
      selector: {matchLabels: {app: plain}}
      rules:
        - from: [{source: {namespaces: ["prod*"], notPrincipals: ["*/sa/mobile-service"]}}]
          to: [{operation: {methods: ["GET"], notPaths: ["/private*"]}}]
          when: [{key: "request.headers[X-Team]", values: ["blue", "gr*"]}]
        - to: [{operation: {ports: ["9090"]}}]     # not this service's port: left out
        - when: [{key: destination.port, values: ["80"]}, {key: source.ip, values: ["10.0.1.3"]}]
    """
    s = settings(tmp_path, doc, seeds=False)
    x = next(x for x in s.plan.listeners if x.name == "plain-svc")
    assert [r.name for r in x.allow] == ["default.mixed[0]", "default.mixed[2]"]
    plain = envoy.listener(x, s.plan.tls)
    blue = {"x-team": "blue"}
    assert decide(plain, **web(method="GET", path="/a", headers=blue)) == 200
    assert decide(plain, **web(method="GET", path="/a", headers={"x-team": "green"})) == 200
    assert decide(plain, **web(method="GET", path="/a", headers={"x-team": "red"})) == 403
    assert decide(plain, **web(method="GET", path="/a")) == 403  # header absent
    assert decide(plain, **web(method="GET", path="/private/1", headers=blue)) == 403
    assert decide(plain, **mobile(method="GET", path="/a", headers=blue)) == 403
    assert decide(plain, ip="10.0.1.3", method="DELETE", path="/z") == 200  # rule 2: by address
    assert envoy.check(s.plan) is None


def test_what_the_waypoint_cannot_judge_is_refused_at_its_line(tmp_path):
    doc = """\
    apiVersion: security.istio.io/v1
    kind: AuthorizationPolicy
    metadata: {name: jwt}
    spec:
      rules:
        - from: [{source: {requestPrincipals: ["*"]}}]
    """
    with pytest.raises(ConfigError, match=r"zz-extra.yaml:6.*requestPrincipals.*JWT"):
        settings(tmp_path, doc, seeds=False)
    bad_key = doc.replace(
        '- from: [{source: {requestPrincipals: ["*"]}}]',
        '- when: [{key: "request.auth.claims[iss]", values: [x]}]',
    )
    with pytest.raises(ConfigError, match=r"request.auth.claims\[iss\].*judges"):
        settings(tmp_path, bad_key, seeds=False)


# --- PeerAuthentication ------------------------------------------------------------------------


def test_peer_authentication_workload_beats_namespace_beats_mesh(tmp_path):
    docs = """\
    apiVersion: security.istio.io/v1
    kind: PeerAuthentication
    metadata: {name: mesh, namespace: istio-system}
    spec: {mtls: {mode: STRICT}}
    ---
    apiVersion: security.istio.io/v1
    kind: PeerAuthentication
    metadata: {name: ns, namespace: production}
    spec: {mtls: {mode: DISABLE}}
    ---
    apiVersion: security.istio.io/v1
    kind: PeerAuthentication
    metadata: {name: plain-port, namespace: default}
    spec:
      selector: {matchLabels: {app: plain}}
      mtls: {mode: UNSET}
      portLevelMtls: {"80": {mode: PERMISSIVE}}
    """
    s = settings(tmp_path, docs, seeds=False)
    modes = {x.name: x.mtls for x in s.plan.listeners}
    # backend: the mesh's STRICT; plain: its port's PERMISSIVE (a service without policy or
    # STRICT needs no waypoint, so it stays on the switches); api: production's DISABLE
    assert modes == {"backend-svc": "STRICT"}
    strict = envoy.listener(next(iter(s.plan.listeners)), s.plan.tls)
    [chain] = strict["filter_chains"]
    context = chain["transport_socket"]["typed_config"]
    assert context["require_client_certificate"] is True
    assert "listener_filters" not in strict


def test_listener_chains_per_mode(tmp_path):
    s = settings(tmp_path)
    api, backend = (listener_of(s, n) for n in ("api", "backend-svc"))
    assert len(api["filter_chains"]) == 1 and "transport_socket" in api["filter_chains"][0]
    tls, plain = backend["filter_chains"]  # PERMISSIVE: TLS or plain text, by inspection
    assert tls["filter_chain_match"] == {"transport_protocol": "tls"}
    assert plain["filter_chain_match"] == {"transport_protocol": "raw_buffer"}
    assert "transport_socket" not in plain
    assert backend["listener_filters"][0]["name"] == "envoy.filters.listener.tls_inspector"


# --- the lab CA ---------------------------------------------------------------------------------


def _san(path: str) -> list:
    with open(path, "rb") as fh:
        cert = x509.load_pem_x509_certificate(fh.read())
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def test_every_endpoint_gets_a_spiffe_certificate_written_when_applied(tmp_path):
    core, path = lab(tmp_path)
    certs = tmp_path / "mesh-certs"
    settings_ = core.parse(load_config(path))
    assert not certs.exists()  # parsing (and --check) writes nothing
    core.apply(settings_, 0.0)
    uris = {
        name: [str(v.value) for v in _san(str(certs / name / "cert.pem"))]
        for name in ("web", "front", "nobody", "api-1")
    }
    assert uris == {
        "web": ["spiffe://cluster.local/ns/production/sa/web-service"],
        "front": ["spiffe://cluster.local/ns/default/sa/frontend"],
        "nobody": ["spiffe://cluster.local/ns/default/sa/default"],
        "api-1": ["spiffe://cluster.local/ns/production/sa/default"],
    }
    assert stat.S_IMODE(os.stat(certs / "web" / "key.pem").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(certs / ".ca-key.pem").st_mode) == 0o600
    for name in ("web", ".waypoint"):
        run = subprocess.run(
            ["openssl", "verify", "-CAfile", str(certs / "ca.pem"), str(certs / name / "cert.pem")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert run.returncode == 0, run.stdout + run.stderr
    waypoint = _san(str(certs / ".waypoint" / "cert.pem"))
    assert x509.IPAddress(ipaddress.ip_address("10.0.100.20")) in waypoint
    assert x509.DNSName("api") in waypoint


def test_the_ca_and_unchanged_certificates_survive_a_reload_and_a_restart(tmp_path):
    core, path = lab(tmp_path)
    core.configure(load_config(path), 0.0)
    certs = tmp_path / "mesh-certs"
    before = {n: (certs / n / "cert.pem").read_text() for n in ("web", "front")}
    ca = (certs / "ca.pem").read_text()
    text = (tmp_path / "lab.yaml").read_text().replace("sa: frontend", "sa: frontend")
    (tmp_path / "lab.yaml").write_text(
        text.replace("service_account: frontend", "service_account: frontend-v2")
    )
    core.configure(load_config(path), 1.0)  # a reload: one account changed
    assert (certs / "web" / "cert.pem").read_text() == before["web"]
    assert (certs / "front" / "cert.pem").read_text() != before["front"]
    assert str(_san(str(certs / "front" / "cert.pem"))[0].value).endswith("/sa/frontend-v2")
    restarted, _ = lab(tmp_path, seeds=False)  # a new controller on the same folder
    restarted.configure(load_config(path), 0.0)
    assert (certs / "ca.pem").read_text() == ca
    assert (certs / "web" / "cert.pem").read_text() == before["web"]
    assert MeshCA.open(str(certs)).new is False


def test_an_endpoint_name_that_cannot_be_a_folder_is_refused(tmp_path):
    core, path = lab(tmp_path)
    text = (tmp_path / "lab.yaml").read_text().replace("name: nobody", "name: ../nobody")
    (tmp_path / "lab.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"lab.yaml:5.*'\.\./nobody' cannot name"):
        core.parse(load_config(path))


# --- the shared `policies` section -------------------------------------------------------------


NETPOL = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: production}
spec: {podSelector: {}, policyTypes: [Ingress]}
"""


def test_microseg_and_services_share_policies_each_reading_its_own_kinds(tmp_path, caplog):
    core, path = lab(tmp_path, NETPOL, apps=(Microseg, Services))
    parsed = core.parse(load_config(path)).apps
    assert [p.name for p in parsed["microseg"].policies] == ["deny-all"]
    assert {x.name for x in parsed["services"].plan.listeners} == {"api", "backend-svc"}
    assert "not loaded" not in caplog.text


def test_a_kind_of_an_app_not_loaded_is_named_and_an_unknown_kind_refused(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="osken_suite.config")
    core, path = lab(tmp_path, NETPOL, apps=(Microseg,))
    core.parse(load_config(path))
    assert "AuthorizationPolicy api-access-policy is enforced by apps.services, which is not" in (
        caplog.text
    )
    core, path = lab(tmp_path, NETPOL, apps=(Services,))
    core.parse(load_config(path))
    assert "NetworkPolicy deny-all is enforced by apps.microseg, which is not loaded" in caplog.text
    unknown = NETPOL.replace("kind: NetworkPolicy", "kind: ClusterNetworkPolicy")
    core, path = lab(tmp_path, unknown, apps=(Services,))
    with pytest.raises(ConfigError, match="'ClusterNetworkPolicy' is not a policy kind"):
        core.parse(load_config(path))
