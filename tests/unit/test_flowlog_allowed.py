"""Flow logs of allowed connections (issue 16): with `flow_log: {allowed: true}`, an allowed
new connection is one line with verdict allow naming every rule that let it through; a copy
goes to the controller through the log meter and the packet itself still arrives."""

import json

from controller.flowlog import ALLOW_COPY, LOG_METER
from controller.pipeline import PIPELINE
from tests.unit.test_flowlog import syn
from tests.unit.test_l2 import MACS
from tests.unit.test_trace import CONFIG, fake_lab

ALLOWED = CONFIG + "flow_log: {path: logs/flows.jsonl, rate: 50, allowed: true}\n"
DENIED_ONLY = CONFIG + "flow_log: {path: logs/flows.jsonl, rate: 50}\n"
X_A, Y_A, Z_A = MACS[0], MACS[2], MACS[4]  # namespaces x, y, z (tests/unit/test_trace.py)


def lab(tmp_path, config):
    (tmp_path / "logs").mkdir()
    return fake_lab(tmp_path, config)


def lines(tmp_path):
    path = tmp_path / "logs" / "flows.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_an_allowed_connection_is_one_line_naming_the_firewall_rule_and_the_policy(tmp_path):
    net = lab(tmp_path, ALLOWED)
    assert syn(net, X_A, Z_A, 80)  # the packet itself still arrives
    [line] = lines(tmp_path)
    assert (line["verdict"], line["src"], line["dst"], line["dport"]) == (
        "allow",
        "10.0.0.1",
        "10.0.0.5",
        80,
    )
    firewall, microseg = line["rules"]  # the rules that decided; not bindings, not misses
    assert (firewall["app"], firewall["stage"], microseg["stage"]) == (
        "firewall",
        "firewall",
        "microseg_ingress",
    )
    assert (firewall["rule"]["file"], firewall["rule"]["line"]) == (str(tmp_path / "rules.json"), 2)
    assert microseg["rule"]["policy"] == "z/web-from-x" and microseg["rule"]["action"] == "allow"
    assert (line["app"], line["stage"], line["table"], line["rule"]) == (
        "microseg",
        "microseg_ingress",
        PIPELINE.table("microseg_ingress"),
        microseg["rule"],
    )


def test_a_firewall_allow_that_microseg_denies_is_logged_as_the_deny_only(tmp_path):
    net = lab(tmp_path, ALLOWED)
    assert not syn(net, Y_A, Z_A, 80)  # the firewall allows 80; z takes only x on 80
    assert [line["verdict"] for line in lines(tmp_path)] == ["deny"]
    assert lines(tmp_path)[0]["app"] == "microseg"


def test_only_new_connections_are_copied_the_rest_of_the_connection_is_not(tmp_path):
    net = lab(tmp_path, ALLOWED)
    assert syn(net, X_A, Z_A, 80)
    ins = net.core.flow_log.packet_ins.labels(f"{201:016x}")._value.get()
    got = net.send(
        X_A,
        Z_A,
        0x0800,
        ipv4_src="10.0.0.1",
        ipv4_dst="10.0.0.5",
        ip_proto=6,
        tcp_src=40000,
        tcp_dst=80,
        tcp_flags=0x010,
    )
    assert Z_A in got.hosts
    assert net.core.flow_log.packet_ins.labels(f"{201:016x}")._value.get() == ins
    assert len(lines(tmp_path)) == 1


def test_each_new_connection_is_a_line_and_every_packet_gets_through(tmp_path):
    net = lab(tmp_path, ALLOWED)
    assert all(syn(net, X_A, Z_A, 80, sport=41000 + i) for i in range(20))
    assert sorted(line["sport"] for line in lines(tmp_path)) == list(range(41000, 41020))


def test_allowed_connections_are_not_logged_unless_asked(tmp_path):
    net = lab(tmp_path, DENIED_ONLY)
    assert syn(net, X_A, Z_A, 80)
    assert lines(tmp_path) == []
    table = PIPELINE.table("flow_log")
    for sw in net.switches.values():
        assert [f for f in sw.flows() if f.table == table and f.priority > 0] == []


def test_the_copy_goes_through_the_log_meter_on_every_switch(tmp_path):
    net = lab(tmp_path, ALLOWED)
    table = PIPELINE.table("flow_log")
    for sw in net.switches.values():
        copies = [f for f in sw.flows() if f.table == table and f.priority > 0]
        assert copies and all(f.instructions[0] == ("apply", (ALLOW_COPY,)) for f in copies)
        assert LOG_METER in sw.meters


def test_without_conntrack_a_tcp_syn_is_the_new_connection_and_its_ack_is_not(tmp_path):
    """The stateless firewall alone (no policies: microseg tracks nothing)."""
    net = lab(tmp_path, ALLOWED.replace("policies: [netpol.yaml]\n", ""))
    assert syn(net, X_A, Y_A, 80)
    ack = dict(ipv4_src="10.0.0.1", ipv4_dst="10.0.0.3", ip_proto=6, tcp_src=40000, tcp_dst=80)
    assert Y_A in net.send(X_A, Y_A, 0x0800, **ack, tcp_flags=0x010).hosts
    [line] = lines(tmp_path)
    assert (line["verdict"], line["app"], line["rule"]["line"]) == ("allow", "firewall", 2)
    assert [r["app"] for r in line["rules"]] == ["firewall"]
