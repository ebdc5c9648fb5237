"""Flow logs (issue 16, part c): a denied connection's line names its rule, once per 5-tuple;
the deny flows go through the core's log meter only while `flow_log` is configured."""

import json

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether

from apps.l2_learning import L2Learning
from controller.config import ConfigError, load_config
from controller.core import Core
from controller.flowlog import LOG_METER, is_logged
from controller.flows import Meter, flow, meter
from controller.packets import header_fields
from controller.pipeline import PIPELINE, PipelineViolation
from controller.trace.tracer import Tracer
from tests.unit.test_firewall import flow_mods
from tests.unit.test_l2 import MACS
from tests.unit.test_trace import CONFIG, FakeSwitches, fake_lab
from tests.unit.test_trace import IP as ADDRESS

LOGGED = CONFIG + "flow_log: {path: logs/flows.jsonl, rate: 50}\n"


@pytest.fixture
def lab(tmp_path):
    (tmp_path / "logs").mkdir()
    return fake_lab(tmp_path, LOGGED), tmp_path / "lab.yaml"


def lines(tmp_path):
    path = tmp_path / "logs" / "flows.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def syn(net, src, dst, dport, sport=40000):
    got = net.send(
        src,
        dst,
        0x0800,
        ipv4_src=ADDRESS[src],
        ipv4_dst=ADDRESS[dst],
        ip_proto=6,
        tcp_src=sport,
        tcp_dst=dport,
        tcp_flags=0x002,
    )
    return dst in got.hosts


def test_a_denied_connection_is_one_line_naming_the_rule_file_line_and_text(lab, tmp_path):
    net, _ = lab
    assert not syn(net, MACS[0], MACS[2], 22)
    [line] = lines(tmp_path)
    assert net.now == 1003.0 and line["time"] == "1970-01-01T00:16:43.000Z"  # UTC, ISO 8601
    assert {k: line[k] for k in ("switch", "port", "src", "dst", "proto", "sport", "dport")} == {
        "switch": f"{201:016x}",
        "port": 3,
        "src": "10.0.0.1",
        "dst": "10.0.0.3",
        "proto": "tcp",
        "sport": 40000,
        "dport": 22,
    }
    assert (line["verdict"], line["app"], line["stage"], line["table"]) == (
        "deny",
        "firewall",
        "firewall",
        PIPELINE.table("firewall"),
    )
    assert line["rule"]["file"] == str(tmp_path / "rules.json")
    assert (line["rule"]["line"], line["rule"]["index"]) == (3, 2)
    assert line["rule"]["text"] == '{"action": "deny", "protocol": "tcp", "port": 22}'
    assert net.core.flow_log.recent[-1] == line


def test_the_same_5_tuple_is_logged_once_and_a_new_source_port_again(lab, tmp_path):
    net, _ = lab
    for _ in range(3):  # the SYN sent again, as TCP does
        syn(net, MACS[0], MACS[2], 22)
    assert len(lines(tmp_path)) == 1
    syn(net, MACS[0], MACS[2], 22, sport=40001)
    assert [line["sport"] for line in lines(tmp_path)] == [40000, 40001]
    received = net.core.metrics.registry.get_sample_value(
        "osken_flow_log_packet_ins_total", {"dpid": f"{201:016x}"}
    )
    assert received == 4
    net.now += 61  # past the window: the same 5-tuple is a new connection
    syn(net, MACS[0], MACS[2], 22)
    assert len(lines(tmp_path)) == 3


def test_microseg_default_deny_and_a_blocked_source_are_named(lab, tmp_path):
    net, _ = lab
    assert syn(net, MACS[0], MACS[4], 80)  # x may reach z on 80: allowed, not logged
    assert not syn(net, MACS[0], MACS[4], 8080)  # only y may reach z on 8080
    assert not syn(net, MACS[3], MACS[0], 80)  # 10.0.0.4 is in blocked_ips
    microseg, blocked = lines(tmp_path)
    assert (microseg["app"], microseg["stage"], microseg["dport"]) == (
        "microseg",
        "microseg_ingress",
        8080,
    )
    assert microseg["rule"]["kind"] == "default deny"
    assert microseg["rule"]["policies"] == ["NetworkPolicy z/web-from-x"]
    assert (microseg["rule"]["file"], microseg["rule"]["line"]) == (
        str(tmp_path / "netpol.yaml"),
        1,
    )
    assert (blocked["app"], blocked["rule"]["kind"], blocked["src"]) == (
        "firewall",
        "blocked_ips",
        "10.0.0.4",
    )


def test_every_switch_has_the_log_meter_and_the_deny_flows_use_it(lab):
    net, _ = lab
    for sw in net.switches.values():
        assert sw.meters[LOG_METER] == Meter(LOG_METER, "pktps", 50, 5)
        logged = [f for f in sw.flows() if is_logged(f)]
        assert {f.table for f in logged} == {
            PIPELINE.table(s) for s in ("firewall", "microseg_ingress")
        }
        # allow flows and the plumbing are untouched: only denies are logged
        assert all(
            not f.instructions or is_logged(f) for f in sw.flows() if f.priority in (3000, 1000)
        )


def test_a_reload_that_turns_the_log_off_resends_only_the_deny_flows(lab, tmp_path):
    net, cfg = lab
    before = {d: dict(net.core.desired.flows[d]) for d in net.switches}
    cfg.write_text(CONFIG)
    out = net.core.reload(lambda: load_config(str(cfg)), net.now)
    after = {d: dict(net.core.desired.flows[d]) for d in net.switches}
    changed = [(d, key) for d in before for key in before[d] if before[d][key] != after[d].get(key)]
    assert changed and all(is_logged(before[d][k]) for d, k in changed)
    assert all(not is_logged(after[d][k]) for d, k in changed)
    assert sum(len(flow_mods(msgs)) for msgs in out.values()) == len(changed)
    net.deliver(out)
    assert all(LOG_METER not in sw.meters for sw in net.switches.values())
    assert not syn(net, MACS[0], MACS[2], 22)  # still denied, no longer logged
    assert lines(tmp_path) == []
    assert not net.core.flow_log.on


def test_a_log_packet_in_names_its_flow_by_the_metadata_it_carries(lab):
    """Microseg's deny flows differ only in the identity bits of the metadata: the packet-in's
    metadata picks the right one (a packet-in without it matches none)."""
    net, _ = lab
    core = net.core
    ingress = PIPELINE.table("microseg_ingress")
    logged = [f for f in core.desired.flows[201].values() if is_logged(f) and f.table == ingress]
    isolated = [f for f in logged if f.priority == 1000]
    assert len(isolated) >= 1
    fields = {  # a SYN x-a -> z-a:8080 as table 6 sees it, but for the metadata
        "eth_type": 0x800,
        "ip_proto": 6,
        "ipv4_src": "10.0.0.1",
        "ipv4_dst": "10.0.0.5",
        "tcp_src": 1,
        "tcp_dst": 8080,
        "in_port": 3,
    }
    meta = dict(isolated[0].match)["metadata"][0]
    assert core.flow_log.flow_for(core.desired, 201, ingress, isolated[0].cookie, fields) is None
    found = core.flow_log.flow_for(
        core.desired, 201, ingress, isolated[0].cookie, {**fields, "metadata": meta}
    )
    assert found == isolated[0]


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            "{path: nowhere/flows.jsonl}",
            r"lab.yaml:\d+: flow_log.path: nowhere/flows.jsonl: no folder",
        ),
        ("{path: logs}", "flow_log.path: logs: is a folder"),
        ("{path: f.jsonl, rate: 0}", "flow_log.rate"),
        ("{path: f.jsonl, size: 3}", "size"),
        ("{rate: 10}", "path"),
        ("{path: f.jsonl, allowed: yes-please}", "flow_log.allowed"),
    ],
)
def test_a_bad_flow_log_section_is_refused_where_it_is_written(tmp_path, section, message):
    (tmp_path / "logs").mkdir()
    cfg = tmp_path / "lab.yaml"
    cfg.write_text(f"l2: {{}}\nflow_log: {section}\n")
    core = Core()
    core.add_app(L2Learning)
    with pytest.raises(ConfigError, match=message):
        core.parse(load_config(str(cfg)))


def test_only_the_apps_it_is_shared_with_may_use_the_log_meter():
    micro = flow(PIPELINE.table("microseg_egress"), 1000, {}, meter(LOG_METER), cookie=4 << 56)
    PIPELINE.check(micro)
    l2 = flow(PIPELINE.table("forwarding"), 5, {}, meter(LOG_METER), cookie=2 << 56)
    with pytest.raises(PipelineViolation, match="meter"):
        PIPELINE.check(l2)


@pytest.mark.parametrize(
    "pkt",
    [
        Ether(src="00:00:00:00:00:01", dst="00:00:00:00:00:02")
        / IP(src="10.0.0.1", dst="10.0.0.2")
        / TCP(sport=1234, dport=22, flags="S"),
        Ether() / IP(src="10.0.0.1", dst="10.0.0.9") / UDP(sport=53, dport=5353),
        Ether() / IP(src="10.0.0.1", dst="10.0.0.9") / ICMP(type=8, code=0),
    ],
)
def test_header_fields_read_what_scapy_reads(pkt):
    got = header_fields(bytes(pkt)[:128])
    ip = pkt[IP]
    assert (got["eth_type"], got["ip_proto"], got["ipv4_src"], got["ipv4_dst"]) == (
        0x800,
        ip.proto,
        ip.src,
        ip.dst,
    )
    if TCP in pkt:
        assert (got["tcp_src"], got["tcp_dst"], got["tcp_flags"]) == (1234, 22, 0x002)
    if UDP in pkt:
        assert (got["udp_src"], got["udp_dst"]) == (53, 5353)
    if ICMP in pkt:
        assert (got["icmpv4_type"], got["icmpv4_code"]) == (8, 0)
    assert header_fields(bytes(pkt)[:13]) == {}


def test_a_reload_that_changes_only_the_rate_changes_only_the_meters(lab):
    net, cfg = lab
    cfg.write_text(LOGGED.replace("rate: 50", "rate: 80"))
    out = net.core.reload(lambda: load_config(str(cfg)), net.now)
    assert sum(len(flow_mods(msgs)) for msgs in out.values()) == 0
    net.deliver(out)
    assert all(sw.meters[LOG_METER].rate == 80 for sw in net.switches.values())


def test_microseg_counts_packets_per_policy_and_rule_index(tmp_path):
    net = fake_lab(tmp_path)
    for sport in (1, 2, 3):
        assert syn(net, MACS[0], MACS[4], 80, sport)  # x -> z:80, web-from-x's rule 1
    assert syn(net, MACS[2], MACS[4], 8080)  # y -> z:8080, its rule 0
    assert not syn(net, MACS[0], MACS[4], 8080)  # x -> z:8080: the default deny
    net.advance(6.0)  # a counter poll, answered

    def value(name, rule, action="allow"):
        labels = {"policy": "z/web-from-x", "direction": "ingress", "rule": rule, "action": action}
        return net.core.metrics.registry.get_sample_value(name, labels)

    assert value("osken_microseg_rule_packets", "1") == 3
    assert value("osken_microseg_rule_packets", "0") == 1
    assert value("osken_microseg_rule_packets", "default", "deny") == 1
    assert value("osken_microseg_rule_bytes", "1") > 0


def test_a_trace_of_a_logged_deny_is_a_drop_whose_copy_went_to_the_log(lab):
    net, _ = lab
    answer = Tracer(net.core, FakeSwitches(net), lambda fn: fn()).trace(
        "10.0.0.1", "10.0.0.3", "tcp", 22
    )
    assert answer["verdict"] == "drop" and answer["hops"][0]["logged"] is True
    assert answer["decided_by"]["rule"]["line"] == 3
