"""The topology service answers deterministically: same graph, same paths, same tree."""

from controller.topology import Topology


def square():
    """1-2-3-4-1, two ports per switch for the ring and port 3 for a host."""
    t = Topology()
    for d in (1, 2, 3, 4):
        t.add_switch(d, {1: True, 2: True, 3: True})
    t.add_link(1, 1, 2, 2)
    t.add_link(2, 1, 3, 2)
    t.add_link(3, 1, 4, 2)
    t.add_link(4, 1, 1, 2)
    return t


def test_equal_cost_next_hops_in_a_ring():
    t = square()
    assert t.equal_cost_next_hops(1, 3) == [1, 2]
    assert t.equal_cost_next_hops(1, 2) == [1]
    assert t.shortest_path(1, 2) == [1, 2]


def test_next_hops_form_a_tree_towards_the_destination():
    t = square()
    hops = t.next_hop_ports(3)
    assert set(hops) == {1, 2, 4}
    for sw, port in hops.items():  # following next hops from anywhere reaches 3
        seen = set()
        while sw != 3:
            assert sw not in seen
            seen.add(sw)
            link = next(
                lk for lk in t.links if (sw, port) in ((lk.a, lk.a_port), (lk.b, lk.b_port))
            )
            sw = link.peer_of(sw)
            port = hops.get(sw)


def test_flood_tree_spans_without_a_cycle():
    t = square()
    tree = t.flood_tree()
    assert len(tree) == 3
    assert sum(len(t.tree_ports(d, tree)) for d in (1, 2, 3, 4)) == 6


def test_port_down_removes_link_and_moves_paths():
    t = square()
    before = t.version
    assert t.next_hop_ports(2)[1] == 1
    t.set_port(1, 1, False)
    assert t.version > before
    assert len(t.links) == 3
    assert t.next_hop_ports(2)[1] == 2  # the long way round
    assert t.equal_cost_next_hops(1, 3) == [2]


def test_edge_ports_exclude_links_and_unsettled_ports():
    t = square()
    assert t.edge_ports(1) == set()
    t.settle_port(1, 3)
    t.settle_port(1, 1)
    assert t.edge_ports(1) == {3}


def test_parallel_cables_between_two_switches_are_one_edge_with_both_links():
    """Links could not be sorted (no order), so a second cable raised while discovered."""
    t = Topology()
    for d in (1, 2):
        t.add_switch(d, {1: True, 2: True})
    assert t.add_link(1, 1, 2, 1) and t.add_link(1, 2, 2, 2)
    assert len(t.graph.edges[1, 2]["links"]) == 2 and t.port_towards(1, 2) == 1
