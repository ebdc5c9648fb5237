"""Policy documents of the wrong shape are refused at their file, line and field, whichever app
reads them first. Before, the services app read CiliumNetworkPolicy L7 rules and EnvoyFilter
matches before any schema looked at them: a string where a mapping goes raised AttributeError
("a bug in the controller", at the config's services section) or said only "malformed
CiliumNetworkPolicy: 'str' object has no attribute 'get'" at `spec`, and an EnvoyFilter without
metadata.name raised KeyError: 'name'. (The services app reads a CiliumNetworkPolicy without
microsegmentation too.)"""

import pytest

from controller.config import ConfigError
from tests.unit.test_cilium_l7 import _extra
from tests.unit.test_cilium_l7 import _settings as cilium_settings
from tests.unit.test_envoyfilter import _settings as envoy_filter_settings
from tests.unit.test_waypoint import fake_runner  # noqa: F401  (autouse: no real Envoy)

CNP = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: odd}}
spec:
  endpointSelector: {{matchLabels: {{app: user-api}}}}
  ingress:
    - toPorts:
        - ports: [{{port: '8080', protocol: TCP}}]
          rules:
            http: {http}
"""


@pytest.mark.parametrize(
    ("http", "field", "says"),
    [
        ("GET", "http", "not of type 'array', 'null'"),
        ("[GET]", "http[0]", "not of type 'object'"),
        ("[{path: [/x]}]", "http[0].path", "not of type 'string'"),
        ("[{headers: 'Content-Type: application/json'}]", "http[0].headers", "'array'"),
        ("[{path: '/users/(['}]", "http[0].path", "is not an RE2 regular expression"),
        ("[{method: '(?i)GET|(?<!P)OST'}]", "http[0].method", "invalid perl operator"),
    ],
)
def test_a_cilium_l7_rule_of_the_wrong_shape_is_refused_at_its_field(tmp_path, http, field, says):
    _extra(tmp_path, CNP.format(http=http))
    with pytest.raises(ConfigError) as refused:
        cilium_settings(tmp_path)
    text = str(refused.value)
    assert "extra.yaml:10: spec.ingress[0].toPorts[0].rules." + field in text and says in text, text


def test_a_cilium_selector_of_the_wrong_shape_is_refused_at_its_line(tmp_path):
    _extra(tmp_path, CNP.format(http="[]").replace("{matchLabels: {app: user-api}}", "user-api"))
    with pytest.raises(ConfigError) as refused:
        cilium_settings(tmp_path)
    assert "extra.yaml:5: spec.endpointSelector: 'user-api' is not of type 'object'" in str(
        refused.value
    )


PATCH = """\
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {metadata}
spec:
  workloadSelector: {{labels: {{app: api-gateway}}}}
  configPatches:
    - applyTo: HTTP_FILTER
      match: {match}
      patch: {{operation: REMOVE}}
"""


@pytest.mark.parametrize(
    ("metadata", "match", "field", "says"),
    [
        ("{name: f}", "{listener: port80}", "configPatches[0].match.listener", "'object'"),
        ("{name: f}", "{listener: {filterChain: 7}}", "match.listener.filterChain", "'object'"),
        ("{name: f}", "{listener: {filterChain: {filter: 7}}}", "filterChain.filter", "'object'"),
        ("{name: f}", "{listener: {portNumber: http}}", "listener.portNumber", "'integer'"),
        ("{namespace: x}", "{}", "metadata", "'name' is a required property"),
    ],
)
def test_an_envoy_filter_of_the_wrong_shape_is_refused_at_its_field(
    tmp_path, metadata, match, field, says
):
    with pytest.raises(ConfigError) as refused:
        envoy_filter_settings(tmp_path, extra=PATCH.format(metadata=metadata, match=match))
    text = str(refused.value)
    assert "extra.yaml:" in text and field in text and says in text, text


LONG_PATH = (
    "/(users|accounts|orders|items|products|carts|payments|invoices|shipments|returns)"
    "/[0-9]+/(details|history|summary|status|audit)/[a-z0-9-]{1,64}"
)


def test_a_cilium_path_regex_of_a_few_hundred_re2_instructions_is_taken(tmp_path):
    """Envoy refused any regex whose RE2 program is over 100 (its default error level): this
    path (369) refused the whole config at mesh.waypoint, where Cilium takes it."""
    from vnf.waypoint import envoy

    _extra(tmp_path, CNP.format(http=f"[{{method: GET, path: '{LONG_PATH}'}}]"))
    s = cilium_settings(tmp_path)
    assert envoy.check(s.plan) is None
