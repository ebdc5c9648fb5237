"""Service chains as flows and groups: a traffic class steered through VNF replicas in order.

A replica is a bump in the wire with ports "a" (toward clients) and "b" (toward servers).
Forward traffic enters each hop's replica at "a" and leaves at "b"; replies go back through
the hops in reverse, entering at "b". Per switch, in the `chains` table:

- classification, for frames that entered the fabric here: the class (forward) goes to a
  select group over the first hop's replicas, its replies to one over the last hop's;
- a frame leaving a replica (matched by the port it leaves from and its class) goes on to the
  next hop's select group, or, after the last, on through the pipeline to its destination;
- a replica on another switch is reached with a VLAN tag naming (chain, hop, replica, side),
  carried along the topology's tree to the replica's switch, which pops it and delivers;
- anything else leaving a replica port is dropped (floods that wandered in), and so is a
  tagged frame whose tag no chain names here.

Tags are the chains' transport between switches only: the core accepts a tagged frame only on
an inter-switch port (marked FROM_FABRIC) and drops one from any other port in classify, so a
host can never enter a tag, and every tagged frame reaches this table through the stages before
it, which skip FROM_FABRIC frames (docs/security.md, "Hosts and VLAN tags").

Select buckets watch the replica's port where it is local (a replica whose container stops
loses its ports: the switch skips it at once) or the next hop toward it; the controller then
rebuilds the groups without it. A hop with no replica left drops its class: a chain fails
closed, never around its firewall.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import product

from apps.chains.settings import MAX_CHAINS, MAX_HOPS, MAX_REPLICAS, Chain
from controller.flows import (
    Bucket,
    Flow,
    Group,
    apply,
    flow,
    group,
    group_action,
    output,
    set_field,
)
from controller.matches import PROTOCOL_NAMES, prefix_match
from controller.packets import ETH_TYPE_8021Q, ETH_TYPE_IP
from controller.pipeline import FROM_FABRIC, REGISTRY, Pipeline

COOKIE = REGISTRY.cookie("chains")
GROUP_BASE = REGISTRY.get("group", "chains").first
VLAN_PRESENT = 0x1000
TAG_PRIORITY = 400  # a tagged frame on its way to a replica
STRAY_TAG_PRIORITY = 390  # any other tagged frame
EXIT_PRIORITY = 300  # a frame leaving a replica (minus the chain's index)
CLASS_PRIORITY = 200  # classification at the edge (see class_priority)
REPLICA_DROP = 100  # anything else leaving a replica
ENTRY_PRIORITY = 250  # classify: frames from replica ports skip the policy stages


@dataclass(frozen=True)
class Replica:
    dpid: int
    a: int  # port numbers on that switch
    b: int

    def port(self, side: str) -> int:
        """The port of side "a" (toward clients) or "b" (toward servers)."""
        return self.a if side == "a" else self.b


def tag(chain: int, hop: int, replica: int, side: str) -> int:
    """The VLAN id naming where a frame is going (1 to 1920).

    >>> tag(0, 0, 0, "a"), tag(14, 3, 15, "b")
    (1, 1920)
    """
    return 1 + (((chain * MAX_HOPS + hop) * MAX_REPLICAS + replica) * 2 + (side == "b"))


def class_priority(chain: int, reverse: bool) -> int:
    """Where a chain's classification sits: chains in config order, then every chain's replies.

    A frame can be in both directions of a class (a client whose source port is a service
    port, talking to another member): it is taken as forward, never left to the switch's
    choice between equal priorities.

    >>> class_priority(0, False), class_priority(14, False), class_priority(0, True)
    (200, 186, 185)
    """
    return CLASS_PRIORITY - chain - (MAX_CHAINS if reverse else 0)


def group_id(chain: int, hop: int, side: str) -> int:
    return GROUP_BASE + (chain * MAX_HOPS + hop) * 2 + (side == "b")


def class_matches(c: Chain, reverse: bool) -> list[dict]:
    """The class as OpenFlow matches (one per source, destination and port combination)."""
    sources, dests = (c.destinations, c.sources) if reverse else (c.sources, c.destinations)
    l4 = PROTOCOL_NAMES[c.protocol] + ("_src" if reverse else "_dst")
    out = []
    for src, dst, port in product(sources or [None], dests or [None], c.ports or [None]):
        m: dict = {"eth_type": ETH_TYPE_IP, "ip_proto": c.protocol}
        if src is not None:
            m.update(prefix_match("ipv4_src", src))  # 0.0.0.0/0 is no match, as OVS reads it
        if dst is not None:
            m.update(prefix_match("ipv4_dst", dst))
        if port is not None:
            m[l4] = port
        out.append(m)
    return out


class ChainsCompiler:
    def __init__(self, pipeline: Pipeline) -> None:
        self.classify = pipeline.table("classify")
        self.table = pipeline.table("chains")
        self._to_chains = pipeline.goto("classify", "chains")
        self._go_on = pipeline.go_on("chains")

    def _f(self, table: int, priority: int, match: dict, *instructions) -> Flow:
        return flow(table, priority, match, *instructions, cookie=COOKIE)

    def entry_flows(self, replica_ports: Iterable[int]) -> list[Flow]:
        """Classify: frames from replicas go straight to the chains table (no host learning at
        a replica's port, no second policy check); in the chains table, a tagged frame no tag
        entry claims is dropped, never delivered."""
        flows = [
            self._f(self.classify, ENTRY_PRIORITY, {"in_port": p}, self._to_chains)
            for p in replica_ports
        ]
        stray = {"vlan_vid": (VLAN_PRESENT, VLAN_PRESENT)}
        return [*flows, self._f(self.table, STRAY_TAG_PRIORITY, stray)]

    def _reach(self, dpid: int, target: Replica, side: str, vid: int, next_hops) -> tuple | None:
        """Actions, and the port to watch, to get a frame from `dpid` into a replica's side."""
        if target.dpid == dpid:
            return (output(target.port(side)),), target.port(side)
        nh = next_hops(target.dpid).get(dpid)
        if nh is None:
            return None
        push = (
            ("push_vlan", ETH_TYPE_8021Q),
            set_field("vlan_vid", VLAN_PRESENT | vid),
            output(nh),
        )
        return push, nh

    def chain_flows(
        self, dpid: int, index: int, c: Chain, hops: list[dict[int, Replica]], next_hops
    ) -> tuple[list[Flow], list[Group]]:
        """This switch's flows and groups for chain `index` (hops: replica number -> Replica).

        `next_hops(dpid)` maps each switch to its port toward `dpid` along the topology's tree.
        Each hop side gets a select group and the flows carrying its tagged frames; each
        direction of the class gets its classification and the flows leaving each local replica.
        """
        flows: list[Flow] = []
        groups: list[Group] = []
        for h, replicas in enumerate(hops):
            for side in ("a", "b"):
                groups.append(self._hop_group(dpid, index, h, side, replicas, next_hops))
                flows += self._tag_flows(dpid, index, h, side, replicas, next_hops)
        for reverse in (False, True):
            for m in class_matches(c, reverse):
                flows.append(self._class_flow(index, m, reverse, len(hops)))
                flows += self._exit_flows(dpid, index, m, reverse, hops)
        return flows, groups

    def _hop_group(
        self, dpid: int, index: int, h: int, side: str, replicas: dict[int, Replica], next_hops
    ) -> Group:
        """The select group into side `side` of hop `h`: a bucket per replica reachable from
        `dpid`, each watching the port it leaves by (none reachable: a group that drops)."""
        buckets = []
        for r, rep in sorted(replicas.items()):
            got = self._reach(dpid, rep, side, tag(index, h, r, side), next_hops)
            if got is not None:
                buckets.append(Bucket(got[0], weight=1, watch_port=got[1]))
        return group(group_id(index, h, side), "select", buckets)

    def _tag_flows(
        self, dpid: int, index: int, h: int, side: str, replicas: dict[int, Replica], next_hops
    ) -> list[Flow]:
        """Frames tagged for a replica of hop `h`: untagged into it if it is on `dpid`, else
        carried on toward its switch (none where `dpid` has no way there)."""
        flows = []
        for r, rep in replicas.items():
            vid = VLAN_PRESENT | tag(index, h, r, side)
            if rep.dpid == dpid:
                actions = (("pop_vlan",), output(rep.port(side)))
            else:
                nh = next_hops(rep.dpid).get(dpid)
                if nh is None:
                    continue
                actions = (output(nh),)
            flows.append(self._f(self.table, TAG_PRIORITY, {"vlan_vid": vid}, apply(*actions)))
        return flows

    def _class_flow(self, index: int, m: dict, reverse: bool, n: int) -> Flow:
        """A frame of the class (`m`, one direction) that entered the fabric here goes to the
        first hop's group (forward: side a of hop 0; replies: side b of hop n - 1)."""
        first, enter = (n - 1, "b") if reverse else (0, "a")
        edge = {**m, "metadata": (0, FROM_FABRIC)}
        return self._f(
            self.table,
            class_priority(index, reverse),
            edge,
            apply(group_action(group_id(index, first, enter))),
        )

    def _exit_flows(
        self, dpid: int, index: int, m: dict, reverse: bool, hops: list[dict[int, Replica]]
    ) -> list[Flow]:
        """A frame of the class leaving a replica on `dpid` (by b forward, by a for replies)
        goes to the next hop's group, or after the last hop on through the pipeline."""
        enter = "b" if reverse else "a"
        flows = []
        for h, replicas in enumerate(hops):
            after = h - 1 if reverse else h + 1
            if 0 <= after < len(hops):
                then = apply(group_action(group_id(index, after, enter)))
            else:
                then = self._go_on
            for rep in replicas.values():
                if rep.dpid == dpid:
                    leaving = rep.port("a" if reverse else "b")
                    match = {**m, "in_port": leaving}
                    flows.append(self._f(self.table, EXIT_PRIORITY - index, match, then))
        return flows

    def replica_drop_flows(self, ports: Iterable[int]) -> list[Flow]:
        return [self._f(self.table, REPLICA_DROP, {"in_port": p}) for p in ports]
