"""Routing documents are checked by their JSON Schemas (apps/services/schemas.py), one way: shapes,
required fields, ranges and unknown keys, each refused at its file, line and field; only what
the switch cannot do (L7 fields) is left to the reader, which rejects the rule by name."""

from __future__ import annotations

import textwrap

import pytest

from apps.services.routing import VirtualService, parse_routing, reject_l7
from controller.config import ConfigError, load_documents
from vnf.waypoint.model import HttpMatch, StringMatch

VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  {kind}:
  - match:
    - {match}
    route:
    - destination: {destination}
      weight: {weight}
"""


def parse(tmp_path, text: str):
    path = tmp_path / "route.yaml"
    path.write_text(textwrap.dedent(text))
    [doc] = load_documents(str(path))
    return parse_routing(doc)


def vs(kind="http", match="{port: 80}", destination="{host: web, subset: v1}", weight=100):
    fields = {"{kind}": kind, "{match}": match, "{destination}": destination, "{weight}": weight}
    text = VS
    for name, value in fields.items():
        text = text.replace(name, str(value))
    return text


@pytest.mark.parametrize(
    "text, where",
    [
        (vs(match="{port: 80, colour: blue}"), "8: spec.http[0].match[0].colour: unknown key"),
        (vs(match="{sourceSubnet: 10.0.0.0/8}"), "8: spec.http[0].match[0].sourceSubnet: unknown"),
        (vs(kind="tcp", match="{bogus: 1}"), "8: spec.tcp[0].match[0].bogus: unknown key"),
        (vs(match="{port: 70000}"), "8: spec.http[0].match[0].port: 70000 is greater than the max"),
        (vs(destination="{subset: v1}"), "10: spec.http[0].route[0].destination: 'host' is a req"),
        (
            vs(destination="{host: w, colour: 1}"),
            "10: spec.http[0].route[0].destination.colour: unknown key",
        ),
        (
            vs(destination="{host: w, port: {number: 0}}"),
            "10: spec.http[0].route[0].destination.port.number: 0 is less",
        ),
        (vs(weight=-1), "11: spec.http[0].route[0].weight: -1 is less than the minimum of 0"),
        (vs(weight="ten"), "11: spec.http[0].route[0].weight: 'ten' is not of type 'integer'"),
        (
            vs().replace("  hosts: [web]\n", "  hosts: [web]\n  colour: 1\n"),
            "6: spec.colour: unknown key",
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\n"
            "spec:\n  subsets: []\n",
            "4: spec: 'host' is a required property",
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\n"
            "spec:\n  host: web\n  subsets:\n  - labels: {version: v1}\n",
            "7: spec.subsets[0]: 'name' is a required property",
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\n"
            "spec:\n  host: web\n  subsets:\n  - {name: v1, labels: {version: 1.10}}\n",
            "7: spec.subsets[0].labels.version: 1.1 is not a string: quote it",
        ),
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\n"
            "spec:\n  rules:\n  - backendRefs:\n    - {port: 80}\n",
            "7: spec.rules[0].backendRefs[0]: 'name' is a required property",
        ),
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\n"
            "spec:\n  rules:\n  - backendRefs:\n    - {name: web, weight: 1000001}\n",
            "7: spec.rules[0].backendRefs[0].weight: 1000001 is greater than the maximum",
        ),
    ],
)
def test_a_bad_routing_document_is_refused_at_its_field(tmp_path, text, where):
    with pytest.raises(ConfigError) as info:
        parse(tmp_path, text)
    assert f"route.yaml:{where}" in str(info.value)


def test_an_l7_field_is_kept_for_a_waypoint_and_named_when_its_rule_is_rejected(tmp_path, caplog):
    doc = parse(tmp_path, vs(match="{uri: {prefix: /api}}"))
    [rule] = doc.rules
    assert rule.l7 == HttpMatch(path=StringMatch("prefix", "/api"), where=rule.l7.where)
    assert "a match on the request URI" not in caplog.text  # a waypoint may yet judge it
    reject_l7(doc.doc, rule)  # what the settings do when there is none
    assert "route.yaml:8: spec.http.0.match.0.uri: a match on the request URI" in caplog.text


def test_a_tcp_rule_with_a_request_field_is_rejected_by_name(tmp_path, caplog):
    doc = parse(tmp_path, vs(kind="tcp", match="{uri: {prefix: /api}}"))
    assert isinstance(doc, VirtualService) and doc.rules == ()
    assert "spec.tcp.0.match.0.uri: a match on the request URI" in caplog.text


def test_a_good_document_reads_as_before(tmp_path):
    doc = parse(tmp_path, vs(kind="tcp", match="{sourceSubnet: 10.0.0.0/8, port: 80}"))
    [rule] = doc.rules
    assert str(rule.matches[0].subnet) == "10.0.0.0/8" and rule.matches[0].port == 80
    assert [(d.host, d.subset, int(d.weight)) for d in rule.destinations] == [("web", "v1", 100)]
