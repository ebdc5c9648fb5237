"""Equal-cost multipath in the fabric: select groups from the topology graph, local failover."""

from collections import Counter

from tests.fakenet import BROADCAST
from tests.unit.test_l2 import MACS, leaf_spine

A, B = MACS[0], MACS[2]  # on leaf 201 and leaf 202


def fabric():
    net = leaf_spine()
    net.start()
    for mac in MACS[:6]:
        net.send(mac, BROADCAST, 0x0806)
    return net


def tcp(net, sport, src=A, dst=B):
    return net.send(
        src,
        dst,
        0x0800,
        ipv4_src="10.0.0.1",
        ipv4_dst="10.0.0.3",
        ip_proto=6,
        tcp_src=sport,
        tcp_dst=80,
    )


def test_leaves_spread_over_every_spine_with_one_group_per_destination_leaf():
    net = fabric()
    leaf = net.switches[201]
    groups = [g for g in leaf.groups.values() if g.type == "select"]
    assert len(groups) == 2  # toward leaf 202 and leaf 203
    assert all([(b.watch_port, b.weight) for b in g.buckets] == [(1, 1), (2, 1)] for g in groups)
    # A spine has one way down to each leaf; only the other spine is several hops away.
    assert [g.group_id & 0xFFFFFF for g in net.switches[101].groups.values()] == [102]
    used = Counter()
    for sport in range(40000, 40064):
        got = tcp(net, sport)
        assert got.hosts == [B]
        used.update(d for d in got.visits if d in (101, 102))
    assert used[101] > 10 and used[102] > 10


def test_a_dead_spine_link_is_bypassed_by_the_leaf_before_the_controller_knows():
    net = fabric()
    net.switches[201].ports[1] = False  # carrier lost; no port-status has reached the core
    net.switches[101].ports[1] = False
    for sport in range(40000, 40032):
        got = tcp(net, sport)
        assert got.hosts == [B] and 101 not in got.visits


def test_the_controller_then_takes_the_dead_link_out_of_every_group():
    net = fabric()
    net.set_link(201, 1, False)
    assert (
        all([b.watch_port for b in g.buckets] == [2] for g in net.switches[201].groups.values())
        or not net.switches[201].groups
    )
    # Leaf 202 can reach leaf 201 only through spine 2 now: no group, a plain output.
    assert not [g for g in net.switches[202].groups.values() if g.group_id & 0xFFFFFF == 201]
    for sport in range(40000, 40032):
        assert tcp(net, sport, B, A).hosts == [A]
