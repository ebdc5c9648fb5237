"""Malformed trace asks (GET /api/v1/trace) are 400 with a message before any host lookup:
never a 500 (an exception out of the WSGI app) and never a 404 that hides the real fault."""

import pytest

from tests.unit.test_trace import FakeSwitches, get, lab  # noqa: F401 (the fixture)


@pytest.fixture
def trace(lab):  # noqa: F811
    from controller.metrics import Metrics
    from controller.web import Web

    net, _, _ = lab
    metrics = Metrics()
    Web(net.core, lambda fn: fn(), FakeSwitches(net)).mount(metrics)
    return metrics._mounted("/api/v1/trace")


@pytest.mark.parametrize(
    ("query", "says"),
    [
        # str.isdigit() is true for "²" and other non-ASCII digits, which int() refuses
        ("src=10.0.0.1&dst=10.0.0.3&proto=tcp&dport=%C2%B2", "dport"),
        # int() refuses more than 4,300 digits (CPython's int_max_str_digits)
        ("src=10.0.0.1&dst=10.0.0.3&proto=tcp&dport=" + "9" * 5000, "dport"),
        ("src=10.0.0.1&dst=10.0.0.3&proto=udp&sport=" + "1" * 5000 + "&dport=53", "sport"),
        # two families: said as such, not "no host known" for the other one
        ("src=10.0.0.1&dst=fd00::3&proto=tcp&dport=22", "one is IPv4, the other IPv6"),
        ("src=fd00::1&dst=10.0.0.3&proto=icmp", "one is IPv4, the other IPv6"),
        # an IPv6 scope is no part of a switch's flow (and ',' in it would end the field)
        ("src=fd00::1%25x,in_port=9&dst=fd00::3&proto=tcp&dport=22", "scope"),
        # a bad protocol or port is said even when the hosts are unknown
        ("src=10.9.9.9&dst=10.9.9.8&proto=sctp&dport=22", "proto"),
        ("src=10.9.9.9&dst=10.9.9.8&proto=tcp", "dport"),
    ],
)
def test_a_malformed_trace_is_400_with_what_is_wrong(trace, query, says):
    status, kind, body = get(trace, query)
    assert (status, kind) == (400, "application/json")
    assert says in body["error"]
