"""CiliumNetworkPolicy L7 rules at the waypoint (issue 15): the seed's `api-l7-policy`, read
unmodified, makes the user-api service's waypoint allow exactly its HTTP rules from its peers
(judged by test_authz's reading of Envoy's RBAC matchers on the generated filter, which Envoy
itself accepts); L7 rules without a service VIP are named as not enforced; microsegmentation
keeps reading the L3/L4 part."""

from __future__ import annotations

import logging
import os
import shutil
import textwrap

from apps.microseg import Microseg
from apps.services import Services
from controller.config import load_config
from controller.core import Core
from tests.unit.test_authz import decide
from tests.unit.test_waypoint import fake_runner  # noqa: F401  (autouse: no real Envoy)
from vnf.waypoint import envoy

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data")
CONFIG = """\
endpoints:
  - {name: api-1, ip: 10.0.5.1, labels: {app: user-api}}
  - {name: front, ip: 10.0.5.2, labels: {app: frontend}}
  - {name: admin, ip: 10.0.5.3, labels: {app: admin-panel}}
  - {name: other, ip: 10.0.5.4, labels: {app: other}}
services:
  - {name: user-api, vip: 10.0.100.40, port: 8080, backends: [{endpoint: api-1}]}
mesh:
  waypoint: {bridge: s1, addresses: [10.0.0.250/8]}
"""
JSON = {"content-type": "application/json"}


def _settings(tmp_path, config: str = CONFIG, apps=(Services,)):
    folder = tmp_path / "policies"
    folder.mkdir(exist_ok=True)
    shutil.copy(os.path.join(DATA, "seed-policies", "l7-policy.yml"), folder)
    (tmp_path / "lab.yaml").write_text(config + f"policies: [{folder}]\n")
    core = Core()
    for app in apps:
        core.add_app(app)
    return core.parse(load_config(str(tmp_path / "lab.yaml"))).apps["services"]


def _listener(s) -> dict:
    [x] = s.plan.listeners
    return envoy.listener(x, s.plan.tls)


def test_the_seeds_l7_policy_allows_its_requests_from_its_peers_and_nothing_else(tmp_path):
    s = _settings(tmp_path)
    [service] = s.services
    assert service.method == "waypoint"
    assert envoy.check(s.plan) is None
    x = _listener(s)
    front, admin, other = "10.0.5.2", "10.0.5.3", "10.0.5.4"
    assert decide(x, ip=front, method="GET", path="/users/42") == 200
    assert decide(x, ip=front, method="GET", path="/users/42?x=1") == 200  # the path alone
    assert decide(x, ip=front, method="GET", path="/users/abc") == 403  # [0-9]+, whole path
    assert decide(x, ip=front, method="GET", path="/users/42/extra") == 403
    assert decide(x, ip=front, method="POST", path="/users", headers=JSON) == 200
    assert decide(x, ip=front, method="POST", path="/users") == 403  # no Content-Type
    assert decide(x, ip=front, method="DELETE", path="/users/42") == 403  # admin's only
    assert decide(x, ip=admin, method="DELETE", path="/users/42") == 200
    assert decide(x, ip=admin, method="GET", path="/users/42") == 403
    assert decide(x, ip=other, method="GET", path="/users/42") == 403  # no rule's peer


def test_a_port_the_rules_are_not_for_gets_no_waypoint(tmp_path):
    s = _settings(tmp_path, CONFIG.replace("port: 8080", "port: 9090"))
    assert s.plan.listeners == () and s.services[0].method != "waypoint"


def test_l7_rules_without_a_service_vip_are_named_as_not_enforced(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    _settings(tmp_path, CONFIG.replace("app: user-api}", "app: nobody}"))
    assert "CiliumNetworkPolicy default/api-l7-policy: its L7 rules select no backend" in (
        caplog.text
    )
    assert "l7-policy.yml:5" in caplog.text


def test_an_l4_only_rule_on_the_port_allows_its_peers_every_request(tmp_path):
    more = textwrap.dedent(
        """\
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata: {name: ops-l4}
        spec:
          endpointSelector: {matchLabels: {app: user-api}}
          ingress:
            - fromEndpoints: [{matchLabels: {app: other}}]
              toPorts: [{ports: [{port: '8080', protocol: TCP}]}]
        """
    )
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "ops.yaml").write_text(more)
    s = _settings(tmp_path)
    x = _listener(s)
    assert decide(x, ip="10.0.5.4", method="PUT", path="/anything") == 200
    assert decide(x, ip="10.0.5.2", method="PUT", path="/anything") == 403


def test_microsegmentation_still_reads_the_l3_l4_part(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    s = _settings(tmp_path, apps=(Services, Microseg))
    assert s.plan.listeners[0].l7_allow is not None
    assert "L7 rules are not enforced here; only the L4 part" in caplog.text


def _extra(tmp_path, text: str) -> None:
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "extra.yaml").write_text(textwrap.dedent(text))


def test_a_cidr_peer_is_a_client_that_is_not_an_endpoint(tmp_path):
    _extra(
        tmp_path,
        """\
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata: {name: outside}
        spec:
          endpointSelector: {matchLabels: {app: user-api}}
          ingress:
            - fromCIDRSet: [{cidr: 10.0.5.0/24, except: [10.0.5.128/25]}]
              toPorts:
                - ports: [{port: '8080', protocol: TCP}]
                  rules: {http: [{method: GET, path: /health}]}
        """,
    )
    x = _listener(_settings(tmp_path))
    assert decide(x, ip="10.0.5.9", method="GET", path="/health") == 200  # not an endpoint
    assert decide(x, ip="10.0.5.4", method="GET", path="/health") == 403  # `other`: one
    assert decide(x, ip="10.0.5.200", method="GET", path="/health") == 403  # except


def test_a_peer_the_waypoint_cannot_judge_leaves_its_rule_out_named(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    _extra(
        tmp_path,
        """\
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata: {name: hosts}
        spec:
          endpointSelector: {matchLabels: {app: user-api}}
          ingress:
            - fromEntities: [host]
              toPorts:
                - ports: [{port: '8080'}]
                  rules: {http: [{method: GET}]}
            - fromEndpoints: [{matchLabels: {app: other}}]
              toPorts:
                - ports: [{port: '8080'}]
                  rules: {http: [{method: GET, headerMatches: [{name: x, value: y}]}]}
        """,
    )
    x = _listener(_settings(tmp_path))
    assert decide(x, ip="10.0.5.4", method="GET", path="/users/1") == 403  # left out: less
    assert "extra.yaml:7: entity host is not enforced by the waypoint" in caplog.text
    assert "extra.yaml:14: headerMatches is not enforced by the waypoint" in caplog.text


def test_without_microsegmentation_its_l3_l4_part_is_named_as_not_enforced(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    _settings(tmp_path)
    assert "its L3/L4 rules are enforced by apps.microseg, which is not loaded" in caplog.text


def test_a_policy_without_http_rules_is_not_the_waypoints_to_talk_about(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="osken_suite.services")
    _extra(
        tmp_path,
        """\
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata: {name: l4-only}
        spec:
          endpointSelector: {matchLabels: {app: other}}
          ingress:
            - fromEntities: [host]
              toPorts: [{ports: [{port: http-alt}]}]
        """,
    )
    _settings(tmp_path)
    assert "not enforced by the waypoint" not in caplog.text
    assert "its L7 rules select no backend" not in caplog.text
