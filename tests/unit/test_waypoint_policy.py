"""DestinationRule trafficPolicy at the waypoint (issue 15): connection pools become the Envoy
cluster's circuit breakers and connection settings, outlier detection Envoy's, for the
clusters of the host and subset they govern; every generated config passes `envoy --mode
validate`."""

from __future__ import annotations

import textwrap

from tests.unit.test_waypoint import (
    IP,
    V1A,
    V1B,
    V2A,
    VIP,
    config,
    fake_runner,  # noqa: F401  (autouse: no real Envoy)
    settings_of,
)
from vnf.waypoint import envoy
from vnf.waypoint.model import Ejection, Limits

ROUTE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: user-service}
spec:
  hosts: [user-service]
  http:
    - match: [{headers: {canary: {exact: "true"}}}]
      route: [{destination: {host: user-service, subset: v2}}]
    - route:
        - {destination: {host: user-service, subset: v1}, weight: 90}
        - {destination: {host: user-service, subset: v2}, weight: 10}
"""
FULL = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: user-service}
spec:
  host: user-service
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 7, connectTimeout: 250ms}
      http:
        http1MaxPendingRequests: 3
        http2MaxRequests: 40
        maxRequestsPerConnection: 5
        maxRetries: 2
        idleTimeout: 1m
    outlierDetection:
      consecutive5xxErrors: 0
      consecutiveGatewayErrors: 4
      consecutiveLocalOriginFailures: 6
      splitExternalLocalOriginErrors: true
      interval: 5s
      baseEjectionTime: 45s
      maxEjectionPercent: 50
      minHealthPercent: 20
  subsets:
    - {name: v1, labels: {version: v1}}
    - name: v2
      labels: {version: v2}
      trafficPolicy:
        connectionPool: {tcp: {maxConnections: 1}}
"""


def _plan(tmp_path, files: dict[str, str]):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    s = settings_of(config(tmp_path, list(files)))
    return s.plan, {c.name: c for c in s.plan.clusters}


def _routes(plan) -> list[dict]:
    listeners, _ = envoy.resources(plan)
    hcm = listeners[0]["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm["route_config"]["virtual_hosts"][0]["routes"]


def test_the_seeds_pool_and_circuit_breaker_limit_every_cluster_of_its_host(tmp_path):
    s = settings_of(config(tmp_path, ["traffic-routing.yml"]))
    want_limits = Limits(max_connections=10, max_pending_requests=10, max_requests_per_connection=2)
    want_ejection = Ejection(consecutive_5xx=3, interval=30.0, base_ejection_time=30.0)
    assert [(c.limits, c.ejection) for c in s.plan.clusters] == [
        (want_limits, want_ejection)
    ] * len(s.plan.clusters)
    assert envoy.check(s.plan) is None
    _, clusters = envoy.resources(s.plan)
    c = clusters[-1]
    assert c["circuit_breakers"] == {
        "thresholds": [{"priority": "DEFAULT", "max_connections": 10, "max_pending_requests": 10}]
    }
    options = c["typed_extension_protocol_options"]
    http = options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert http["common_http_protocol_options"] == {"max_requests_per_connection": 2}
    assert c["outlier_detection"] == {
        "consecutive_5xx": 3,
        "enforcing_consecutive_5xx": 100,
        "interval": "30s",
        "base_ejection_time": "30s",
        "max_ejection_percent": 10,
        "enforcing_success_rate": 0,
        "always_eject_one_host": True,  # else 10% of 3 hosts ejects none (Envoy measured)
    }
    assert c["common_lb_config"] == {"healthy_panic_threshold": {"value": 0}}


def test_every_pool_and_outlier_field_reaches_envoy(tmp_path):
    top = FULL.replace(
        "    - name: v2\n      labels: {version: v2}\n      trafficPolicy:\n"
        "        connectionPool: {tcp: {maxConnections: 1}}\n",
        "    - {name: v2, labels: {version: v2}}\n",
    )
    plan, _ = _plan(tmp_path, {"route.yaml": ROUTE, "rule.yaml": top})
    assert envoy.check(plan) is None
    _, clusters = envoy.resources(plan)
    c = clusters[0]
    assert c["connect_timeout"] == "0.25s"
    assert c["circuit_breakers"]["thresholds"] == [
        {
            "priority": "DEFAULT",
            "max_connections": 7,
            "max_pending_requests": 3,
            "max_requests": 40,
            "max_retries": 2,
        }
    ]
    http = c["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert http["common_http_protocol_options"] == {
        "idle_timeout": "60s",
        "max_requests_per_connection": 5,
    }
    assert c["outlier_detection"] == {
        "consecutive_5xx": 0,
        "enforcing_consecutive_5xx": 0,  # 0 turns 5xx ejection off, as in Istio
        "consecutive_gateway_failure": 4,
        "enforcing_consecutive_gateway_failure": 100,
        "consecutive_local_origin_failure": 6,
        "enforcing_consecutive_local_origin_failure": 100,
        "split_external_local_origin_errors": True,
        "interval": "5s",
        "base_ejection_time": "45s",
        "max_ejection_percent": 50,
        "enforcing_success_rate": 0,
        "always_eject_one_host": True,
    }
    assert c["common_lb_config"] == {"healthy_panic_threshold": {"value": 20}}


def test_a_max_ejection_percent_of_0_ejects_nothing(tmp_path):
    rule = FULL.replace("maxEjectionPercent: 50", "maxEjectionPercent: 0")
    plan, _ = _plan(tmp_path, {"route.yaml": ROUTE, "rule.yaml": rule})
    _, clusters = envoy.resources(plan)
    assert clusters[0]["outlier_detection"]["max_ejection_percent"] == 0
    assert "always_eject_one_host" not in clusters[0]["outlier_detection"]


def test_subsets_with_different_policies_get_a_cluster_each_in_the_same_ratio(tmp_path):
    plan, clusters = _plan(tmp_path, {"route.yaml": ROUTE, "rule.yaml": FULL})
    assert envoy.check(plan) is None
    canary, rest = plan.listeners[0].routes
    assert clusters[canary.cluster].limits.max_connections == 1  # v2's own
    v1, v2 = (clusters[name] for name, _ in rest.weighted)
    assert rest.weighted == ((v1.name, 18), (v2.name, 2))  # 90/10: v1 9+9, v2 2
    assert [e.ip for e in v1.endpoints] == [IP[V1A], IP[V1B]]
    assert [e.ip for e in v2.endpoints] == [IP[V2A]]
    assert (v1.limits.max_connections, v2.limits.max_connections) == (7, 1)
    # Istio merges a subset's policy field by field: v2's connectionPool replaces the top's
    assert (v1.limits.max_pending_requests, v2.limits.max_pending_requests) == (3, None)
    assert v1.ejection == v2.ejection  # the top level's outlierDetection, kept
    action = _routes(plan)[1]["route"]
    assert action == {
        "weighted_clusters": {
            "clusters": [{"name": v1.name, "weight": 18}, {"name": v2.name, "weight": 2}]
        }
    }


def test_a_host_without_a_destination_rule_keeps_envoys_defaults(tmp_path):
    rules = {"route.yaml": ROUTE.replace("subset: v2", "port: 80").replace(", subset: v1", "")}
    rules["route.yaml"] = rules["route.yaml"].replace(", port: 80", "")
    plan, clusters = _plan(tmp_path, rules)
    assert all(c.limits is None and c.ejection is None for c in clusters.values())
    _, out = envoy.resources(plan)
    assert not any("circuit_breakers" in c or "outlier_detection" in c for c in out)
    assert all(not r["route"].get("weighted_clusters") for r in _routes(plan))


def test_a_service_waypointed_for_its_own_backends_takes_the_rule_of_its_name(tmp_path):
    """A service with its own backends (no routing document) under an AuthorizationPolicy."""
    policy = textwrap.dedent(
        """\
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: v1-only-get}
        spec:
          selector: {matchLabels: {app: user-service}}
          rules: [{to: [{operation: {methods: [GET]}}]}]
        """
    )
    (tmp_path / "rule.yaml").write_text(FULL + "---\n" + policy)
    own = (
        f"services:\n  - {{name: user-service, vip: {VIP}, port: 80, "
        "backends: [{endpoint: v1-a}, {endpoint: v1-b}]}\n"
    )
    s = settings_of(config(tmp_path, ["rule.yaml"], services=own))
    [c] = s.plan.clusters
    assert c.limits.max_connections == 7 and c.ejection.consecutive_gateway_failure == 4
    assert envoy.check(s.plan) is None
