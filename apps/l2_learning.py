"""L2 learning over the whole fabric, safe on looped topologies.

Run alone: ``osken-manager apps/l2_learning.py`` gives full connectivity.

- Sources are learned only at edge ports (no switch behind them), from a packet-in that the
  classify stage sends for an unknown (port, source MAC). The learned entry has an idle timeout,
  so a silent host ages out; the switch tells us and its flows go.
- Each known MAC gets one forwarding entry on every switch, pointing along shortest paths to its
  switch: paths across the fabric are installed before the first reply comes back. Where a
  switch has several equal-cost next hops (leaf-spine, fat-tree) the entry points at a select
  group over all of them, built from the topology graph, so flows spread over every path; each
  bucket watches its port, so a failed link is bypassed by the switch itself at once, before
  the controller has recomputed anything.
- Broadcast and unknown destinations flood along one spanning tree, never around a loop.
- A host seen at a new edge port moves; a link that goes down moves the paths and the tree.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from types import MappingProxyType

from os_ken.ofproto import ofproto_v1_3 as ofp

from controller.app import PacketIn, SuiteApp
from controller.flows import (
    Bucket,
    Flow,
    apply,
    flow,
    group,
    group_action,
    output,
    to_controller,
)
from controller.pipeline import REGISTRY

LOG = logging.getLogger("osken_suite.l2")

COOKIE = REGISTRY.cookie("l2_learning")
LEARNED_PRIORITY = 200  # classify: (in_port, eth_src) known here: carry on
EDGE_PRIORITY = 100  # classify: anything else from an edge port: tell us, carry on
HOST_PRIORITY = 100  # forwarding: eth_dst known: next hop
FLOOD_PRIORITY = 10  # forwarding: by in_port, out along the tree and to edge ports
PACKET_IN_BYTES = 128  # headers are all we need to learn
DEFAULT_MAC_AGE = 300
ECMP_GROUP_BASE = REGISTRY.get("group", "l2_learning").first  # + the far switch's dpid (24 bits)
L2_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"mac_age": {"type": "integer", "minimum": 1, "maximum": 65535}},
}


class L2Learning(SuiteApp):
    name = "l2_learning"
    config_section = "l2"
    config_schemas = MappingProxyType({"l2": L2_SCHEMA})
    cookie = COOKIE

    def __init__(self, core) -> None:
        super().__init__(core)
        self.hosts: dict[str, tuple[int, int]] = {}
        self._ecmp: dict[tuple[int, int], int] = {}  # (switch, destination switch) -> group
        self.mac_age = DEFAULT_MAC_AGE
        self.classify = core.pipeline.table("classify")
        self._go_on = core.pipeline.go_on("classify")
        self.forwarding = core.pipeline.table("forwarding")

    def configure(self, section, now: float) -> None:
        mac_age = (section or {}).get("mac_age", DEFAULT_MAC_AGE)
        if mac_age != self.mac_age:
            self.mac_age = mac_age
            self._install_all()

    # --- state from the switches ---------------------------------------------------------------

    def on_switch_synced(self, dpid: int, installed: list[Flow], now: float) -> None:
        """Recover hosts from our learned entries, so a restart keeps every path as it was."""
        for f in installed:
            if f.cookie == COOKIE and f.table == self.classify and f.priority == LEARNED_PRIORITY:
                match = f.match_dict()
                if "eth_src" in match and "in_port" in match:
                    self._learn(match["eth_src"], dpid, match["in_port"])

    def on_packet_in(self, pkt: PacketIn, now: float) -> None:
        if pkt.cookie != COOKIE or pkt.table_id != self.classify:
            return
        if int(pkt.eth_src[:2], 16) & 1:  # multicast sources are never hosts
            return
        location = (pkt.dpid, pkt.in_port)
        if self.hosts.get(pkt.eth_src) == location:
            return  # already learned; its entry is on the way
        if pkt.in_port not in self.topology.edge_ports(pkt.dpid):
            return
        old = self.hosts.get(pkt.eth_src)
        if old:
            LOG.info("host %s moved from %016x:%d to %016x:%d", pkt.eth_src, *old, *location)
        self._learn(pkt.eth_src, *location)
        self._install_host(pkt.eth_src, self.topology.next_hop_ports(pkt.dpid))

    def on_flow_removed(self, dpid: int, removed: Flow, reason: int, now: float) -> None:
        if removed.cookie != COOKIE or removed.table != self.classify:
            return
        match = removed.match_dict()
        mac = match.get("eth_src")
        if mac and self.hosts.get(mac) == (dpid, match.get("in_port")):
            LOG.info("host %s aged out at %016x:%d", mac, dpid, match["in_port"])
            self._forget(mac)

    def on_topology_change(self, now: float) -> None:
        for mac, (dpid, port) in list(self.hosts.items()):
            if port not in self.topology.live_ports(dpid) or port in self.topology.isl_ports(dpid):
                self._forget(mac)
        self._install_all()

    # --- desired flows -------------------------------------------------------------------------

    def _learn(self, mac: str, dpid: int, port: int) -> None:
        self.hosts[mac] = (dpid, port)
        self.topology.add_host(mac, dpid, port)

    def _forget(self, mac: str) -> None:
        self.hosts.pop(mac, None)
        self.topology.remove_host(mac)
        self.desired.put(("l2", "host", mac), {})

    def _install_all(self) -> None:
        self._install_flood()
        self._install_multipath()
        trees: dict[int, dict[int, int]] = {}
        for mac, (dpid, _port) in self.hosts.items():
            if dpid not in trees:
                trees[dpid] = self.topology.next_hop_ports(dpid)
            self._install_host(mac, trees[dpid])

    def _install_multipath(self) -> None:
        """Per switch and destination switch with several equal-cost next hops: a select
        group over them (named after the destination), each bucket watching its port."""
        self._ecmp: dict[tuple[int, int], int] = {}
        groups: dict[int, list] = defaultdict(list)
        switches = self.topology.switches()
        if len({d & 0xFFFFFF for d in switches}) != len(switches):
            LOG.error("dpids differ only above their low 24 bits: no multipath groups")
            switches = []
        for dst in switches:
            for src in switches:
                ports = self.topology.equal_cost_next_hops(src, dst)
                if len(ports) > 1:
                    gid = ECMP_GROUP_BASE + (dst & 0xFFFFFF)
                    buckets = [Bucket((output(p),), weight=1, watch_port=p) for p in ports]
                    groups[src].append(group(gid, "select", buckets))
                    self._ecmp[(src, dst)] = gid
        self.desired.put_groups(("l2", "ecmp"), groups)

    def _install_host(self, mac: str, next_hops: dict[int, int]) -> None:
        """The learned entry at the host's port, and its forwarding entry on every switch."""
        dpid, port = self.hosts[mac]
        flows: dict[int, list[Flow]] = defaultdict(list)
        flows[dpid].append(
            flow(
                self.classify,
                LEARNED_PRIORITY,
                {"in_port": port, "eth_src": mac},
                self._go_on,
                cookie=COOKIE,
                idle_timeout=self.mac_age,
                flags=ofp.OFPFF_SEND_FLOW_REM,
            )
        )
        flows[dpid].append(self._to(mac, output(port)))
        for switch, out_port in next_hops.items():
            gid = self._ecmp.get((switch, dpid))
            flows[switch].append(self._to(mac, group_action(gid) if gid else output(out_port)))
        self.desired.put(("l2", "host", mac), flows)

    def _to(self, mac: str, action) -> Flow:
        return flow(self.forwarding, HOST_PRIORITY, {"eth_dst": mac}, apply(action), cookie=COOKIE)

    def _install_flood(self) -> None:
        """Per switch: edge ports report unknown sources; floods follow the tree."""
        tree = self.topology.flood_tree()
        flows: dict[int, list[Flow]] = {}
        for dpid in self.topology.switches():
            edge = self.topology.edge_ports(dpid)
            members = sorted(edge | self.topology.tree_ports(dpid, tree))
            mine = [
                flow(
                    self.classify,
                    EDGE_PRIORITY,
                    {"in_port": p},
                    apply(to_controller(PACKET_IN_BYTES)),
                    self._go_on,
                    cookie=COOKIE,
                )
                for p in sorted(edge)
            ]
            mine += [
                flow(
                    self.forwarding,
                    FLOOD_PRIORITY,
                    {"in_port": p},
                    apply(*[output(q) for q in members if q != p]),
                    cookie=COOKIE,
                )
                for p in members
            ]
            flows[dpid] = mine
        self.desired.put(("l2", "flood"), flows)
