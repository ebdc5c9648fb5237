"""The one topology service: switches, links, ports and hosts in a networkx graph.

Every app asks it for paths, equal-cost sets and the flood tree, so they all agree. Answers are
deterministic (neighbours are visited in sorted order): the same network always yields the same
flows, which is what lets a restarted controller find nothing to change.

>>> t = Topology()
>>> for d in (1, 2, 3):
...     t.add_switch(d, {1: True, 2: True, 3: True})
>>> t.add_link(1, 1, 2, 1); t.add_link(2, 2, 3, 1); t.add_link(3, 2, 1, 2)
True
True
True
>>> t.next_hop_ports(3)
{1: 2, 2: 2}
>>> sorted(t.tree_ports(1)), sorted(t.tree_ports(2))
([1, 2], [1])
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import networkx as nx


@dataclass(frozen=True, order=True)
class Link:
    """A switch-to-switch link, stored once with the lower dpid first."""

    a: int
    a_port: int
    b: int
    b_port: int

    @property
    def ends(self) -> frozenset[tuple[int, int]]:
        """Its two (dpid, port) ends."""
        return frozenset(((self.a, self.a_port), (self.b, self.b_port)))

    def port_on(self, dpid: int) -> int:
        """The port of this link on switch `dpid` (one of its ends)."""
        return self.a_port if dpid == self.a else self.b_port

    def peer_of(self, dpid: int) -> int:
        """The switch at the other end from `dpid`."""
        return self.b if dpid == self.a else self.a


def _link(d1: int, p1: int, d2: int, p2: int) -> Link:
    return Link(d1, p1, d2, p2) if (d1, p1) <= (d2, p2) else Link(d2, p2, d1, p1)


class Topology:
    """Switch nodes are dpids (int), host nodes MAC strings; edges carry their links."""

    def __init__(self) -> None:
        self.graph = nx.Graph()
        self.ports: dict[int, dict[int, bool]] = {}  # dpid -> port -> live
        self.links: set[Link] = set()
        self.settled: set[tuple[int, int]] = set()  # ports past discovery's probation
        self.version = 0  # bumped on every change that can move a path or the flood tree
        self._cache_version = -1
        self._switch_graph = nx.Graph()
        self._next_hops: dict[int, dict[int, int]] = {}
        self._hops_to: dict[int, dict[int, int]] = {}  # dst -> switch -> hops to dst
        self._edges: dict[int, set[int]] = {}

    # --- switches and ports --------------------------------------------------------------------

    def add_switch(self, dpid: int, ports: dict[int, bool]) -> None:
        """Add switch `dpid` with its ports (port number to live), replacing any it had."""
        self.graph.add_node(dpid, kind="switch")
        self.ports[dpid] = dict(ports)
        self.version += 1

    def set_port(self, dpid: int, port: int, live: bool) -> bool:
        """Record a port's liveness; a dead port takes its link down. True if anything changed."""
        ports = self.ports.setdefault(dpid, {})
        changed = ports.get(port) != live
        ports[port] = live
        if not live:
            self.settled.discard((dpid, port))
            on_port = [lk for lk in self.links if lk.port_on(dpid) == port and dpid in (lk.a, lk.b)]
            for link in on_port:
                self._drop_link(link)
                changed = True
        if changed:
            self.version += 1
        return changed

    def remove_port(self, dpid: int, port: int) -> None:
        """Port deleted: it goes down (taking its link with it) and is forgotten."""
        self.set_port(dpid, port, False)
        self.ports.get(dpid, {}).pop(port, None)

    def settle_port(self, dpid: int, port: int) -> None:
        """Discovery had time to see a neighbour on this port; if none showed up it is an edge."""
        if (dpid, port) not in self.settled and self.ports.get(dpid, {}).get(port):
            self.settled.add((dpid, port))
            self.version += 1

    def edge_ports(self, dpid: int) -> set[int]:
        """Live, settled ports with no switch behind: where hosts live. Asked per packet-in."""
        self.switch_graph()
        if dpid not in self._edges:
            isl = self.isl_ports(dpid)
            self._edges[dpid] = {
                p for p in self.live_ports(dpid) if (dpid, p) in self.settled and p not in isl
            }
        return self._edges[dpid]

    def switches(self) -> list[int]:
        """Every known dpid, sorted."""
        return sorted(self.ports)

    def live_ports(self, dpid: int) -> list[int]:
        """The live ports of `dpid`, sorted ([] for an unknown switch)."""
        return sorted(p for p, live in self.ports.get(dpid, {}).items() if live)

    # --- links ---------------------------------------------------------------------------------

    def add_link(self, d1: int, p1: int, d2: int, p2: int) -> bool:
        """Add a link seen by discovery. True if it is new (a path or the tree may have moved)."""
        link = _link(d1, p1, d2, p2)
        if link in self.links:
            return False
        if not (self.ports.get(d1, {}).get(p1) and self.ports.get(d2, {}).get(p2)):
            return False
        # A port has one peer: a newer sighting replaces a stale link on either port.
        for old in [lk for lk in self.links if lk.ends & link.ends]:
            self._drop_link(old)
        self.links.add(link)
        self._rebuild_edge(link.a, link.b)
        self.version += 1
        return True

    def remove_link(self, link: Link) -> None:
        """Remove `link` if present (discovery stopped hearing it)."""
        if link in self.links:
            self._drop_link(link)
            self.version += 1

    def _drop_link(self, link: Link) -> None:
        self.links.discard(link)
        self._rebuild_edge(link.a, link.b)

    def _rebuild_edge(self, a: int, b: int) -> None:
        """Parallel links collapse into one graph edge that remembers every port pair."""
        parallel = sorted(lk for lk in self.links if {lk.a, lk.b} == {a, b})
        if parallel:
            self.graph.add_edge(a, b, links=parallel)
        elif self.graph.has_edge(a, b):
            self.graph.remove_edge(a, b)

    def isl_ports(self, dpid: int) -> set[int]:
        """Ports of `dpid` that lead to another switch."""
        return {lk.port_on(dpid) for lk in self.links if dpid in (lk.a, lk.b)}

    def port_towards(self, dpid: int, neighbour: int) -> int:
        """The port `dpid` uses to reach an adjacent switch (the lowest when links are parallel)."""
        return self.graph.edges[dpid, neighbour]["links"][0].port_on(dpid)

    # --- hosts ---------------------------------------------------------------------------------

    def add_host(self, mac: str, dpid: int, port: int) -> None:
        """Host `mac` sits at (dpid, port); a move replaces where it was."""
        self.graph.add_node(mac, kind="host", dpid=dpid, port=port)
        for old in list(self.graph.neighbors(mac)):
            self.graph.remove_edge(mac, old)
        self.graph.add_edge(mac, dpid, port=port)

    def remove_host(self, mac: str) -> None:
        """Forget host `mac` (nothing if unknown)."""
        if self.graph.has_node(mac):
            self.graph.remove_node(mac)

    def hosts(self) -> dict[str, tuple[int, int]]:
        """Every host: MAC to its (dpid, port)."""
        return {
            n: (d["dpid"], d["port"])
            for n, d in self.graph.nodes(data=True)
            if d.get("kind") == "host"
        }

    # --- questions apps ask --------------------------------------------------------------------

    def switch_graph(self) -> nx.Graph:
        """Switches and links only, cached until the topology changes (hosts never change it)."""
        if self._cache_version != self.version:
            g = nx.Graph()
            g.add_nodes_from(self.switches())
            g.add_edges_from((a, b, d) for a, b, d in self.graph.edges(data=True) if "links" in d)
            self._switch_graph, self._next_hops, self._edges, self._hops_to = g, {}, {}, {}
            self._cache_version = self.version
        return self._switch_graph

    def _bfs_parents(self, root: int) -> dict[int, int]:
        """Parent of every switch on a BFS tree from `root`, neighbours taken in sorted order."""
        g = self.switch_graph()
        parents: dict[int, int] = {}
        if root not in g:
            return parents
        seen, queue = {root}, deque([root])
        while queue:
            node = queue.popleft()
            for nb in sorted(g.neighbors(node)):
                if nb not in seen:
                    seen.add(nb)
                    parents[nb] = node
                    queue.append(nb)
        return parents

    def next_hop_ports(self, dst: int) -> dict[int, int]:
        """For every switch that can reach `dst`, the port of its next hop on a shortest path.

        The answers form one tree rooted at `dst`, so forwarding by them can never loop.
        """
        self.switch_graph()
        if dst not in self._next_hops:
            self._next_hops[dst] = {
                sw: self.port_towards(sw, parent) for sw, parent in self._bfs_parents(dst).items()
            }
        return self._next_hops[dst]

    def shortest_path(self, src: int, dst: int) -> list[int]:
        """Switches on one shortest path from `src` to `dst`, both included.

        Raises
        ------
        networkx.NetworkXNoPath
            No path between them.
        networkx.NodeNotFound
            `src` is not a known switch.
        """
        return nx.shortest_path(self.switch_graph(), src, dst)

    def equal_cost_next_hops(self, src: int, dst: int) -> list[int]:
        """Ports of `src` that start some shortest path to `dst` (for select groups): towards
        each neighbour one hop closer to `dst`. One breadth-first search per `dst`, cached
        until the topology changes, answers every `src` (an app asks for every pair)."""
        g = self.switch_graph()
        if src == dst or src not in g or dst not in g:
            return []
        if dst not in self._hops_to:
            self._hops_to[dst] = nx.single_source_shortest_path_length(g, dst)
        hops = self._hops_to[dst]
        if src not in hops:
            return []
        closer = hops[src] - 1
        return sorted(
            {self.port_towards(src, nb) for nb in g.neighbors(src) if hops.get(nb) == closer}
        )

    def flood_tree(self) -> set[Link]:
        """A spanning tree over each connected part, rooted at its lowest dpid."""
        tree: set[Link] = set()
        for component in nx.connected_components(self.switch_graph()):
            root = min(component)
            for child, parent in self._bfs_parents(root).items():
                tree.add(self.graph.edges[child, parent]["links"][0])
        return tree

    def tree_ports(self, dpid: int, tree: set[Link] | None = None) -> set[int]:
        """Ports of `dpid` on the flood tree."""
        tree = self.flood_tree() if tree is None else tree
        return {lk.port_on(dpid) for lk in tree if dpid in (lk.a, lk.b)}
