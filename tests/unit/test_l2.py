"""L2 learning end to end over fake switches: loops, learning, moves, ageing, failures, restarts."""

import pytest
from os_ken.ofproto import ofproto_v1_3 as ofp

from apps.l2_learning import COOKIE, L2Learning
from controller.config import Config
from controller.core import Core
from controller.flows import flow
from tests.fakenet import BROADCAST, FakeNetwork

MACS = [f"00:00:00:00:00:{i:02x}" for i in range(1, 17)]


def core_with_l2():
    core = Core()
    core.add_app(L2Learning)
    core.configure(Config(), 0.0)
    return core


def leaf_spine(core=None, spines=2, leaves=3, hosts_per_leaf=2):
    """Spines 101.., leaves 201..; leaf port s links spine s; hosts from port spines+1."""
    net = FakeNetwork(core or core_with_l2())
    for s in range(1, spines + 1):
        net.add_switch(100 + s, leaves)
    host = 0
    for leaf in range(1, leaves + 1):
        net.add_switch(200 + leaf, spines + hosts_per_leaf)
        for s in range(1, spines + 1):
            net.link(200 + leaf, s, 100 + s, leaf)
        for h in range(hosts_per_leaf):
            net.add_host(MACS[host], 200 + leaf, spines + 1 + h)
            host += 1
    return net


@pytest.fixture
def net():
    n = leaf_spine()
    n.start()
    return n


def test_all_switches_become_ready_and_links_are_found(net):
    assert all(net.core.ready(d) for d in net.switches)
    assert len(net.core.topology.links) == 6


def test_broadcast_on_a_looped_fabric_reaches_every_host_once_without_a_storm(net):
    got = net.send(MACS[0], BROADCAST, 0x0806)
    assert sorted(got.hosts) == sorted(MACS[1:6])
    assert got.max_visits == 1  # each switch sees the frame once: flooding follows a tree


def test_every_pair_talks_by_unicast_after_one_exchange(net):
    for a in MACS[:6]:
        for b in MACS[:6]:
            if a != b:
                assert net.converse(a, b), (a, b)


def test_hosts_are_learned_only_at_edge_ports(net):
    net.converse(MACS[0], MACS[5])
    l2 = net.core.apps[0]
    assert l2.hosts == {MACS[0]: (201, 3), MACS[5]: (203, 4)}


def test_a_known_destination_does_not_flood(net):
    net.converse(MACS[0], MACS[5])
    got = net.send(MACS[0], MACS[5])
    assert got.hosts == [MACS[5]]
    assert set(got.visits) == {201, 101, 203} or set(got.visits) == {201, 102, 203}


def test_learning_flows_are_idempotent_no_message_for_a_known_host(net):
    net.converse(MACS[0], MACS[2])
    before = sum(net.messages_sent.values())
    net.converse(MACS[0], MACS[2])
    assert sum(net.messages_sent.values()) == before


def test_host_move_follows_the_host(net):
    net.converse(MACS[0], MACS[5])
    # MACS[0] unplugs from leaf 201 and shows up on leaf 202's spare port; its old port stays
    # up, so the move is held until the old location proves silent (tests/unit/test_l2_moves.py).
    net.plug(MACS[0], 202, 5)
    net.converse(MACS[0], MACS[5])
    net.advance(3.5)
    assert net.core.apps[0].hosts[MACS[0]] == (202, 5)
    assert net.send(MACS[5], MACS[0]).hosts == [MACS[0]]


def test_idle_host_ages_out_when_the_switch_removes_its_entry(net):
    net.converse(MACS[0], MACS[5])
    l2 = net.core.apps[0]
    learned = next(
        f
        for f in net.switches[201].flows()
        if f.cookie == COOKIE and f.priority == 200 and dict(f.match).get("eth_src") == MACS[0]
    )
    assert learned.idle_timeout == 300
    net.switches[201].tables[0] = [e for e in net.switches[201].tables[0] if e.flow != learned]
    net.deliver(
        net.core.flow_removed(
            201,
            flow(learned.table, learned.priority, dict(learned.match), cookie=COOKIE),
            ofp.OFPRR_IDLE_TIMEOUT,
            net.now,
        )
    )
    assert MACS[0] not in l2.hosts
    assert not any(
        dict(f.match).get("eth_dst") == MACS[0] for sw in net.switches.values() for f in sw.flows()
    )


def test_link_down_reroutes_known_paths(net):
    net.converse(MACS[0], MACS[5])
    first = net.send(MACS[0], MACS[5])
    spine = next(d for d in first.visits if d < 200)
    net.set_link(201, spine - 100, False)
    again = net.send(MACS[0], MACS[5])
    assert again.hosts == [MACS[5]] and spine not in again.visits
    # Floods still reach everyone and still do not loop.
    got = net.send(MACS[1], BROADCAST, 0x0806)
    assert sorted(got.hosts) == sorted(set(MACS[:6]) - {MACS[1]}) and got.max_visits == 1


def test_link_back_up_is_rediscovered(net):
    net.set_link(201, 1, False)
    assert len(net.core.topology.links) == 5
    net.set_link(201, 1, True)
    net.advance(2.0)
    assert len(net.core.topology.links) == 6


def test_restart_repairs_instead_of_wiping(net):
    for a, b in [(MACS[0], MACS[5]), (MACS[2], MACS[3]), (MACS[1], MACS[4])]:
        net.converse(a, b)
    tables_before = {d: sorted(sw.flows(), key=repr) for d, sw in net.switches.items()}
    # A new controller process: a fresh core, the same switches with their flows.
    net.core = core_with_l2()
    net.connected.clear()
    net.start()
    assert {d: sorted(sw.flows(), key=repr) for d, sw in net.switches.items()} == tables_before
    assert net.send(MACS[0], MACS[5]).hosts == [MACS[5]]


def test_restart_sends_no_flow_changes_at_all(net):
    net.converse(MACS[0], MACS[5])
    before = {d: len(sw.received) for d, sw in net.switches.items()}
    net.core = core_with_l2()
    net.connected.clear()
    net.start()
    sent = [m for d, sw in net.switches.items() for m in sw.received[before[d] :]]
    assert not [m for m in sent if type(m).__name__ in ("OFPFlowMod", "OFPGroupMod")]


def test_foreign_flows_are_removed_on_connect():
    net = leaf_spine()
    stray = flow(2, 7, {"in_port": 1})
    from controller.flows import flow_mod

    switch = net.switches[201]
    switch.contract = None  # left by another controller: no contract of ours holds for it
    switch.apply([flow_mod(stray)])
    switch.contract = net.core.pipeline.check
    net.start()
    assert stray not in net.switches[201].flows()


def test_switch_disconnect_keeps_serving_the_others(net):
    net.converse(MACS[0], MACS[2])
    net.disconnect(101)
    net.advance(30.0)
    assert net.converse(MACS[0], MACS[2])
    assert net.converse(MACS[1], MACS[3])


def test_port_flapping_converges(net):
    for _ in range(5):
        net.set_link(201, 1, False)
        net.set_link(201, 1, True)
    net.advance(2.0)
    assert len(net.core.topology.links) == 6
    assert net.converse(MACS[0], MACS[5])


def test_mac_age_comes_from_config():
    core = Core()
    l2 = core.add_app(L2Learning)
    core.configure(Config(data={"l2": {"mac_age": 42}}), 0.0)
    assert l2.mac_age == 42


def test_bad_reload_changes_nothing():
    from controller.config import ConfigError

    core = core_with_l2()
    l2 = core.apps[0]
    core.configure(Config(data={"l2": {"mac_age": 42}}), 0.0)

    def broken():
        raise ConfigError("lab.yaml", 3, "l2.mac_age", "must be positive")

    assert core.reload(broken, 1.0) == {}
    assert l2.mac_age == 42 and core.config.section("l2") == {"mac_age": 42}


def test_metrics_report_switches_links_hosts_flows_and_packet_ins(net):
    net.converse(MACS[0], MACS[5])
    net.advance(1.0)
    reg = net.core.metrics.registry
    assert reg.get_sample_value("osken_switches") == 5
    assert reg.get_sample_value("osken_links") == 6
    assert reg.get_sample_value("osken_hosts") == 2
    leaf = f"{201:016x}"
    for table in range(net.core.pipeline.n_tables):
        flows = reg.get_sample_value("osken_flows", {"dpid": leaf, "table": str(table)})
        assert flows == net.switches[201].flow_count(table)
    assert reg.get_sample_value("osken_packet_ins_total", {"dpid": leaf}) >= 1
    sent = reg.get_sample_value(
        "osken_of_messages_sent_total", {"dpid": leaf, "type": "WireFlowMod"}
    )
    assert sent == sum(type(m).__name__ == "WireFlowMod" for m in net.switches[201].received)


def test_packet_ins_are_capped_by_the_controller_meter():
    from os_ken.ofproto import ofproto_v1_3 as ofp

    core = Core()
    core.add_app(L2Learning)
    core.configure(Config(data={"controller": {"packet_in_rate": 300, "packet_in_burst": 30}}), 0)
    net = leaf_spine(core)
    net.start()
    for sw in net.switches.values():
        meter = sw.meters[ofp.OFPM_CONTROLLER]
        assert (meter.unit, meter.rate, meter.burst) == ("pktps", 300, 30)
    net.deliver(core.configure(Config(data={"controller": {"packet_in_rate": 0}}), net.now))
    assert all(ofp.OFPM_CONTROLLER not in sw.meters for sw in net.switches.values())
