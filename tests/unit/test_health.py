"""Active health checks of service backends on fake switches: probes, answers, forgeries."""

import logging
import textwrap
from collections import Counter

import pytest
from os_ken.lib.packet import ethernet, ipv4, packet, tcp, udp

from apps.l2_learning import L2Learning
from apps.services import Services
from apps.services.health import HEALTH_PORT, HEALTH_PRIORITY
from controller.config import ConfigError, load_config
from controller.core import Core
from tests.unit.test_services import (
    C1,
    C2,
    ENDPOINTS,
    IP,
    V1A,
    V1B,
    V2A,
    VIP,
    VMAC,
    connect,
    make,
    reload,
    service,
)

# Where each backend sits (tests/unit/test_l2.leaf_spine): (switch, port).
AT = {V1A: (202, 3), V2A: (203, 3), V1B: (203, 4)}


def with_health(config: str, health: str) -> str:
    return config.replace("    method:", f"    health: {health}\n    method:")


def probes(net, backend) -> list:
    """The probes sent so far to `backend`, as os-ken packets, oldest first."""
    dpid, port = AT[backend]
    out = []
    for p in net.switches[dpid].packet_outs:
        pkt = packet.Packet(p.data)
        ip = pkt.get_protocol(ipv4.ipv4)
        l4 = pkt.get_protocol(tcp.tcp) or pkt.get_protocol(udp.udp)
        is_syn = isinstance(l4, udp.udp) or (l4 and l4.bits == tcp.TCP_SYN)
        if ip and is_syn and ip.dst == IP[backend] and l4.src_port == HEALTH_PORT:
            assert [a.port for a in p.actions] == [port]  # out of the backend's own port
            out.append(pkt)
    return out


def last_syn(net, backend) -> tcp.tcp:
    syn = probes(net, backend)[-1].get_protocol(tcp.tcp)
    assert syn.bits == tcp.TCP_SYN
    return syn


def tcp_answer(backend, ack: int, bits: int, src_mac=None, src_ip=None, dport=HEALTH_PORT):
    """The bytes of a TCP segment from `backend`'s service port to the VIP's probe port."""
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(VMAC, src_mac or backend, 0x0800))
    pkt.add_protocol(ipv4.ipv4(src=src_ip or IP[backend], dst=VIP, proto=6))
    pkt.add_protocol(tcp.tcp(80, dport, 777, ack, 0, bits, 1000))
    pkt.serialize()
    return bytes(pkt.data)


def answer_probe(net, backend, bits=tcp.TCP_SYN | tcp.TCP_ACK, sender=None, ack_delta=1):
    """`sender` (the backend by default) answers the last probe sent to `backend`."""
    isn = last_syn(net, backend).seq
    net.inject(sender or backend, tcp_answer(backend, (isn + ack_delta) & 0xFFFFFFFF, bits))


def serve(net, backends, seconds: int) -> None:
    """For `seconds` seconds, `backends` answer each probe (the others are silent)."""
    for _ in range(seconds):
        for b in backends:
            answer_probe(net, b)
        net.advance(1.0)


def healthy(app, backend) -> bool:
    key = next(b.key for b in app.settings.services[0].backends if b.ip == IP[backend])
    return key not in app.locations.out


def checks(app, endpoint, result) -> float:
    return app.metrics.checks.labels("user-service", endpoint, result)._value.get()


def test_every_backend_is_probed_each_second_from_the_vip_out_of_its_own_port(tmp_path):
    net, _, _ = make(tmp_path, service())
    net.advance(3.0)
    for backend in (V1A, V2A, V1B):
        sent = probes(net, backend)
        assert 3 <= len(sent) <= 5
        eth, ip, syn = sent[-1].protocols[:3]
        assert (eth.src, eth.dst, ip.src, syn.dst_port) == (VMAC, backend, VIP, 80)
        assert len({p.get_protocol(tcp.tcp).seq for p in sent}) == len(sent)  # random ISNs
    # The answer flow sits on the backend's switch only, tied to its port, through the meter.
    answer_flows = [
        e for sw in net.switches.values() for e in sw.flows() if e.priority == HEALTH_PRIORITY
    ]
    assert len(answer_flows) == 3
    v1a = next(f for f in net.switches[202].flows() if f.priority == HEALTH_PRIORITY)
    assert v1a.match_dict()["in_port"] == 3
    assert ("meter", 0x10001) in v1a.instructions
    assert 0x10001 in net.switches[202].meter_table


def test_a_backend_that_never_answers_leaves_the_split_and_comes_back_after_two_answers(
    tmp_path, caplog
):
    caplog.set_level(logging.WARNING, logger="osken_suite.services")
    net, app, _ = make(tmp_path, service(50, 50))
    serve(net, [V2A], 4)  # v2-a answers, v1-a (its server dead, its link up) does not
    assert not healthy(app, V1A) and healthy(app, V2A)
    assert checks(app, "v1-a", "timeout") >= 3 and checks(app, "v2-a", "success") >= 3
    assert {connect(net, sport=s)[0] for s in range(100, 120)} == {V2A}
    assert app.metrics.healthy.labels("user-service", "v1-a")._value.get() == 0
    assert app.metrics.ejections.labels("user-service", "v1-a", "health")._value.get() == 1
    out_lines = [r for r in caplog.records if "v1-a:80 failed" in r.getMessage()]
    assert len(out_lines) == 1  # said once, though it keeps failing
    serve(net, [V2A], 3)
    assert len([r for r in caplog.records if "v1-a:80 failed" in r.getMessage()]) == 1
    serve(net, [V1A, V2A], 1)  # its server is back
    assert not healthy(app, V1A)  # one success is not enough
    answer_probe(net, V1A)
    assert healthy(app, V1A)
    got = Counter(connect(net, sport=s)[0] for s in range(200, 220))
    assert got[V1A] == got[V2A] == 10
    assert any("v1-a:80 is healthy again" in r.getMessage() for r in caplog.records)


def test_a_syn_ack_is_answered_with_a_reset_so_the_backend_forgets_the_probe(tmp_path):
    net, _, _ = make(tmp_path, service())
    syn = last_syn(net, V1A)
    before = len(net.switches[202].packet_outs)
    answer_probe(net, V1A)
    rst = packet.Packet(net.switches[202].packet_outs[before].data).get_protocol(tcp.tcp)
    assert rst.bits == tcp.TCP_RST and rst.seq == syn.seq + 1


def test_a_stale_half_open_probe_is_reset_and_does_not_count(tmp_path):
    """A backend still holding an earlier probe (its answer came too late) answers a new SYN
    on the same ports with its old SYN-ACK: that is closed with a RST, and is no success."""
    net, app, _ = make(tmp_path, service())
    isn = last_syn(net, V1A).seq
    before = len(net.switches[202].packet_outs)
    stale = (isn + 12345) & 0xFFFFFFFF
    net.inject(V1A, tcp_answer(V1A, stale, tcp.TCP_SYN | tcp.TCP_ACK))
    rst = packet.Packet(net.switches[202].packet_outs[before].data).get_protocol(tcp.tcp)
    assert rst.bits == tcp.TCP_RST and rst.seq == stale
    assert checks(app, "v1-a", "success") == 0
    answer_probe(net, V1A)  # the probe in flight is still answered
    assert checks(app, "v1-a", "success") == 1


def test_a_backend_refusing_connections_is_out_after_three_resets(tmp_path):
    net, app, _ = make(tmp_path, service(50, 50))
    for _ in range(3):
        answer_probe(net, V1A, bits=tcp.TCP_RST | tcp.TCP_ACK)
        net.advance(1.0)
    assert not healthy(app, V1A)
    assert checks(app, "v1-a", "refused") == 3


def test_backups_take_over_when_every_primary_is_out_of_health(tmp_path):
    net, app, _ = make(tmp_path, service(50, 50))
    serve(net, [V1B], 4)
    assert {connect(net, sport=s)[0] for s in range(100, 110)} == {V1B}
    assert app.live_backends.labels("user-service")._value.get() == 1


def test_the_switch_method_takes_an_unhealthy_backend_out_of_its_select_group(tmp_path):
    net, app, _ = make(tmp_path, service(50, 50, method="switch"))

    def buckets():
        sw = net.switches[201]
        groups = [g for gid, g in sw.groups.items() if g.type == "select" and gid >> 24 == 5]
        return len(groups[0].buckets)

    assert buckets() > 1  # both backends (the split may give one several buckets)
    serve(net, [V2A], 4)
    assert buckets() == 1  # v2-a alone: one bucket
    assert {connect(net, sport=s)[0] for s in range(100, 120)} == {V2A}


# --- forgeries: only the backend's own answer to our own probe counts -------------------------


def test_a_forged_syn_ack_from_another_port_does_not_keep_a_dead_backend_in(tmp_path):
    net, app, _ = make(tmp_path, service(50, 50))
    for _ in range(4):
        # c2 knows v1-a's addresses and even the sequence number: the wrong port all the same.
        answer_probe(net, V1A, sender=C2)
        net.advance(1.0)
    assert not healthy(app, V1A)
    assert checks(app, "v1-a", "success") == 0


def test_a_forged_syn_ack_with_a_guessed_sequence_number_does_not_count(tmp_path):
    net, app, _ = make(tmp_path, service(50, 50))
    for _ in range(4):
        answer_probe(net, V1A, ack_delta=2)  # from the right port, acknowledging the wrong ISN
        net.inject(V1A, tcp_answer(V1A, 1, tcp.TCP_SYN | tcp.TCP_ACK))
        net.advance(1.0)
    assert not healthy(app, V1A)


def test_forged_resets_do_not_take_a_live_backend_out(tmp_path):
    net, app, _ = make(tmp_path, service(50, 50))
    for _ in range(5):
        isn = last_syn(net, V1A).seq
        forged = tcp_answer(V1A, (isn + 1) & 0xFFFFFFFF, tcp.TCP_RST | tcp.TCP_ACK)
        net.inject(C2, forged)  # another host, with the backend's MAC and IP and the ISN
        net.inject(C1, tcp_answer(V1A, 0, tcp.TCP_RST, src_mac=C1))  # its own MAC, a guess
        net.inject(V1A, tcp_answer(V1A, (isn + 9) & 0xFFFFFFFF, tcp.TCP_RST))  # wrong ack
        answer_probe(net, V1A)  # and the backend's own SYN-ACK
        net.advance(1.0)
    assert healthy(app, V1A)
    assert checks(app, "v1-a", "refused") == 0


def test_an_answer_without_a_probe_in_flight_or_to_another_port_is_ignored(tmp_path):
    net, app, _ = make(tmp_path, service(50, 50))
    answer_probe(net, V1A)
    successes = checks(app, "v1-a", "success")
    answer_probe(net, V1A)  # the same answer again: that probe is done
    net.inject(V1A, tcp_answer(V1A, 1, tcp.TCP_SYN | tcp.TCP_ACK, dport=HEALTH_PORT - 1))
    assert checks(app, "v1-a", "success") == successes == 1


# --- config ------------------------------------------------------------------------------------


def test_health_false_turns_the_checks_off(tmp_path):
    net, app, _ = make(tmp_path, with_health(service(50, 50), "false"))
    net.advance(5.0)
    assert probes(net, V1A) == [] and healthy(app, V1A)
    assert not any(e.priority == HEALTH_PRIORITY for e in net.switches[202].flows())


def test_health_settings_apply_and_a_reload_keeps_the_state_of_an_unchanged_check(tmp_path):
    config = with_health(service(50, 50), "{interval: 500ms, timeout: 400ms, unhealthy: 2}")
    net, app, cfg = make(tmp_path, config)
    assert app.settings.services[0].health.interval == 0.5
    net.advance(1.0)
    assert not healthy(app, V1A)  # two missed probes, half a second apart
    reload(net, cfg, config.replace("weight: 50", "weight: 60", 1))
    assert not healthy(app, V1A)


@pytest.mark.parametrize(
    "health, where",
    [
        ("{interval: soon}", "services[0].health.interval"),
        ("{unhealthy: 0}", "services[0].health"),
        ("{every: 1s}", "services[0].health"),
        ("true", "services[0].health"),
    ],
)
def test_bad_health_settings_are_refused_where_they_are(tmp_path, health, where):
    cfg = tmp_path / "lab.yaml"
    cfg.write_text(ENDPOINTS + with_health(service(), health))
    core = Core()
    core.add_app(L2Learning)
    core.add_app(Services)
    with pytest.raises(ConfigError) as err:
        core.configure(load_config(str(cfg)), 0.0)
    assert where in str(err.value)


def udp_service(health: str = "") -> str:
    return textwrap.dedent(
        f"""\
        services:
          - name: user-service
            vip: {VIP}
            port: 53
            protocol: udp
            {health}
            backends:
              - {{endpoint: v1-a, weight: 1}}
              - {{endpoint: v2-a, weight: 1}}
        """
    )


def udp_answer(backend, body: bytes) -> bytes:
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(VMAC, backend, 0x0800))
    pkt.add_protocol(ipv4.ipv4(src=IP[backend], dst=VIP, proto=17))
    pkt.add_protocol(udp.udp(53, HEALTH_PORT))
    pkt.add_protocol(body)
    pkt.serialize()
    return bytes(pkt.data)


def test_a_udp_service_is_checked_with_its_payload_and_the_expected_reply(tmp_path):
    net, app, _ = make(tmp_path, udp_service("health: {send: ping, expect: pong}"))
    for _ in range(4):
        sent = probes(net, V1A)[-1]
        assert sent.protocols[-1] == b"ping" and sent.get_protocol(udp.udp).dst_port == 53
        net.inject(V1A, udp_answer(V1A, b"pong!"))
        net.inject(V2A, udp_answer(V2A, b"nope"))  # answers, but not what is expected
        net.advance(1.0)
    assert healthy(app, V1A) and not healthy(app, V2A)


def test_a_udp_service_without_a_payload_is_not_checked(tmp_path):
    net, app, _ = make(tmp_path, udp_service())
    net.advance(4.0)
    assert probes(net, V1A) == [] and healthy(app, V1A)


def test_the_trace_and_the_page_say_which_backend_is_out_of_health(tmp_path):
    net, app, _ = make(tmp_path, service(50, 50))
    serve(net, [V2A, V1B], 4)
    new = next(
        f
        for f in net.switches[201].flows()
        if f.table == app.compiler.track
        and f.match_dict().get("ipv4_dst") == VIP
        and "ct_state" in f.match_dict()
        and f.priority >= 200
    )
    assert app.explain(201, new)["out_of_split"] == {"v1-a": "out of health"}
    answer = next(f for f in net.switches[202].flows() if f.priority == HEALTH_PRIORITY)
    said = app.explain(202, answer)
    assert said["kind"] == "health check" and said["backend"]["out"] == "out of health"
    page = app.describe()["services"][0]["backends"]
    assert [b.get("out") for b in page] == ["out of health", None, None]


def test_a_replica_that_is_not_master_of_the_backends_switch_neither_probes_nor_times_out(
    tmp_path,
):
    net, app, _ = make(tmp_path, service(50, 50))
    sends, moved = app.health.tick(
        app.settings.services,
        app.locations.where,
        app.macs.mac_of,
        net.now + 10,
        lambda d: d != 202,
    )
    probed = {packet.Packet(m.data).get_protocol(ipv4.ipv4).dst for _, m in sends}
    assert IP[V1A] not in probed and IP[V2A] in probed  # v1-a sits on switch 202
    for _ in range(5):
        app.health.tick(
            app.settings.services,
            app.locations.where,
            app.macs.mac_of,
            net.now + 20,
            lambda d: False,
        )
    assert healthy(app, V1A)
