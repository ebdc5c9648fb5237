"""Numbers Envoy cannot take are refused at the document's line and field, not only by
`envoy --mode validate` at mesh.waypoint with a protobuf path ("static_resources.clusters[0]
.circuit_breakers.thresholds[0].max_connections: ... UInt32Value") that names no file."""

import pytest

from controller.config import ConfigError
from tests.unit.test_break_actions import RULE
from tests.unit.test_waypoint import config, fake_runner, settings_of  # noqa: F401 (autouse)
from vnf.waypoint import envoy

POLICY = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: user-service}}
spec:
  host: user-service
  trafficPolicy: {policy}
---
"""
ROUTE = RULE.format(action="timeout: 2s")


@pytest.fixture(autouse=True)
def envoy_never_asked(monkeypatch):
    """What this file checks is to be refused before Envoy is asked."""
    monkeypatch.setattr(envoy, "check", lambda plan, binary=None: None)


@pytest.mark.parametrize(
    ("policy", "field", "says"),
    [
        ("{connectionPool: {tcp: {maxConnections: 99999999999}}}", "maxConnections", "maximum"),
        ("{connectionPool: {http: {maxRetries: 4294967296}}}", "maxRetries", "maximum"),
        ("{connectionPool: {http: {idleTimeout: 99999999999h}}}", "idleTimeout", "longer than"),
        ("{outlierDetection: {interval: 1e300}}", "outlierDetection.interval", "longer than"),
    ],
)
def test_a_traffic_policy_number_envoy_cannot_take_is_refused_at_its_field(
    tmp_path, policy, field, says
):
    (tmp_path / "r.yaml").write_text(POLICY.format(policy=policy) + ROUTE)
    with pytest.raises(ConfigError) as refused:
        settings_of(config(tmp_path, ["r.yaml"]))
    text = str(refused.value)
    assert f"{tmp_path}/r.yaml:" in text and field in text and says in text, text


@pytest.mark.parametrize(
    ("action", "field"),
    [
        ("timeout: 99999999999h", "spec.http[0].timeout"),
        (
            "fault: {delay: {fixedDelay: 99999999999h, percentage: {value: 5}}}",
            "fault.delay.fixedDelay",
        ),
        ("retries: {attempts: 2, perTryTimeout: 99999999999h}", "retries.perTryTimeout"),
    ],
)
def test_a_duration_longer_than_protobuf_takes_is_refused_at_its_field(tmp_path, action, field):
    (tmp_path / "r.yaml").write_text(RULE.format(action=action))
    with pytest.raises(ConfigError) as refused:
        settings_of(config(tmp_path, ["r.yaml"]))
    text = str(refused.value)
    assert f"{tmp_path}/r.yaml:8: " in text and field in text and "longer than" in text, text
