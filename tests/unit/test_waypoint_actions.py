"""HTTP actions at the waypoint (issue 15): Istio `timeout`, `retries`, `fault`, `mirror` (with
`mirrorPercentage`), `headers` and `rewrite`, and Gateway API HTTPRoute filters, compiled to
Envoy routes that `envoy --mode validate` accepts; what Envoy cannot do here stays refused by
name; without a waypoint every action is rejected by name as before."""

from __future__ import annotations

import logging

from tests.unit.test_waypoint import (
    IP,
    MESH,
    V2A,
    config,
    fake_runner,  # noqa: F401  (autouse: no real Envoy)
    settings_of,
)
from vnf.waypoint import envoy

SUBSETS = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: user-service}
spec:
  host: user-service
  subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
---
"""
ISTIO = (
    SUBSETS
    + """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: user-service}
spec:
  hosts: [user-service]
  http:
    - match: [{uri: {prefix: /api/}}]
      timeout: 1.5s
      retries: {attempts: 3, perTryTimeout: 500ms, retryOn: "5xx,connect-failure,503"}
      fault:
        delay: {fixedDelay: 1s, percentage: {value: 50}}
        abort: {httpStatus: 418, percentage: {value: 10}}
      mirror: {host: user-service, subset: v2}
      mirrorPercentage: {value: 25}
      headers:
        request: {set: {X-Env: lab}, add: {X-Trace: "1"}, remove: [Cookie]}
        response: {set: {X-Served-By: waypoint}}
      rewrite: {uri: /v2/, authority: users.internal}
      route: [{destination: {host: user-service, subset: v1}}]
    - route: [{destination: {host: user-service, subset: v1}}]
      timeout: 3s
"""
)


def _routes(s) -> list[dict]:
    listeners, _ = envoy.resources(s.plan)
    hcm = listeners[0]["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm["route_config"]["virtual_hosts"][0]["routes"], hcm["http_filters"]


def _settings(tmp_path, text: str, mesh: str = MESH):
    (tmp_path / "vs.yaml").write_text(text)
    return settings_of(config(tmp_path, ["vs.yaml"], mesh=mesh))


def test_istio_actions_become_the_routes_envoy_fields(tmp_path):
    s = _settings(tmp_path, ISTIO)
    assert envoy.check(s.plan) is None
    (api, rest), filters = _routes(s)
    action = api["route"]
    assert action["timeout"] == "1.5s"
    assert action["retry_policy"] == {
        "num_retries": 3,
        "retry_on": "5xx,connect-failure,retriable-status-codes",
        "retriable_status_codes": [503],
        "per_try_timeout": "0.5s",
    }
    [mirror] = action["request_mirror_policies"]
    assert mirror["runtime_fraction"] == {
        "default_value": {"numerator": 250_000, "denominator": "MILLION"}
    }
    clusters = {c.name: c for c in s.plan.clusters}
    assert [e.ip for e in clusters[mirror["cluster"]].endpoints] == [IP[V2A]]
    assert action["prefix_rewrite"] == "/v2/" and action["host_rewrite_literal"] == "users.internal"
    assert api["request_headers_to_add"] == [
        {"header": {"key": "x-env", "value": "lab"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
        {"header": {"key": "x-trace", "value": "1"}, "append_action": "APPEND_IF_EXISTS_OR_ADD"},
    ]
    assert api["request_headers_to_remove"] == ["cookie"]
    assert api["response_headers_to_add"][0]["header"] == {
        "key": "x-served-by",
        "value": "waypoint",
    }
    fault = api["typed_per_filter_config"]["envoy.filters.http.fault"]
    assert fault["delay"] == {
        "fixed_delay": "1s",
        "percentage": {"numerator": 500_000, "denominator": "MILLION"},
    }
    assert fault["abort"] == {
        "http_status": 418,
        "percentage": {"numerator": 100_000, "denominator": "MILLION"},
    }
    assert [f["name"] for f in filters] == ["envoy.filters.http.fault", "envoy.filters.http.router"]
    assert rest["route"]["timeout"] == "3s" and "typed_per_filter_config" not in rest


def test_a_rule_with_actions_alone_gets_a_waypoint(tmp_path):
    only = SUBSETS + (
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        "metadata: {name: user-service}\nspec:\n  hosts: [user-service]\n  http:\n"
        "    - route: [{destination: {host: user-service}}]\n      timeout: 2s\n"
    )
    s = _settings(tmp_path, only)
    [service] = s.services
    assert service.method == "waypoint"
    assert _routes(s)[0][0]["route"]["timeout"] == "2s"


def test_what_envoy_cannot_do_here_is_refused_by_name_and_line(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="osken_suite.services")
    text = ISTIO.replace(
        "      timeout: 3s\n",
        "      timeout: 3s\n"
        "    - redirect: {uri: /elsewhere}\n"
        "    - fault: {abort: {grpcStatus: UNAVAILABLE}}\n"
        "      route: [{destination: {host: user-service}}]\n"
        "    - corsPolicy: {allowOrigins: [{exact: x}]}\n"
        "      route: [{destination: {host: user-service}}]\n",
    )
    s = _settings(tmp_path, text)
    assert len(_routes(s)[0]) == 2  # the three refused rules take no traffic
    for line, what in [
        (31, "spec.http.2.redirect: a redirect"),
        (32, "spec.http.3.fault.abort: a gRPC or HTTP/2 abort"),
        (34, "spec.http.4.corsPolicy: a CORS policy"),
    ]:
        assert f"vs.yaml:{line}: {what}; neither a switch nor the waypoint does that" in (
            caplog.text
        ), what


def test_without_a_waypoint_actions_are_rejected_by_name_as_before(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="osken_suite.services")
    s = _settings(tmp_path, ISTIO, mesh="")
    assert s.plan.listeners == ()
    [service] = s.services
    assert service.method != "waypoint" and service.routes == ()
    assert "vs.yaml:30: spec.http.1.timeout: an HTTP action (timeout)" in caplog.text


GATEWAY = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: user-service}
spec:
  parentRefs: [{name: user-service}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /old/}}]
      timeouts: {request: 2s}
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set: [{name: X-Env, value: lab}]
            remove: [X-Debug]
        - type: ResponseHeaderModifier
          responseHeaderModifier: {add: [{name: X-Via, value: waypoint}]}
        - type: RequestMirror
          requestMirror: {backendRef: {name: v2-only, port: 80}, percent: 50}
        - type: URLRewrite
          urlRewrite:
            hostname: users.internal
            path: {type: ReplacePrefixMatch, replacePrefixMatch: /new/}
      backendRefs: [{name: user-service, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /go/}}]
      filters:
        - type: RequestRedirect
          requestRedirect: {hostname: example.com}
      backendRefs: [{name: user-service, port: 80}]
    - matches: [{path: {type: Exact, value: /exact}}]
      filters:
        - type: URLRewrite
          urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /full}}
      backendRefs: [{name: user-service, port: 80}]
"""


def test_gateway_api_filters_become_the_routes_envoy_fields(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="osken_suite.services")
    services = (
        "services:\n"
        "  - {name: user-service, vip: 10.0.100.10, port: 80}\n"
        "  - {name: v2-only, vip: 10.0.100.30, port: 80, backends: [{endpoint: v2-a}]}\n"
    )
    (tmp_path / "route.yaml").write_text(GATEWAY)
    s = settings_of(config(tmp_path, ["route.yaml"], services=services))
    assert envoy.check(s.plan) is None
    exact, old = _routes(s)[0]  # most specific first: the exact path
    assert exact["route"]["regex_rewrite"] == {"pattern": {"regex": ".*"}, "substitution": "/full"}
    action = old["route"]
    assert action["timeout"] == "2s"
    assert (
        action["prefix_rewrite"] == "/new/" and action["host_rewrite_literal"] == "users.internal"
    )
    [mirror] = action["request_mirror_policies"]
    assert mirror["runtime_fraction"]["default_value"]["numerator"] == 500_000
    clusters = {c.name: c for c in s.plan.clusters}
    assert [e.ip for e in clusters[mirror["cluster"]].endpoints] == [IP[V2A]]
    assert old["request_headers_to_add"][0]["header"] == {"key": "x-env", "value": "lab"}
    assert old["request_headers_to_remove"] == ["x-debug"]
    assert old["response_headers_to_add"] == [
        {
            "header": {"key": "x-via", "value": "waypoint"},
            "append_action": "APPEND_IF_EXISTS_OR_ADD",
        }
    ]
    assert "route.yaml:25: spec.rules.1.filters.0.type: an HTTP filter of type RequestRedirect" in (
        caplog.text
    )
