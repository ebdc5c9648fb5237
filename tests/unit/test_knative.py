"""Knative Ingress (networking.knative.dev/v1alpha1) as a routing document: the seed's, verbatim,
splits a service 90/10; what a switch cannot do is refused by name."""

import logging
import os
import shutil
import textwrap
from collections import Counter

import pytest

from controller.config import ConfigError
from tests.unit.test_services import DATA, V1A, V2A, VIP, connect, make

SERVICES = """\
services:
  - {name: user-service, vip: 10.0.100.11, port: 80, backends: [{endpoint: v1-a}]}
  - {name: user-service-canary, vip: 10.0.100.12, port: 80, backends: [{endpoint: v2-a}]}
"""


def ingress(path: str = "", split: str = "", percents=(90, 10), name="serverless-api-ingress"):
    return textwrap.dedent(
        f"""\
        apiVersion: networking.knative.dev/v1alpha1
        kind: Ingress
        metadata: {{name: {name}}}
        spec:
          rules:
            - hosts: [api.example.com]
              http:
                paths:
                  - {path}splits:
                      - {{serviceName: user-service, percent: {percents[0]}{split}}}
                      - {{serviceName: user-service-canary, percent: {percents[1]}}}
        """
    )


def routed(tmp_path, service: str, doc: str | None = None):
    """A lab whose `service` is routed by `doc` (default: the seed's serverless-network.yml)."""
    if doc is None:
        shutil.copy(os.path.join(DATA, "seed-routing", "serverless-network.yml"), tmp_path)
        path = tmp_path / "serverless-network.yml"
    else:
        path = tmp_path / "ingress.yaml"
        path.write_text(doc)
    config = SERVICES + f"  - {{name: {service}, vip: {VIP}, port: 80}}\nrouting: [{path}]\n"
    return make(tmp_path, config)


def test_the_seed_s_ingress_splits_its_service_90_10_by_the_ingress_name(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="osken_suite.services")
    net, app, _ = routed(tmp_path, "serverless-api-ingress")
    s = next(s for s in app.settings.services if s.name == "serverless-api-ingress")
    assert [r.split for r in s.routes] == [(("v1-a:80", 90), ("v2-a:80", 10))]
    assert Counter(connect(net, sport=20000 + i)[0] for i in range(100)) == {V1A: 90, V2A: 10}
    # the file's VirtualService rewrites a header: refused by name, the rest still loads
    assert "spec.http.0.route.0.headers" in caplog.text


def test_an_ingress_attaches_to_the_service_named_by_a_host(tmp_path):
    _, app, _ = routed(tmp_path, "api", ingress(name="other"))
    s = next(s for s in app.settings.services if s.name == "api")
    assert [r.split for r in s.routes] == [(("v1-a:80", 90), ("v2-a:80", 10))]


@pytest.mark.parametrize(
    "path, split, where, what",
    [
        ("", ", appendHeaders: {x-canary: 'yes'}", "splits.0.appendHeaders", "appendHeaders"),
        ("appendHeaders: {x-a: b}\n                    ", "", "paths.0.appendHeaders", "append"),
        ("path: /v1/\n                    ", "", "paths.0.path", "request path"),
        ("rewriteHost: a.example.com\n                    ", "", "rewriteHost", "Host rewrite"),
        ("retries: {attempts: 3}\n                    ", "", "paths.0.retries", "retries"),
    ],
    ids=["split-headers", "path-headers", "path", "rewrite-host", "retries"],
)
def test_what_a_switch_cannot_do_is_refused_by_name_and_the_path_takes_no_traffic(
    tmp_path, caplog, path, split, where, what
):
    caplog.set_level(logging.WARNING, logger="osken_suite.services")
    _, app, _ = routed(tmp_path, "api", ingress(path, split))
    assert where in caplog.text and what in caplog.text and "ingress.yaml:" in caplog.text
    assert next(s for s in app.settings.services if s.name == "api").routes == ()


def test_percents_that_do_not_add_up_to_100_are_refused_where_they_are(tmp_path):
    with pytest.raises(ConfigError, match=r"ingress.yaml:9.*add up to 95, not 100"):
        routed(tmp_path, "api", ingress(percents=(90, 5)))


def test_an_unknown_field_and_a_percent_over_100_are_refused_by_the_schema(tmp_path):
    for folder, doc, what in [
        ("a", ingress(split=", weight: 3"), "unknown key"),
        ("b", ingress(percents=(101, 0)), "percent"),
    ]:
        (tmp_path / folder).mkdir()
        with pytest.raises(ConfigError, match=what):
            routed(tmp_path / folder, "api", doc)
