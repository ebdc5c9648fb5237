"""Passive outlier detection on fake switches: backends resetting new connections are ejected."""

import logging
import textwrap

from os_ken.lib.packet import ethernet, ipv4, packet, tcp

from apps.services.outlier import RESET_PRIORITY
from tests.unit.test_services import C1, C2, IP, V1A, V2A, VIP, connect, make

RULE = """\
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {{name: user-service}}
spec:
  host: user-service
  trafficPolicy:
    {field}: {{{errors}: 3, baseEjectionTime: 10s, maxEjectionPercent: {percent}}}
"""


def lab(tmp_path, percent=50, field="outlierDetection", errors="consecutive5xxErrors", **kw):
    rule = tmp_path / "rule.yaml"
    rule.write_text(RULE.format(field=field, errors=errors, percent=percent))
    config = textwrap.dedent(
        f"""\
        services:
          - name: user-service
            vip: {VIP}
            port: 80
            health: false
            backends:
              - {{endpoint: v1-a, weight: 50}}
              - {{endpoint: v2-a, weight: 50}}
        routing: [{rule}]
        """
    )
    return make(tmp_path, config, **kw)


def rst(backend, client, sport: int, src_mac=None) -> bytes:
    """The bytes of a RST from `backend`'s service port to client:sport."""
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(client, src_mac or backend, 0x0800))
    pkt.add_protocol(ipv4.ipv4(src=IP[backend], dst=IP[client], proto=6))
    pkt.add_protocol(tcp.tcp(80, sport, 0, 1, 0, tcp.TCP_RST | tcp.TCP_ACK, 0))
    pkt.serialize()
    return bytes(pkt.data)


def refused(net, n: int, first: int, sender=None) -> int:
    """Open connections from c1 until `n` of them went to v1-a, each of which v1-a (or
    `sender`, claiming to be v1-a) resets; returns the next free source port."""
    sport = first
    while n:
        host, _ = connect(net, sport=sport)
        if host == V1A:
            net.inject(sender or V1A, rst(V1A, C1, sport))
            n -= 1
        sport += 1
    return sport


def ejected(app) -> bool:
    return "v1-a:80" in app.locations.out


def test_three_reset_connects_in_a_row_eject_the_backend_for_the_base_ejection_time(
    tmp_path, caplog
):
    caplog.set_level(logging.WARNING, logger="osken_suite.services")
    net, app, _ = lab(tmp_path)
    flows = [f for f in net.switches[202].flows() if f.priority == RESET_PRIORITY]
    assert [f.match_dict()["in_port"] for f in flows] == [3]  # v1-a's own port, and no other
    sport = refused(net, 3, 1000)
    assert ejected(app)
    assert {connect(net, sport=s)[0] for s in range(sport, sport + 10)} == {V2A}
    assert app.metrics.ejections.labels("user-service", "v1-a", "outlier")._value.get() == 1
    assert "refused 3 new connections in a row; ejected for 10 s" in caplog.text
    said = app.explain(202, flows[0])
    assert said["kind"] == "outlier detection"
    assert said["backend"]["out"] == "ejected (outlierDetection)"
    net.advance(10.5)
    assert not ejected(app)
    assert V1A in {connect(net, sport=s)[0] for s in range(5000, 5004)}


def test_the_seeds_circuit_breaker_ejects_as_outlier_detection(tmp_path):
    net, app, _ = lab(tmp_path, field="circuitBreaker", errors="consecutiveErrors")
    refused(net, 3, 1000)
    assert ejected(app)


def test_a_connection_that_is_not_reset_ends_the_run(tmp_path):
    net, app, _ = lab(tmp_path)
    sport = refused(net, 2, 1000)
    while connect(net, sport=sport)[0] != V1A:  # one v1-a accepts and keeps
        sport += 1
    net.advance(1.5)  # past its connect window: a success
    refused(net, 2, sport + 1)
    assert not ejected(app)
    refused(net, 1, 3000)
    assert ejected(app)


def test_a_reset_long_after_the_connect_is_not_a_connect_failure(tmp_path):
    net, app, _ = lab(tmp_path)
    ports = []
    sport = 1000
    while len(ports) < 3:
        if connect(net, sport=sport)[0] == V1A:
            ports.append(sport)
        sport += 1
    net.advance(2.0)
    for p in ports:  # the connections ran, then ended with a RST
        net.inject(V1A, rst(V1A, C1, p))
    assert not ejected(app)


def test_forged_resets_from_another_port_do_not_eject_a_backend(tmp_path):
    net, app, _ = lab(tmp_path)
    refused(net, 5, 1000, sender=C2)  # c2 claims v1-a's MAC and IP, and knows the ports
    assert not ejected(app)


def test_max_ejection_percent_keeps_at_least_the_rest_in(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="osken_suite.services")
    net, app, _ = lab(tmp_path, percent=50)  # 2 backends: one may be out
    refused(net, 3, 1000)
    assert ejected(app)
    # Now only v2-a is picked; it resets too, but the cap keeps it in.
    for sport in range(2000, 2003):
        assert connect(net, sport=sport)[0] == V2A
        net.inject(V2A, rst(V2A, C1, sport))
    assert "v2-a:80" not in app.locations.out
    assert "maxEjectionPercent 50% is reached; it stays" in caplog.text


def test_outlier_detection_is_no_longer_called_unenforced_but_connection_pools_are(
    tmp_path, caplog
):
    caplog.set_level(logging.WARNING, logger="osken_suite.services")
    lab(tmp_path)
    assert "not enforced yet" not in caplog.text
