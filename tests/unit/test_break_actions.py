"""Istio HTTP actions of the wrong shape or value are refused at their file, line and field:
before, a string where an object goes raised AttributeError ("a bug in the controller", at
the config's services section), a missing mirror host said only "malformed VirtualService:
'host'", a negative `attempts` or an `httpStatus` Envoy refuses was named by Envoy's proto path
at mesh.waypoint, a misspelled `retryOn` meant no retries (Envoy ignores words it does not
know), and `remove: Cookie` removed the headers C, o, k, i and e."""

import pytest

from controller.config import ConfigError
from tests.unit.test_waypoint import config, fake_runner, settings_of  # noqa: F401 (autouse)

RULE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: user-service}}
spec:
  hosts: [user-service]
  http:
    - match: [{{uri: {{prefix: /api}}}}]
      {action}
      route: [{{destination: {{host: user-service}}}}]
"""


@pytest.mark.parametrize(
    ("action", "field", "says"),
    [
        ("mirror: user-service", "spec.http[0].mirror", "not of type 'object'"),
        ("mirror: {subset: v2}", "spec.http[0].mirror", "'host' is a required property"),
        ("mirrors: [{percentage: {value: 5}}]", "spec.http[0].mirrors[0]", "'destination'"),
        ("headers: {request: {set: x}}", "spec.http[0].headers.request.set", "'object'"),
        ("headers: {request: {remove: Cookie}}", "spec.http[0].headers.request.remove", "array"),
        ("headers: [1]", "spec.http[0].headers", "not of type 'object'"),
        ("retries: 3", "spec.http[0].retries", "not of type 'object'"),
        ("retries: {attempts: -1}", "spec.http[0].retries.attempts", "minimum of 0"),
        ("fault: {abort: 500}", "spec.http[0].fault.abort", "not of type 'object'"),
        ("fault: {abort: {httpStatus: 99999}}", "fault.abort.httpStatus", "maximum of 599"),
        ("rewrite: /x", "spec.http[0].rewrite", "not of type 'object'"),
        ("retries: {attempts: 2, retryOn: 5xxx}", "spec.http[0].retries.retryOn", "'5xxx'"),
        ("retries: {attempts: 2, retryOn: '5xx,999'}", "spec.http[0].retries.retryOn", "'999'"),
    ],
)
def test_a_bad_action_is_refused_at_its_line_and_field(tmp_path, action, field, says):
    (tmp_path / "vs.yaml").write_text(RULE.format(action=action))
    with pytest.raises(ConfigError) as refused:
        settings_of(config(tmp_path, ["vs.yaml"]))
    text = str(refused.value)
    assert f"{tmp_path}/vs.yaml:8: " in text and field in text and says in text, text


def test_the_retry_conditions_envoy_knows_and_status_codes_still_apply(tmp_path):
    action = "retries: {attempts: 2, retryOn: 'gateway-error, connect-failure,503'}"
    (tmp_path / "vs.yaml").write_text(RULE.format(action=action))
    [listener] = settings_of(config(tmp_path, ["vs.yaml"])).plan.listeners
    retries = listener.routes[0].actions.retries
    assert (retries.retry_on, retries.status_codes) == (
        ("gateway-error", "connect-failure"),
        (503,),
    )
