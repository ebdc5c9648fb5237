"""Service chains on fake switches: through the VNFs in order, back the same way, fail closed."""

import pytest

from apps.chains import ServiceChains
from apps.l2_learning import L2Learning
from controller.config import ConfigError, load_config
from controller.core import Core
from tests.fakenet import BROADCAST, FakeNetwork
from topologies.vnflab import CHAIN, ENDPOINTS
from vnf.naming import port_name

C, S, OTHER = "00:00:00:00:00:01", "00:00:00:00:00:02", "00:00:00:00:00:03"
IP = {C: "10.0.0.1", S: "10.0.0.2", OTHER: "10.0.0.3"}
ONE_HOP = CHAIN  # the Mininet lab's chain: client -> web on 80, 443, 22 through the firewall
TWO_HOPS = CHAIN.replace("through: [virtual-firewall]", "through: [virtual-firewall, ids]")
FW = "virtual-firewall"


def no_ssh(pkt):
    return pkt.get("tcp_dst") != 22


def make(tmp_path, config: str = ONE_HOP):
    """Switch 1: client, fw replica 0 (ports 3/4), ids replica 0 (5/6). Switch 2: server, fw
    replica 1 (3/4). One link between them (port 1)."""
    cfg = tmp_path / "lab.yaml"
    cfg.write_text(ENDPOINTS + config)
    core = Core()
    core.add_app(L2Learning)
    app = core.add_app(ServiceChains)
    core.configure(load_config(str(cfg)), 1000.0)
    net = FakeNetwork(core)
    net.now = 1000.0
    for dpid in (1, 2):
        net.add_switch(dpid, 6)
    net.link(1, 1, 2, 1)
    net.add_host(C, 1, 2)
    net.add_host(S, 2, 2)
    net.add_host(OTHER, 2, 6)

    def names(deployment, replica):
        return port_name(deployment, replica, "a"), port_name(deployment, replica, "b")

    net.add_bump(1, 3, 4, names(FW, 0), no_ssh)
    net.add_bump(2, 3, 4, names(FW, 1), no_ssh)
    net.add_bump(1, 5, 6, names("ids", 0))
    net.start()
    for mac in (C, S, OTHER):
        net.send(mac, BROADCAST, 0x0806)
    return net, app, cfg


def tcp(net, src, dst, dport=80, sport=40000, reply=False):
    a, b = (dst, src) if reply else (src, dst)
    fields = {"tcp_src": dport, "tcp_dst": sport} if reply else {"tcp_src": sport, "tcp_dst": dport}
    return net.send(a, b, 0x0800, ipv4_src=IP[a], ipv4_dst=IP[b], ip_proto=6, **fields)


def test_the_class_goes_through_a_replica_and_its_replies_come_back_through_one(tmp_path):
    net, app, _ = make(tmp_path)
    there = tcp(net, C, S)
    assert there.hosts == [S] and len(there.bumps) == 1
    back = tcp(net, C, S, reply=True)
    assert back.hosts == [C] and len(back.bumps) == 1
    assert all("vlan_vid" not in f for _, f in there.frames + back.frames)
    assert app.replica_gauge.labels(FW)._value.get() == 2


def test_the_vnf_decides_and_other_traffic_takes_the_direct_path(tmp_path):
    net, _, _ = make(tmp_path)
    assert tcp(net, C, S, dport=22).hosts == []  # the firewall VNF drops ssh
    direct = tcp(net, C, OTHER)  # not in the class
    assert direct.hosts == [OTHER] and direct.bumps == []
    assert tcp(net, C, S, dport=8080).bumps == []  # a port outside the class


def test_flows_spread_over_replicas_and_a_remote_one_is_reached_with_a_tag(tmp_path):
    net, _, _ = make(tmp_path)
    used = {tcp(net, C, S, sport=s).bumps[0][0] for s in range(40000, 40040)}
    assert used == {1, 2}  # both replicas, the one on switch 2 through a VLAN tag


def test_a_stopped_replica_is_skipped_and_a_chain_with_none_left_fails_closed(tmp_path):
    net, _, _ = make(tmp_path)
    for port in (3, 4):  # replica 0's container stops: its ports go
        net.set_link(1, port, False)
    got = [tcp(net, C, S, sport=s) for s in range(40000, 40020)]
    assert all(g.hosts == [S] and g.bumps[0][0] == 2 for g in got)
    for port in (3, 4):
        net.set_link(2, port, False)
    assert tcp(net, C, S).hosts == []  # never around the firewall
    assert tcp(net, C, OTHER).hosts == [OTHER]


def test_two_hops_in_order_and_back_in_reverse(tmp_path):
    net, _, _ = make(tmp_path, TWO_HOPS)
    for port in (3, 4):  # keep fw replica 1 (switch 2) and ids replica 0 (switch 1) only
        net.set_link(1, port, False)
    there = tcp(net, C, S)
    assert there.hosts == [S]
    assert [d for d, _ in there.bumps] == [2, 1]  # fw (on switch 2), then ids (on switch 1)
    back = tcp(net, C, S, reply=True)
    assert back.hosts == [C] and [d for d, _ in back.bumps] == [1, 2]  # ids, then fw


def test_removing_the_chain_restores_the_direct_path(tmp_path):
    net, _, cfg = make(tmp_path)
    cfg.write_text(ENDPOINTS)
    net.deliver(net.core.reload(lambda: load_config(str(cfg)), net.now))
    got = tcp(net, C, S, dport=22)
    assert got.hosts == [S] and got.bumps == []


@pytest.mark.parametrize(
    ("chains", "message"),
    [
        ("chains:\n  - {name: x, through: [fw, fw]}\n", "once per chain"),
        ("chains:\n  - {name: x, from_labels: {role: nobody}, through: [fw]}\n", "no endpoint"),
        ("chains:\n  - {name: x, to: [10.0.0.300/32], through: [fw]}\n", "not an IPv4 CIDR"),
        ("chains:\n  - {name: x, through: []}\n", "should be non-empty"),
    ],
)
def test_bad_chains_are_refused_and_located(tmp_path, chains, message):
    cfg = tmp_path / "lab.yaml"
    cfg.write_text(ENDPOINTS + chains)
    core = Core()
    core.add_app(ServiceChains)
    with pytest.raises(ConfigError) as err:
        core.parse(load_config(str(cfg)))
    assert message in str(err.value) and err.value.line is not None


def test_every_app_sends_on_to_the_next_stage_so_the_chains_stage_is_never_skipped():
    from apps.microseg import Microseg

    core = Core()
    ms = core.add_app(Microseg)
    assert ms.compiler.next == core.pipeline.table("flow_log")  # allowed connections' log
    assert core.pipeline.following("flow_log") == "chains"


def test_a_frame_in_both_directions_of_a_class_is_forward_not_the_switchs_choice(tmp_path):
    """Any client to the server's 80: a frame from the server's port 80 to another server's 80
    is both a request and a reply. Equal priorities made the switch choose (found by fuzzing);
    forward comes first."""
    anyone = CHAIN.replace("    from_labels: {role: client}\n", "")
    net, app, _ = make(tmp_path, anyone)  # the strict fake switch refuses equal-priority overlaps
    classify = [
        f
        for f in net.switches[1].flows()
        if f.table == app.compiler.table and "in_port" not in dict(f.match)
    ]
    forward = {f.priority for f in classify if dict(f.match).get("tcp_dst") == 80}
    replies = {f.priority for f in classify if dict(f.match).get("tcp_src") == 80}
    assert forward and replies and min(forward) > max(replies)


def test_a_class_from_anywhere_matches_no_source_field(tmp_path):
    """0.0.0.0/0 is no match at all (Open vSwitch reports a zero-mask field as absent, so a
    restarted controller would not recognise a flow that spelled it out)."""
    anywhere = CHAIN.replace("    from_labels: {role: client}\n", "    from: [0.0.0.0/0]\n")
    net, app, _ = make(tmp_path, anywhere)
    chains = [dict(f.match) for f in net.switches[1].flows() if f.table == app.compiler.table]
    forward = [m for m in chains if "tcp_dst" in m]
    replies = [m for m in chains if "tcp_src" in m]
    assert forward and replies
    assert not any("ipv4_src" in m for m in forward) and not any("ipv4_dst" in m for m in replies)
