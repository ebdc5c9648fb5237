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
- A source MAC is untrusted: a MAC seen at another edge port moves only when its old location
  is gone (port down, entry aged out, or silent through a probe), never while it is live
  there, and never if the config pins it (controller/mac_moves.py). A link that goes down moves the
  paths and the tree.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import defaultdict
from dataclasses import dataclass
from types import MappingProxyType

from os_ken.ofproto import ofproto_v1_3 as ofp

from controller.app import PacketIn, SuiteApp
from controller.config import Config
from controller.endpoints import parse_endpoints
from controller.flows import (
    Bucket,
    Flow,
    apply,
    flow,
    group,
    group_action,
    output,
    packet_out,
    to_controller,
)
from controller.guards import waypoint_guards
from controller.mac_moves import REASONS, Location, MoveGuard, Verdict
from controller.packets import ARP_REQUEST, arp_frame, source_ip
from controller.pipeline import REGISTRY
from controller.resources import COOKIE_SHIFT

LOG = logging.getLogger("osken_suite.l2")

COOKIE = REGISTRY.cookie("l2_learning")
COOKIE_MASK = 0xFF << COOKIE_SHIFT
PROBE_PRIORITY = 220  # classify: answers to our probes (to PROBE_MAC): to us, no further
BAN_PRIORITY = 210  # classify: (in_port, eth_src) of a refused move: drop
LEARNED_PRIORITY = 200  # classify: (in_port, eth_src) known here: carry on
EDGE_PRIORITY = 100  # classify: anything else from an edge port: tell us, carry on
HOST_PRIORITY = 100  # forwarding: eth_dst known: next hop
FLOOD_PRIORITY = 10  # forwarding: by in_port, out along the tree and to edge ports
PACKET_IN_BYTES = 128  # headers are all we need to learn
DEFAULT_MAC_AGE = 300
PROBE_MAC = "02:6c:32:00:00:01"  # locally administered ("l2"): the source of our ARP probes
ECMP_GROUP_BASE = REGISTRY.get("group", "l2_learning").first  # + the far switch's dpid (24 bits)
L2_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"mac_age": {"type": "integer", "minimum": 1, "maximum": 65535}},
}


@dataclass(frozen=True)
class L2Settings:
    """`mac_age`: idle seconds before a learned entry goes; `pinned`: MACs the config's
    endpoints bind, which never move while their port is up."""

    mac_age: int = DEFAULT_MAC_AGE
    pinned: frozenset[str] = frozenset()


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
        self.pinned: frozenset[str] = frozenset()
        # (MAC, where) -> the IPv4 address it spoke from there: probes ask it at its port
        self.addresses: dict[tuple[str, Location], str] = {}
        self.guard = MoveGuard()
        self._counts: dict[int, dict[tuple[str, int], int]] = {}  # stats parts so far
        self.classify = core.pipeline.table("classify")
        self._go_on = core.pipeline.go_on("classify")
        self.forwarding = core.pipeline.table("forwarding")
        self.moves = core.metrics.counter(
            "osken_l2_moves", "Hosts (MACs) moved to another edge port"
        )
        self.refused = core.metrics.counter(
            "osken_l2_moves_refused",
            "Claims of a learned MAC from another edge port refused: pinned by the config, "
            "live at its port, or flapping",
            ("reason",),
        )
        for reason in REASONS:
            self.refused.labels(reason)

    def parse_config(self, section, config: Config) -> L2Settings:
        pinned = frozenset(e.mac for e in parse_endpoints(config) if e.mac)
        return L2Settings((section or {}).get("mac_age", DEFAULT_MAC_AGE), pinned)

    def configure(self, settings: L2Settings, now: float) -> None:
        """The MACs of the waypoint replicas the services app guards backends with
        (controller/guards.py) are pinned too: they are the sources the guards trust."""
        guards = waypoint_guards(self.core.settings_of("services"))
        pinned = settings.pinned | {mac for g in guards for _, mac in g.waypoints}
        if (settings.mac_age, pinned) != (self.mac_age, self.pinned):
            self.mac_age, self.pinned = settings.mac_age, pinned
            self._install_all()

    # --- state from the switches ---------------------------------------------------------------

    def on_switch_synced(self, dpid: int, installed: list[Flow], now: float) -> None:
        """Recover hosts from our learned entries, so a restart keeps every path as it was. On
        a switch already ready (a new master's re-read, Core.resync) a recovered host's flows
        are wanted at once: the switch's entry is what the old master learned."""
        found = []
        for f in installed:
            if f.cookie == COOKIE and f.table == self.classify and f.priority == LEARNED_PRIORITY:
                match = f.match_dict()
                if "eth_src" in match and "in_port" in match:
                    found.append((match["eth_src"], match["in_port"]))
        for mac, port in found:
            self._learn(mac, dpid, port)
        if found and self.core.ready(dpid):
            tree = self.topology.next_hop_ports(dpid)
            for mac, _port in found:
                self._install_host(mac, tree)

    def on_packet_in(self, pkt: PacketIn, now: float) -> None:
        if pkt.cookie != COOKIE or pkt.table_id != self.classify:
            return
        mac = pkt.eth_src
        if int(mac[:2], 16) & 1:  # multicast sources are never hosts
            return
        location = (pkt.dpid, pkt.in_port)
        if pkt.eth_dst == PROBE_MAC:  # an answer to a probe: is the host still where it was?
            verdict = self.guard.answered(mac, location)
            if verdict is not None:
                self._conclude(verdict, now)
            return
        old = self.hosts.get(mac)
        self._note_address(mac, location, pkt.data)
        if old == location:
            return  # already learned; its entry is on the way
        if pkt.in_port not in self.topology.edge_ports(pkt.dpid):
            return
        if old is None:
            self._learn(mac, *location)
            self._install_host(mac, self.topology.next_hop_ports(pkt.dpid))
            return
        decision = self.guard.claim(mac, old, location, mac in self.pinned, now)
        if decision == "held":
            self._probe(mac, old)
        elif decision is not None:
            self._refuse(mac, old, location, decision, now)

    def on_flow_stats(self, dpid: int, stats: list, more: bool, now: float) -> None:
        """Learned entries' packet counts on `dpid`, for held moves (controller/mac_moves.py)."""
        counts = self._counts.setdefault(dpid, {})
        for s in stats:
            f = s.flow
            if f.table == self.classify and f.priority == LEARNED_PRIORITY:
                match = f.match_dict()
                counts[(match.get("eth_src"), match.get("in_port"))] = s.packets
        if not more:
            for verdict in self.guard.checked(dpid, self._counts.pop(dpid), now):
                self._conclude(verdict, now)

    def tick(self, now: float) -> None:
        switches, verdicts = self.guard.due(now)
        for verdict in verdicts:
            self._conclude(verdict, now)
        for dpid in sorted(switches):
            self.core.request_flow_stats(self, dpid, self.classify, COOKIE, COOKIE_MASK)
        for mac, (dpid, port) in self.guard.expired(now):
            self.desired.drop(("l2", "ban", mac, dpid, port))

    def on_flow_removed(self, dpid: int, removed: Flow, reason: int, now: float) -> None:
        if removed.cookie != COOKIE or removed.table != self.classify:
            return
        match = removed.match_dict()
        mac = match.get("eth_src")
        if mac and self.hosts.get(mac) == (dpid, match.get("in_port")):
            LOG.info("host %s aged out at %016x:%d", mac, dpid, match["in_port"])
            self._forget(mac)
            self._vacated(mac, now)

    def on_topology_change(self, now: float) -> None:
        for mac, (dpid, port) in list(self.hosts.items()):
            if port not in self.topology.live_ports(dpid) or port in self.topology.isl_ports(dpid):
                self._forget(mac)
                self._vacated(mac, now)
        self._install_all()

    # --- moves ---------------------------------------------------------------------------------

    def _note_address(self, mac: str, at: Location, data: bytes) -> None:
        """Remember the IPv4 address `mac` spoke from at `at`, to probe it there if it is
        learned there (a claim's address is kept for when its move is confirmed)."""
        ip = source_ip(data)
        if ip and "." in ip and not ipaddress.IPv4Address(ip).is_unspecified:
            self.addresses[(mac, at)] = ip

    def _probe(self, mac: str, at: Location) -> None:
        """An ARP probe (RFC 5227) for `mac`'s address out of its old port only; its answer
        comes back to PROBE_MAC, which classify sends to us."""
        ip = self.addresses.get((mac, at))
        if ip is not None and self.core.ready(at[0]):
            frame = arp_frame(ARP_REQUEST, PROBE_MAC, "0.0.0.0", "00:00:00:00:00:00", ip)
            self.core.send(at[0], [packet_out(frame, [output(at[1])])])

    def _conclude(self, verdict: Verdict, now: float) -> None:
        h = verdict.hold
        if not verdict.moved:
            self._refuse(h.mac, h.old, h.new, verdict.reason, now)
        elif self.hosts.get(h.mac) == h.old and h.new[1] in self.topology.edge_ports(h.new[0]):
            self._move(h.mac, h.old, h.new)

    def _move(self, mac: str, old: Location | None, new: Location) -> None:
        if old is None:
            LOG.info("host %s moved to %016x:%d (its old port went)", mac, *new)
        else:
            LOG.info("host %s moved from %016x:%d to %016x:%d", mac, *old, *new)
        self.moves.inc()
        self._learn(mac, *new)
        self._prune_addresses(mac)
        self._install_host(mac, self.topology.next_hop_ports(new[0]))

    def _vacated(self, mac: str, now: float) -> None:
        """`mac`'s location is gone: a claim held for it elsewhere is confirmed now, and its
        bans are lifted."""
        hold, lifted = self.guard.gone(mac)
        for dpid, port in lifted:
            self.desired.drop(("l2", "ban", mac, dpid, port))
        if hold is not None and hold.new[1] in self.topology.edge_ports(hold.new[0]):
            self.guard.moved(mac, now)
            self._move(mac, None, hold.new)
        self._prune_addresses(mac)

    def _prune_addresses(self, mac: str) -> None:
        """Keep only the address `mac` spoke from where it is learned now."""
        here = self.hosts.get(mac)
        for key in [k for k in self.addresses if k[0] == mac and k[1] != here]:
            del self.addresses[key]

    def _refuse(self, mac: str, old: Location, new: Location, reason: str, now: float) -> None:
        """Keep `mac` at `old`; drop it at `new` for the ban time; count and log."""
        self.refused.labels(reason).inc()
        self.guard.ban(mac, new, now)
        self.desired.put(
            ("l2", "ban", mac, *new),
            {
                new[0]: [
                    flow(
                        self.classify,
                        BAN_PRIORITY,
                        {"in_port": new[1], "eth_src": mac},
                        cookie=COOKIE,
                    )
                ]
            },
        )
        suppressed = self.guard.log_due(mac, now)
        if suppressed is not None:
            LOG.warning(
                "host %s stays at %016x:%d: refused its move to %016x:%d (%s)%s",
                mac,
                *old,
                *new,
                reason,
                f"; {suppressed} more refused since the last line" if suppressed else "",
            )

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
                idle_timeout=0 if mac in self.pinned else self.mac_age,
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
            mine.append(
                flow(
                    self.classify,
                    PROBE_PRIORITY,
                    {"eth_dst": PROBE_MAC},
                    apply(to_controller(PACKET_IN_BYTES)),
                    cookie=COOKIE,
                )
            )
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
