"""DestinationRule trafficPolicy: read unmodified (the seed's legacy circuitBreaker too),
merged per subset as Istio does, and given to each backend the destination reaches."""

import logging

import pytest

from apps.services import Services
from apps.services.trafficpolicy import ConnectionPool, OutlierDetection, TrafficPolicy
from controller.config import ConfigError, load_config
from controller.core import Core
from controller.durations import parse_duration
from tests.unit.test_services import ENDPOINTS, VIP

SEED_RULE = """\
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: user-service
spec:
  host: user-service
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 10
      http:
        http1MaxPendingRequests: 10
        maxRequestsPerConnection: 2
    circuitBreaker:
      consecutiveErrors: 3
      interval: 30s
      baseEjectionTime: 30s
  subsets:
    - name: v1
      labels:
        version: v1
    - name: v2
      labels:
        version: v2
      trafficPolicy:
        outlierDetection: {consecutive5xxErrors: 1, baseEjectionTime: 1m30s}
"""
ROUTE = """\
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: user-service}
spec:
  hosts: [user-service]
  http:
    - route:
        - {destination: {host: user-service, subset: v1}, weight: 90}
        - {destination: {host: user-service, subset: v2}, weight: 10}
"""


def services_of(tmp_path, rule: str, route: str = ROUTE, service: str | None = None):
    (tmp_path / "routing.yaml").write_text(rule + "---\n" + route)
    service = service or f"  - {{name: user-service, vip: {VIP}, port: 80}}\n"
    cfg = tmp_path / "lab.yaml"
    cfg.write_text(ENDPOINTS + "services:\n" + service + f"routing: [{tmp_path}/routing.yaml]\n")
    core = Core()
    app = core.add_app(Services)
    core.configure(load_config(str(cfg)), 1000.0)
    return {s.name: s for s in app.settings.services}


def test_the_seeds_circuit_breaker_is_read_as_outlier_detection_and_said_so(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="osken_suite.services")
    svc = services_of(tmp_path, SEED_RULE)["user-service"]
    v1 = svc.traffic_policy("v1-a:80")
    assert v1 == TrafficPolicy(
        ConnectionPool(
            max_connections=10, http1_max_pending_requests=10, max_requests_per_connection=2
        ),
        OutlierDetection(consecutive_5xx=3, interval=30.0, base_ejection_time=30.0),
    )
    assert "circuitBreaker is not a current Istio field" in caplog.text
    assert "routing.yaml:14" in caplog.text  # the line of circuitBreaker


def test_a_subsets_policy_replaces_the_top_levels_field_by_field(tmp_path):
    svc = services_of(tmp_path, SEED_RULE)["user-service"]
    v2 = svc.traffic_policy("v2-a:80")
    assert v2.connection_pool.max_connections == 10  # from the top level
    assert v2.outlier_detection == OutlierDetection(consecutive_5xx=1, base_ejection_time=90.0)
    assert svc.traffic_policy("v1-b:80") == svc.traffic_policy("v1-a:80")


def test_a_service_with_its_own_backends_takes_the_rule_of_its_name(tmp_path):
    own = f"  - {{name: user-service, vip: {VIP}, port: 80, backends: [{{endpoint: v1-a}}]}}\n"
    svc = services_of(tmp_path, SEED_RULE, route="", service=own)["user-service"]
    assert svc.traffic_policy("v1-a:80").connection_pool.max_connections == 10


@pytest.mark.parametrize(
    "bad, where",
    [
        ("maxConnections: ten", "maxConnections"),
        ("connectTimeout: soon", "connectTimeout"),
        ("maxConnections: -1", "maxConnections"),
    ],
)
def test_a_bad_field_is_refused_with_its_line(tmp_path, bad, where):
    rule = SEED_RULE.replace("maxConnections: 10", bad)
    with pytest.raises(ConfigError) as got:
        services_of(tmp_path, rule)
    assert "routing.yaml:10" in str(got.value) and where in str(got.value)


def test_fields_nobody_enforces_are_named_and_the_rest_applies(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="osken_suite.services")
    rule = SEED_RULE.replace(
        "    connectionPool:\n", "    loadBalancer: {simple: LEAST_REQUEST}\n    connectionPool:\n"
    )
    svc = services_of(tmp_path, rule)["user-service"]
    assert "trafficPolicy field loadBalancer is not enforced" in caplog.text
    assert svc.traffic_policy("v1-a:80").connection_pool.max_connections == 10


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("30s", 30.0),
        ("500ms", 0.5),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        (5, 5.0),
        ("5", None),
        ("0s", None),
        ("s", None),
        (True, None),
        ("1.5.2s", None),
    ],
)
def test_durations_read_as_go_and_istio_write_them(text, seconds):
    assert parse_duration(text) == seconds
