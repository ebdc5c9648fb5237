"""Istio EnvoyFilter at the waypoint (issue 15): the seed's local rate limit read unmodified from
`policies:` or `routing:` files and applied as written to the HTTP filters of the services whose
backends it selects; other HTTP_FILTER patches applied as Istio applies them; what the waypoint
cannot apply refused by name, with file and line. Every config passes `envoy --mode validate`."""

from __future__ import annotations

import json
import logging
import os
import shutil
import textwrap
from pathlib import Path

import pytest
import yaml

from apps.services import Services
from controller.config import ConfigError, load_config
from controller.core import Core
from tests.unit.test_waypoint import fake_runner  # noqa: F401  (autouse: no real Envoy)
from vnf.waypoint import envoy, patches
from vnf.waypoint.model import FilterPatch

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data")
SEED = os.path.join(DATA, "seed-mesh", "rate-limiting.yml")
RATELIMIT = "envoy.filters.http.local_ratelimit"
ROUTER = "envoy.filters.http.router"
CONFIG = """\
endpoints:
  - {name: gw-1, ip: 10.0.2.1, labels: {app: api-gateway}}
  - {name: gw-2, ip: 10.0.2.2, labels: {app: api-gateway}}
  - {name: other, ip: 10.0.3.1, labels: {app: other}}
services:
  - {name: gateway, vip: 10.0.100.20, port: 80, backends: [{endpoint: gw-1}, {endpoint: gw-2}]}
  - {name: plain, vip: 10.0.100.21, port: 80, backends: [{endpoint: other}]}
mesh:
  waypoint: {bridge: s1, addresses: [10.0.0.250/8]}
"""


def _settings(tmp_path, section: str = "policies", extra: str = ""):
    """The services settings with the seed's rate-limiting.yml (unmodified) in `section` and
    `extra` documents in a file beside it."""
    shutil.copy(SEED, tmp_path / "rate-limiting.yml")
    files = [str(tmp_path / "rate-limiting.yml")]
    if extra:
        (tmp_path / "extra.yaml").write_text(textwrap.dedent(extra))
        files.append(str(tmp_path / "extra.yaml"))
    (tmp_path / "lab.yaml").write_text(CONFIG + f"{section}: {json.dumps(files)}\n")
    core = Core()
    core.add_app(Services)
    return core.parse(load_config(str(tmp_path / "lab.yaml"))).apps["services"]


def _filters(s, name: str = "gateway") -> list[dict]:
    x = next(x for x in s.plan.listeners if x.name == name)
    hcm = envoy.listener(x, s.plan.tls)["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm["http_filters"]


@pytest.mark.parametrize("section", ["policies", "routing"])
def test_the_seeds_rate_limit_goes_first_in_the_selected_services_chain_as_written(
    tmp_path, section
):
    s = _settings(tmp_path, section)
    assert [x.name for x in s.plan.listeners] == ["gateway"]  # `plain` keeps the switches' path
    [service] = [x for x in s.services if x.name == "gateway"]
    assert service.method == "waypoint"
    seed = yaml.safe_load(Path(SEED).read_text())["spec"]["configPatches"][0]["patch"]["value"]
    first, router = _filters(s)
    assert first == seed  # unmodified: the token bucket of 100, 10 per 60 s
    assert first["typed_config"]["value"]["token_bucket"] == {
        "max_tokens": 100,
        "tokens_per_fill": 10,
        "fill_interval": "60s",
    }
    assert router["name"] == ROUTER
    assert envoy.check(s.plan) is None


def test_an_envoy_filter_that_selects_no_service_backend_is_named_as_not_enforced(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="osken_suite.services")
    other = Path(SEED).read_text().replace("rate-limit-filter", "other-filter")
    other = other.replace("app: api-gateway", "app: nowhere")
    s = _settings(tmp_path, extra=other)
    assert len(_filters(s)) == 2
    assert "EnvoyFilter default/other-filter is not enforced" in caplog.text
    assert "extra.yaml:4" in caplog.text  # its metadata.name


MUTATION = "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"
CORS = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"
REFUSED = f"""\
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {{name: mixed}}
spec:
  workloadSelector: {{labels: {{app: api-gateway}}}}
  configPatches:
    - applyTo: CLUSTER
      patch: {{operation: MERGE, value: {{connect_timeout: 1s}}}}
    - applyTo: HTTP_FILTER
      match: {{context: SIDECAR_OUTBOUND}}
      patch: {{operation: INSERT_FIRST, value: {{name: a}}}}
    - applyTo: HTTP_FILTER
      match: {{proxy: {{proxyVersion: '^1\\.2.*'}}}}
      patch: {{operation: INSERT_FIRST, value: {{name: b}}}}
    - applyTo: HTTP_FILTER
      match:
        listener: {{filterChain: {{filter: {{name: envoy.filters.network.tcp_proxy}}}}}}
      patch: {{operation: INSERT_FIRST, value: {{name: c}}}}
    - applyTo: HTTP_FILTER
      patch: {{operation: REMOVE}}
    - applyTo: HTTP_FILTER
      match: {{listener: {{portNumber: 9999}}}}
      patch:
        operation: INSERT_FIRST
        value:
          name: envoy.filters.http.cors
          typed_config:
            '@type': {CORS}
    - applyTo: HTTP_FILTER
      match:
        context: SIDECAR_INBOUND
        listener:
          portNumber: 80
          filterChain:
            filter:
              name: envoy.filters.network.http_connection_manager
              subFilter: {{name: envoy.filters.http.router}}
      patch:
        operation: INSERT_BEFORE
        value:
          name: envoy.filters.http.header_mutation
          typed_config:
            '@type': {MUTATION}
            mutations:
              response_mutations:
                - append: {{header: {{key: x-waypoint, value: seen}}}}
"""


def test_patches_the_waypoint_cannot_apply_are_refused_by_name_and_line_the_rest_applies(
    tmp_path, caplog
):
    caplog.set_level(logging.WARNING, logger="osken_suite.services")
    s = _settings(tmp_path, extra=REFUSED)
    names = [f["name"] for f in _filters(s)]
    # the seed's first (INSERT_BEFORE without subFilter), the header mutation before the router;
    # the patch for port 9999 is not for this listener
    assert names == [RATELIMIT, "envoy.filters.http.header_mutation", ROUTER]
    assert envoy.check(s.plan) is None
    for line, why in [
        (7, "applyTo CLUSTER"),
        (10, "context SIDECAR_OUTBOUND"),
        (13, "match.proxy"),
        (17, "filter envoy.filters.network.tcp_proxy"),
        (20, "REMOVE needs match...subFilter.name"),
    ]:
        assert f"extra.yaml:{line}: EnvoyFilter default/mixed: patch not applied: {why}" in (
            caplog.text
        ), why


def test_a_patch_envoy_refuses_is_refused_before_anything_applies(tmp_path):
    bad = """\
    apiVersion: networking.istio.io/v1alpha3
    kind: EnvoyFilter
    metadata: {name: after-router}
    spec:
      workloadSelector: {labels: {app: api-gateway}}
      configPatches:
        - applyTo: HTTP_FILTER
          patch:
            operation: ADD
            value:
              name: envoy.filters.http.cors
              typed_config:
                '@type': type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors
    """
    with pytest.raises(ConfigError, match="Envoy refuses the waypoint's config") as err:
        _settings(tmp_path, extra=bad)
    assert "mesh.waypoint" in str(err.value)


def test_a_misspelled_filter_value_is_refused_by_envoys_own_check(tmp_path):
    seed = Path(SEED).read_text().replace("max_tokens: 100", "max_tokenz: 100")
    (tmp_path / "typo.yaml").write_text(seed)
    with pytest.raises(ConfigError, match="max_tokenz"):
        _settings(tmp_path, extra=seed.replace("rate-limit-filter", "typo"))


def _chain(*names: str) -> list[dict]:
    return [{"name": n} for n in names]


@pytest.mark.parametrize(
    "operation, sub, want",
    [
        ("ADD", None, ["deny", "allow", "router", "new"]),
        ("INSERT_FIRST", "router", ["new", "deny", "allow", "router"]),
        ("INSERT_BEFORE", None, ["new", "deny", "allow", "router"]),
        ("INSERT_BEFORE", "router", ["deny", "allow", "new", "router"]),
        ("INSERT_AFTER", "deny", ["deny", "new", "allow", "router"]),
        ("INSERT_AFTER", None, ["deny", "allow", "router", "new"]),
        ("INSERT_BEFORE", "missing", ["deny", "allow", "router"]),
        ("REPLACE", "allow", ["deny", "new", "router"]),
        ("REMOVE", "deny", ["allow", "router"]),
    ],
)
def test_patch_operations_act_on_the_chain_as_istio_applies_them(operation, sub, want):
    value = "" if operation == "REMOVE" else json.dumps({"name": "new"})
    chain = _chain("deny", "allow", "router")
    got = patches.apply(chain, (FilterPatch(operation, sub, value, "here"),))
    assert [f["name"] for f in got] == want
    assert [f["name"] for f in chain] == ["deny", "allow", "router"]  # untouched


def test_lower_priority_applies_first_root_namespace_first_at_a_tie(tmp_path):
    def first(name: str, namespace: str, priority: int, header: str) -> str:
        return textwrap.dedent(
            f"""\
            apiVersion: networking.istio.io/v1alpha3
            kind: EnvoyFilter
            metadata: {{name: {name}, namespace: {namespace}}}
            spec:
              priority: {priority}
              configPatches:
                - applyTo: HTTP_FILTER
                  patch:
                    operation: INSERT_FIRST
                    value: {{name: {header}, typed_config: {{'@type': {CORS}}}}}
            """
        )

    docs = "---\n".join(
        [
            first("late", "default", 5, "p5"),
            first("mesh", "istio-system", 0, "root0"),
            first("local", "default", 0, "default0"),
        ]
    )
    s = _settings(tmp_path, extra=docs)
    # each goes in front of those applied before it: root0, the seed's (its file is listed
    # first), default0, then p5
    assert [f["name"] for f in _filters(s)][:4] == ["p5", "default0", RATELIMIT, "root0"]


def test_an_envoy_filter_aimed_by_target_refs_applies_nothing_rather_than_everywhere(
    tmp_path, caplog
):
    caplog.set_level(logging.WARNING, logger="osken_suite.services")
    aimed = Path(SEED).read_text().replace("rate-limit-filter", "aimed")
    aimed = aimed.replace(
        "  workloadSelector:\n    labels:\n      app: api-gateway\n",
        "  targetRefs: [{kind: Service, name: gateway}]\n",
    )
    assert "targetRefs" in aimed
    s = _settings(tmp_path, extra=aimed)
    assert [f["name"] for f in _filters(s)] == [RATELIMIT, ROUTER]  # the seed's only
    assert "extra.yaml:6: EnvoyFilter default/aimed: spec.targetRefs is not applied" in (
        caplog.text
    )
