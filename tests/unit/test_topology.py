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


def fat_tree(k: int) -> Topology:
    """The k-ary fat-tree's switches and links (topologies/fattree.py's wiring, no hosts)."""
    half, t = k // 2, Topology()
    cores = [0x100 + i for i in range(1, half * half + 1)]
    wires: list[tuple[int, int]] = []
    for pod in range(1, k + 1):
        aggs = [0x200 + pod * 16 + i for i in range(1, half + 1)]
        edges = [0x300 + pod * 16 + i for i in range(1, half + 1)]
        for i, agg in enumerate(aggs):
            wires += [(agg, core) for core in cores[i * half : (i + 1) * half]]
            wires += [(agg, edge) for edge in edges]
    ports: dict[int, int] = {}
    ends = []
    for a, b in wires:
        ports[a], ports[b] = ports.get(a, 0) + 1, ports.get(b, 0) + 1
        ends.append((a, ports[a], b, ports[b]))
    for dpid, n in ports.items():
        t.add_switch(dpid, {p: True for p in range(1, n + 1)})
    for end in ends:
        t.add_link(*end)
    return t


def test_equal_cost_next_hops_are_the_first_hops_of_every_shortest_path():
    """The same answer as enumerating the shortest paths, on a fat-tree (many equal paths), a
    network with parallel cables and a switch that nothing reaches."""
    import networkx as nx

    cabled = square()
    cabled.add_switch(5, {1: True, 2: True})
    cabled.add_switch(6, {1: True})  # alone
    cabled.add_link(5, 1, 3, 3)
    cabled.add_link(5, 2, 1, 3)
    for t in (fat_tree(4), cabled):
        g = t.switch_graph()
        for dst in t.switches():
            for src in t.switches():
                try:
                    paths = list(nx.all_shortest_paths(g, src, dst)) if src != dst else []
                except nx.NetworkXNoPath:
                    paths = []
                want = sorted({t.port_towards(src, p[1]) for p in paths})
                assert t.equal_cost_next_hops(src, dst) == want, (src, dst)


def test_every_pair_costs_one_graph_search_per_destination(monkeypatch):
    """The L2 app asks for every (switch, destination) pair on every topology change: a
    search per pair made it 0.32 s per change on a fat-tree k=8 (80 switches), and discovery
    makes hundreds of changes."""
    import networkx as nx

    import controller.topology as topology

    searches = []

    class Counting:
        def __getattr__(self, name):
            found = getattr(nx, name)
            if callable(found) and "path" in name:
                return lambda *a, **kw: searches.append(name) or found(*a, **kw)
            return found

    t = fat_tree(8)
    monkeypatch.setattr(topology, "nx", Counting())
    pairs = [(s, d) for d in t.switches() for s in t.switches()]
    multipath = sum(len(t.equal_cost_next_hops(s, d)) > 1 for s, d in pairs)
    assert multipath == 3504  # of 6,400 pairs: several equal next hops
    assert len(searches) <= len(t.switches())
