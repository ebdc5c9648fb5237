"""An EnvoyFilter cannot take out the filters that enforce security at the waypoint, nor bring
code for it to run (Lua's os.execute ran commands as root in its Envoy). Before,
REMOVE or REPLACE with `subFilter: envoy.filters.http.rbac.deny` (or `.allow`, or the
CiliumNetworkPolicy's `.cilium`) dropped an AuthorizationPolicy from the chain, silently,
though a security policy is never to be half enforced (docs/services.md)."""

import json
import logging

import pytest

from tests.unit.test_envoyfilter import _filters, _settings
from tests.unit.test_waypoint import fake_runner  # noqa: F401  (autouse: no real Envoy)

DENY_AND_PATCH = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: no-admin, namespace: default}}
spec:
  selector: {{matchLabels: {{app: api-gateway}}}}
  action: DENY
  rules: [{{to: [{{operation: {{paths: [/admin*]}}}}]}}]
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {{name: sneaky}}
spec:
  workloadSelector: {{labels: {{app: api-gateway}}}}
  configPatches:
    - applyTo: HTTP_FILTER
      match:
        listener:
          filterChain:
            filter:
              name: envoy.filters.network.http_connection_manager
              subFilter: {{name: {name}}}
      patch:
        operation: {operation}
        value:
          name: envoy.filters.http.cors
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors
"""


@pytest.mark.parametrize("operation", ["REMOVE", "REPLACE"])
@pytest.mark.parametrize("name", ["envoy.filters.http.rbac.deny", "envoy.filters.http.rbac.allow"])
def test_a_patch_cannot_remove_or_replace_the_authorization_filters(
    tmp_path, caplog, operation, name
):
    extra = DENY_AND_PATCH.format(name=name, operation=operation)
    with caplog.at_level(logging.WARNING):
        s = _settings(tmp_path, extra=extra)
    names = [f["name"] for f in _filters(s)]
    assert "envoy.filters.http.rbac.deny" in names
    assert "envoy.filters.http.cors" not in names
    said = [r.getMessage() for r in caplog.records if "sneaky" in r.getMessage()]
    assert any(f"{tmp_path}/extra.yaml:" in m and name in m for m in said), said


CODE = """\
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {{name: runs-code}}
spec:
  workloadSelector: {{labels: {{app: api-gateway}}}}
  configPatches:
    - applyTo: HTTP_FILTER
      match: {{listener: {{filterChain: {{filter: {{name: {hcm}}}}}}}}}
      patch:
        operation: INSERT_FIRST
        value: {value}
"""
HCM = "envoy.filters.network.http_connection_manager"
LUA = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"
WASM = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
STRUCT = "type.googleapis.com/udpa.type.v1.TypedStruct"
RUN = 'function envoy_on_request(h) os.execute("id > /tmp/x") end'


@pytest.mark.parametrize(
    "value",
    [
        # Envoy's Lua has os.execute: measured, it ran `id` as root in the waypoint's Envoy
        {
            "name": "x",
            "typed_config": {"@type": LUA, "default_source_code": {"inline_string": RUN}},
        },
        # the same through a TypedStruct, under any filter name
        {"name": "envoy.filters.http.cors", "typed_config": {"@type": STRUCT, "type_url": LUA}},
        {"name": "x", "typed_config": {"@type": WASM}},
        {
            "name": "x",
            "config_discovery": {"config_source": {"path_config_source": {"path": "/x"}}},
        },
    ],
)
def test_a_patch_that_brings_code_is_refused_by_name(tmp_path, caplog, value):
    with caplog.at_level(logging.WARNING):
        s = _settings(tmp_path, extra=CODE.format(hcm=HCM, value=json.dumps(value)))
    names = [f["name"] for f in _filters(s)]
    assert names == ["envoy.filters.http.local_ratelimit", "envoy.filters.http.router"]
    said = [r.getMessage() for r in caplog.records if "runs-code" in r.getMessage()]
    assert any(f"{tmp_path}/extra.yaml:" in m and "patch not applied" in m for m in said), said
