"""Policies over identities, compiled to flows in five tables.

Each packet is classified once, where it enters the network, into a source and a destination
identity carried in the metadata register; policy then matches identities and ports, so the
flow count follows identities x rules, never endpoints squared:

    microseg          source identity, bound to (switch port, IP[, MAC]); spoofed sources drop
    microseg_track    destination identity
    microseg_dst      IP goes through conntrack; replies to allowed connections pass
    microseg_egress   per source identity: deny rules, allow rules, default deny if isolated
    microseg_ingress  per destination identity: the same; allowed connections are committed

A connection passes only if the source's egress and the destination's ingress both allow it.
Packets from another switch were judged where they entered (FROM_FABRIC) and skip all five.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from apps.microseg.model import World
from apps.microseg.policy import Peer, Policy, PolicyRule
from controller.flowlog import log_instructions
from controller.flows import (
    Flow,
    apply,
    conntrack,
    flow,
    set_field,
    to_controller,
    write_metadata,
)
from controller.guards import BackendGuard
from controller.labelselectors import cilium_view
from controller.matches import (
    CT_EST,
    CT_REL,
    CT_RPL,
    CT_TRK,
    ETH_TYPES,
    IP_PROTOCOLS,
    ND_TYPES,
    TCP_ACK,
    TCP_SYN,
    port_matches,
    prefix_match,
)
from controller.packets import ETH_TYPE_ARP, ETH_TYPE_IPV6, IPPROTO_ICMPV6, IPPROTO_TCP
from controller.pipeline import FROM_FABRIC, PIPELINE, REGISTRY, Pipeline

COOKIE = REGISTRY.cookie("microseg")
CT_ZONE = REGISTRY.value("ct_zone", "microseg")
# The policy generation, frozen with each conntrack recirculation.
GENERATION_REG = REGISTRY.get("register", "microseg").field
SRC_IDENTITY = REGISTRY.get("metadata", "microseg", "src")
DST_IDENTITY = REGISTRY.get("metadata", "microseg", "dst")
SRC_SHIFT, DST_SHIFT = SRC_IDENTITY.first, DST_IDENTITY.first
SRC_MASK, DST_MASK = SRC_IDENTITY.mask, DST_IDENTITY.mask
REPLY = CT_TRK | CT_EST | CT_RPL
ARP = ETH_TYPE_ARP

# Priorities, per table.
SKIP_FABRIC, ND_PASS, BOUND, CLAIMED, ARP_PASS = 65000, 400, 300, 200, 100
CT_PASS, SYN_JUDGED, DST_CLASSIFY, TRACKED, TRACK = 500, 510, 100, 20, 10
DENY, ALLOW, ISOLATED, COMMIT = 3000, 2000, 1000, 1
# A waypointed service's backend port: the waypoint passes on to ingress, anyone else drops.
WAYPOINT_PASS, WAYPOINT_ONLY = 3600, 3500

# A condition on the far end: ("any",), ("id", n), ("net", network), ("ip", address), or
# ("world", network): an address in the network that is no endpoint's (identity 0).
Cond = tuple
L4 = tuple | None  # None: any IP traffic; (protocol, (lo, hi) or None)


def src_meta(identity: int) -> int:
    return identity << SRC_SHIFT


def dst_meta(identity: int) -> int:
    return identity << DST_SHIFT


@dataclass(frozen=True)
class PolicyEntry:
    """One allowed (or denied) slice of traffic for an identity in one direction."""

    peer: Cond
    l4: L4
    self_ip: str | None = None  # named ports that differ within the identity: per endpoint


class Resolver:
    """Selectors to identity sets, against one World."""

    def __init__(self, world: World) -> None:
        self.world = world
        # Each identity as the selectors see it, made once: labels, namespace labels, and
        # Cilium's view (labels plus the namespace and its labels as labels).
        self._labels = {n: ident.label_map() for n, ident in world.identities.items()}
        self._ns_labels = {n: ident.namespace_map() for n, ident in world.identities.items()}
        self._cilium_views = {
            n: cilium_view(ident.labels, ident.namespace, ident.namespace_labels)
            for n, ident in world.identities.items()
        }

    def _view(self, number: int, cilium: bool) -> dict[str, str]:
        return self._cilium_views[number] if cilium else self._labels[number]

    def selected(self, policy: Policy) -> set[int]:
        """Identities a policy applies to: its namespace, its selector."""
        return {
            number
            for number, ident in self.world.identities.items()
            if ident.namespace == policy.namespace
            and policy.selector.matches(self._view(number, policy.cilium))
        }

    def peer_ids(self, peer: Peer) -> set[int]:
        out = set()
        for number, ident in self.world.identities.items():
            if peer.namespace is not None and ident.namespace != peer.namespace:
                continue
            if peer.namespaces is not None and not peer.namespaces.matches(self._ns_labels[number]):
                continue
            if peer.pods is None or peer.pods.matches(self._view(number, peer.cilium)):
                out.add(number)
        return out

    def conds(self, rule: PolicyRule) -> list[Cond]:
        """The far-end conditions of a rule (a rule with no peers list means every peer)."""
        if rule.peers is None:
            return [("any",)]
        out: list[Cond] = []
        for peer in rule.peers:
            if peer.kind == "endpoints":
                out += [("id", n) for n in sorted(self.peer_ids(peer))]
            elif peer.kind == "world":
                out += [("world", n) for n in peer.nets] if peer.nets else [("id", 0)]
            else:
                out += [("net", n) for n in peer.nets]
        return out

    def endpoints_in(self, cond: Cond):
        """The endpoints a condition on the far end covers (for named ports)."""
        world = self.world
        if cond[0] == "any":
            return [e for m in world.members.values() for e in m]
        if cond[0] == "id":
            return list(world.members.get(cond[1], ()))
        if cond[0] == "world":
            return []
        return [e for e in world.endpoints.values() if e.ip in cond[1]]


def _named(rule_port, endpoints) -> list[tuple[object, int]]:
    """(endpoint, port) for each endpoint that defines the named port with that protocol."""
    out = []
    for e in endpoints:
        number = e.named_port(rule_port.port, rule_port.protocol)
        if number is not None:
            out.append((e, number))
    return out


def rule_entries(
    res: Resolver, rule: PolicyRule, direction: str, identity: int
) -> set[PolicyEntry]:
    """What one rule lets `identity` do in `direction` ("egress": send, "ingress": receive)."""
    conds = res.conds(rule)
    out: set[PolicyEntry] = set()
    if rule.ports is None:
        return {PolicyEntry(c, None) for c in conds}
    for spec in rule.ports:
        if not isinstance(spec.port, str):
            out |= {PolicyEntry(c, (spec.protocol, spec.range())) for c in conds}
            continue
        if direction == "ingress":  # the name is this identity's own port
            members = res.world.members.get(identity, ())
            found = _named(spec, members)
            uniform = len(found) == len(members) and len({p for _, p in found}) == 1
            for e, port in found:
                l4 = (spec.protocol, (port, port))
                out |= {PolicyEntry(c, l4, None if uniform else str(e.ip)) for c in conds}
            continue
        for c in conds:  # egress: the name is the destination's port
            found = _named(spec, res.endpoints_in(c))
            for e, port in found:
                out.add(PolicyEntry(("ip", e.ip), (spec.protocol, (port, port))))
    return out


@dataclass
class Verdicts:
    """Per identity and direction: isolated or not, allowed entries, denied entries."""

    isolated: dict[str, set[int]]
    allow: dict[tuple[str, int], set[PolicyEntry]]
    deny: dict[tuple[str, int], set[PolicyEntry]]


def verdicts(world: World, policies: Iterable[Policy]) -> Verdicts:
    res = Resolver(world)
    out = Verdicts({"ingress": set(), "egress": set()}, defaultdict(set), defaultdict(set))
    for policy in policies:
        selected = res.selected(policy)
        for direction in ("ingress", "egress"):
            allow = policy.ingress if direction == "ingress" else policy.egress
            deny = policy.ingress_deny if direction == "ingress" else policy.egress_deny
            for identity in selected:
                if direction in policy.isolates:
                    out.isolated[direction].add(identity)
                for rule in allow if direction in policy.isolates or policy.cilium else ():
                    out.allow[(direction, identity)] |= rule_entries(res, rule, direction, identity)
                for rule in deny:
                    out.deny[(direction, identity)] |= rule_entries(res, rule, direction, identity)
    return out


class MicrosegCompiler:
    """Flows for the five microseg tables, grouped by what they depend on."""

    def __init__(self, pipeline: Pipeline = PIPELINE) -> None:
        self.src = pipeline.table("microseg")
        self.track = pipeline.table("microseg_track")
        self.dst = pipeline.table("microseg_dst")
        self.egress = pipeline.table("microseg_egress")
        self.ingress = pipeline.table("microseg_ingress")
        # Where microseg sends what it has finished with (or lets pass unjudged).
        done = pipeline.following("microseg_ingress")
        self.next = pipeline.table(done)
        to = pipeline.goto
        self._src_on, self._src_done = to("microseg", "microseg_track"), to("microseg", done)
        self._track_on = to("microseg_track", "microseg_dst")
        self._dst_on = to("microseg_dst", "microseg_egress")
        self._dst_done = to("microseg_dst", done)
        self._egress_on = to("microseg_egress", "microseg_ingress")
        self._ingress_done = to("microseg_ingress", done)

    _commit = conntrack(CT_ZONE, commit=True, force=True)

    def _flow(self, table: int, prio: int, match: dict, *instructions) -> Flow:
        return flow(table, prio, match, *instructions, cookie=COOKIE)

    # --- flows that depend on nothing but whether any endpoint is isolated ----------------------

    def base_flows(self, enforcing: bool, generation: int = 0) -> list[Flow]:
        """`generation` changes with every policy change. It goes into a register before the
        conntrack recirculation, so Open vSwitch freezes a new state and cannot reuse datapath
        flows it cached after the recirculation under the old policy (seen in the conformance
        tests: such a cached flow kept letting denied SYNs through until the datapath was
        flushed)."""
        f = self._flow
        out = [
            f(self.src, SKIP_FABRIC, {"metadata": (FROM_FABRIC, FROM_FABRIC)}, self._src_done),
            f(self.src, ARP_PASS, {"eth_type": ARP}, self._src_done),
        ]
        out += [
            f(
                self.src,
                ND_PASS,
                {"eth_type": ETH_TYPE_IPV6, "ip_proto": IPPROTO_ICMPV6, "icmpv6_type": t},
                self._src_done,
            )
            for t in ND_TYPES
        ]
        if not enforcing:
            return out
        ours = {"ct_zone": CT_ZONE}  # ct_state from our zone, not the firewall's
        for eth_type in ETH_TYPES.values():
            ip = {"eth_type": eth_type}
            track = apply(set_field(GENERATION_REG, generation), conntrack(CT_ZONE, self.dst))
            out.append(f(self.dst, TRACK, ip, track))
            out.append(
                f(
                    self.dst,
                    TRACKED,
                    {**ip, **ours, "ct_state": (CT_TRK, CT_TRK)},
                    self._dst_on,
                )
            )
            out.append(f(self.ingress, COMMIT, ip, apply(self._commit), self._ingress_done))
            # A bare SYN is never a reply: if conntrack holds its 5-tuple the other way round
            # (an entry picked up mid-stream from the peer's last packets), judge it as new.
            syn = {**ip, **ours, "ip_proto": IPPROTO_TCP, "tcp_flags": (TCP_SYN, TCP_SYN | TCP_ACK)}
            out.append(f(self.dst, SYN_JUDGED, {**syn, "ct_state": (REPLY, REPLY)}, self._dst_on))
        # Replies to a committed connection pass, and so do related packets (ICMP errors).
        # Packets in the original direction are judged again each time: a policy change holds
        # for open connections too.
        for offset, bits in enumerate((REPLY, CT_TRK | CT_REL)):
            out.append(
                f(self.dst, CT_PASS + offset, {**ours, "ct_state": (bits, bits)}, self._dst_done)
            )
        return out

    # --- backends only the waypoint may reach (controller/guards.py) ------------------------

    def guard_flows(self, guards: Iterable[BackendGuard], log: bool = False) -> list[Flow]:
        """Egress flows, above every policy's: a new connection to a guarded backend's IP:port
        from one of its waypoints (its address and MAC; source_flows binds the pair to the
        replica's port, as it binds endpoints) goes on to the backend's ingress policy; from
        anyone else it drops (to the flow log when `log`). Replies are not judged here: they
        passed at microseg_dst when conntrack is on, and never go to the guarded port anyway."""
        f = self._flow
        denied = log_instructions() if log else ()
        out = []
        for g in guards:
            to = {"eth_type": ETH_TYPES[4], "ip_proto": IPPROTO_TCP}
            to |= {"ipv4_dst": g.ip, "tcp_dst": g.port}
            for ip, mac in g.waypoints:
                src = {"ipv4_src": ip, "eth_src": mac}
                out.append(f(self.egress, WAYPOINT_PASS, {**to, **src}, self._egress_on))
            out.append(f(self.egress, WAYPOINT_ONLY, to, *denied))
        return out

    # --- per endpoint: where it is bound, and its address as a destination -----------------------

    def source_flows(self, endpoint, identity: int, binding, switches) -> dict[int, list[Flow]]:
        """Classification at the bound port; everywhere else its address is a claim to refuse.

        `binding` is (dpid, port) or None while the endpoint has not been seen: then packets
        from its address go to the controller, which binds it (ARP still goes on its way).
        """
        f = self._flow
        family = endpoint.family
        ip = str(endpoint.ip)
        ip_match = {"eth_type": ETH_TYPES[family], f"ipv{family}_src": ip}
        arp_match = {"eth_type": ARP, "arp_spa": ip} if family == 4 else None
        out: dict[int, list[Flow]] = {dpid: [] for dpid in switches}
        for dpid in switches:
            if binding is None:
                out[dpid].append(f(self.src, CLAIMED, ip_match, apply(to_controller(128))))
                if arp_match:
                    out[dpid].append(
                        f(self.src, CLAIMED, arp_match, apply(to_controller(128)), self._src_done)
                    )
                continue
            out[dpid].append(f(self.src, CLAIMED, ip_match))  # someone else's address: drop
            if arp_match:
                out[dpid].append(f(self.src, CLAIMED, arp_match))
        if binding is not None and binding[0] in out:
            dpid, port = binding
            own = {"in_port": port, **({"eth_src": endpoint.mac} if endpoint.mac else {})}
            out[dpid].append(
                f(
                    self.src,
                    BOUND,
                    {**own, **ip_match},
                    write_metadata(src_meta(identity), SRC_MASK),
                    self._src_on,
                )
            )
            if arp_match:
                out[dpid].append(f(self.src, BOUND, {**own, **arp_match}, self._src_done))
        return out

    def destination_flow(self, endpoint, identity: int) -> Flow:
        family = endpoint.family
        return self._flow(
            self.track,
            DST_CLASSIFY,
            {"eth_type": ETH_TYPES[family], f"ipv{family}_dst": str(endpoint.ip)},
            write_metadata(dst_meta(identity), DST_MASK),
            self._track_on,
        )

    # --- per identity and direction: policy ------------------------------------------------------

    def policy_flows(
        self,
        direction: str,
        identity: int,
        families: set[int],
        isolated: bool,
        allow: set[PolicyEntry],
        deny: set[PolicyEntry],
        log: bool = False,
    ) -> list[Flow]:
        """One identity's policy in one direction: default deny if `isolated`, then its
        allowed and denied entries; denies that `log` go to the flow log
        (controller/flowlog.py) instead of dropping silently."""
        table = self.egress if direction == "egress" else self.ingress
        denied = log_instructions() if log else ()
        passed = (
            (self._egress_on,)
            if direction == "egress"
            else (apply(self._commit), self._ingress_done)
        )
        own_meta = src_meta(identity) if direction == "egress" else dst_meta(identity)
        own_mask = SRC_MASK if direction == "egress" else DST_MASK
        out: list[Flow] = []
        for family in sorted(families):
            own = {"eth_type": ETH_TYPES[family]}
            if isolated:
                own_id = {**own, "metadata": (own_meta, own_mask)}
                out.append(self._flow(table, ISOLATED, own_id, *denied))
            for prio, entries, verdict in ((ALLOW, allow, passed), (DENY, deny, denied)):
                for entry in sorted(entries, key=repr):
                    for match in self._entry_matches(direction, family, own_meta, own_mask, entry):
                        out.append(self._flow(table, prio, {**own, **match}, *verdict))
        return out

    @staticmethod
    def _entry_matches(direction, family, own_meta, own_mask, entry: PolicyEntry) -> list[dict]:
        far = "dst" if direction == "egress" else "src"
        near = "src" if far == "dst" else "dst"
        meta, mask = own_meta, own_mask
        base: dict = {}
        kind = entry.peer[0]
        if kind in ("id", "world"):
            number = entry.peer[1] if kind == "id" else 0
            meta |= src_meta(number) if far == "src" else dst_meta(number)
            mask |= SRC_MASK if far == "src" else DST_MASK
        if kind in ("net", "ip", "world"):
            net = ipaddress.ip_network(entry.peer[1])
            if net.version != family:
                return []
            base.update(prefix_match(f"ipv{family}_{far}", net))
        if entry.self_ip is not None:
            if ipaddress.ip_address(entry.self_ip).version != family:
                return []
            base[f"ipv{family}_{near}"] = entry.self_ip
        base["metadata"] = (meta, mask)
        if entry.l4 is None:
            return [base]
        protocol, ports = entry.l4
        base["ip_proto"] = IP_PROTOCOLS[protocol]
        return [{**base, **m} for m in port_matches(f"{protocol}_dst", ports)]
