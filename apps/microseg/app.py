"""Zero-trust microsegmentation: Kubernetes NetworkPolicy and Cilium L3/L4 policy in OpenFlow.

Run it with ``osken-manager apps/microseg --config lab.yaml``; L2 learning comes along. The
config names the endpoints (IP, optional MAC, namespace, labels, named ports), the namespaces'
labels, and the policy files, read unmodified (docs/microseg.md).

- Identities: endpoints that share namespace and labels share an identity; policy is compiled
  per identity and direction (apps/microseg/compile.py), so a label change, a new endpoint or one
  edited policy changes only the flows that depend on it.
- Binding: an endpoint's identity is bound to the switch port it is first seen on (and to its
  MAC when the config gives one). Until then packets from its address go to the controller;
  after, the same address from any other port is dropped, so a host that borrows another
  endpoint's IP gains nothing from that endpoint's allowances. A binding ends when its port
  goes down, so a host that moves is bound again where it reappears. A waypoint replica
  (controller/guards.py) is bound the same way, with no identity of its own: the guards let
  its address and MAC through, so the pair is honoured only at the replica's port.
- Stateful: allowed connections are committed to conntrack; their replies pass.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections.abc import Hashable
from functools import partial
from types import MappingProxyType

from os_ken.ofproto import ofproto_v1_3 as ofp

from apps.microseg.compile import BOUND, COOKIE, CT_ZONE, MicrosegCompiler, verdicts
from apps.microseg.explain import Explainer
from apps.microseg.metrics import STATS_INTERVAL, RuleCounters
from apps.microseg.model import IdentityAllocator, World, build_world
from apps.microseg.policy import parse_policy
from apps.microseg.settings import MicrosegSettings, parse_microseg
from controller.app import PacketIn, SuiteApp
from controller.config import DocumentCache
from controller.endpoints import Endpoint
from controller.flows import Flow, ct_flush_zone
from controller.guards import BackendGuard, waypoint_guards
from controller.packets import source_ip
from controller.policydocs import POLICIES_SCHEMA
from controller.resources import COOKIE_SHIFT

LOG = logging.getLogger("osken_suite.microseg")
ALL_TABLES = ofp.OFPTT_ALL  # one counter request per switch covers the five tables
APP_MASK = 0xFF << COOKIE_SHIFT
SPOOF_LOG_INTERVAL = 10.0
WORLD = 0  # the identity of an address no endpoint has: a waypoint replica's


def replica_sources(guards: tuple[BackendGuard, ...], world: World) -> dict[str, Endpoint]:
    """The waypoint replicas the guards let through, as sources to bind (IP -> Endpoint with
    the replica's MAC, identity WORLD); an address that is also an endpoint's is bound as that
    endpoint already."""
    pairs = {ip: mac for g in guards for ip, mac in g.waypoints if ip not in world.by_ip}
    return {
        ip: Endpoint(f"waypoint {ip}", "", ipaddress.ip_address(ip), mac, ())
        for ip, mac in sorted(pairs.items())
    }


class Microseg(SuiteApp):
    name = "microseg"
    config_section = "policies"
    config_schemas = MappingProxyType({"policies": POLICIES_SCHEMA})
    requires = ("apps.l2_learning",)  # forwarding comes from the L2 app
    cookie = COOKIE

    def __init__(self, core) -> None:
        super().__init__(core)
        self.compiler = MicrosegCompiler(core.pipeline)
        self.documents = DocumentCache()  # policy files parsed at earlier loads
        self._parse_policy = functools.partial(parse_policy, loaded=core.loaded)
        self.allocator = IdentityAllocator()
        self.settings = MicrosegSettings()
        self.world = World()
        self.guards: tuple[BackendGuard, ...] = ()  # the services app's waypointed backends
        self.replicas: dict[str, Endpoint] = {}  # the guards' waypoint replicas, by IP
        self.explainer = Explainer(self.compiler, self.world, [])
        self.counters = RuleCounters(core.metrics)
        self._next_poll = 0.0
        self._verdicts = verdicts(self.world, [])
        self.bindings: dict[str, tuple[int, int]] = {}  # endpoint IP -> (dpid, port)
        self._placed: dict[Hashable, object] = {}  # owner -> the inputs its flows came from
        self._spoof_logged: dict[tuple, float] = {}
        self._policy_state: object = None  # what the verdicts were, to see them change
        self._flush_conntrack = False
        self.generation = 0
        self.identities = core.metrics.gauge(
            "osken_microseg_identities",
            "Security identities in force",
        )
        self.isolated = core.metrics.gauge(
            "osken_microseg_isolated_identities",
            "Identities in default deny, per direction",
            ("direction",),
        )

    # --- config --------------------------------------------------------------------------------

    def parse_config(self, section, config) -> MicrosegSettings:
        settings = parse_microseg(section, config, self.documents, self._parse_policy)
        identities = {(e.namespace, e.labels) for e in settings.endpoints}
        if len(identities) > IdentityAllocator.MAX:
            raise config.error(
                ("endpoints",),
                f"{len(identities)} identities (namespace and labels); at most "
                f"{IdentityAllocator.MAX} fit in a switch's register",
            )
        return settings

    def configure(self, settings: MicrosegSettings, now: float) -> None:
        self.settings = settings
        self.world = build_world(self.settings.namespaces, self.settings.endpoints, self.allocator)
        self.guards = waypoint_guards(self.core.settings_of("services"))
        self.replicas = replica_sources(self.guards, self.world)
        self.explainer = Explainer(self.compiler, self.world, settings.policies, self.guards)
        self._decide()
        self._install_all()
        v = self._verdicts
        LOG.info(
            "microseg: %d endpoints in %d identities, %d policies; default deny: "
            "%d identities for ingress, %d for egress",
            len(self.world.endpoints),
            len(self.world.identities),
            len(self.settings.policies),
            len(v.isolated["ingress"]),
            len(v.isolated["egress"]),
        )

    def _decide(self) -> None:
        """Verdicts per identity, worked out once per config (bindings and topology do not
        change them); a change of verdicts or of who is which identity starts a generation."""
        self._verdicts = v = verdicts(self.world, self.settings.policies)
        state = (
            v.isolated,
            {k: e for k, e in v.allow.items() if e},
            {k: e for k, e in v.deny.items() if e},
            self.world.identity_of,
        )
        if self._policy_state is not None and state != self._policy_state:
            self._flush_conntrack = True
            self.generation = (self.generation + 1) & 0xFFFFFFFF
        self._policy_state = state

    # --- desired flows -------------------------------------------------------------------------

    def _put(self, owner: Hashable, inputs: object, build) -> None:
        """Recompute an owner's flows only when what they are made from changed."""
        if self._placed.get(owner) == inputs:
            return
        self._placed[owner] = inputs
        self.desired.put(owner, build())

    def _source(self, e, switches: tuple) -> tuple[Hashable, object, object]:
        """(owner, inputs, build) of an endpoint's source classification."""
        identity = self.world.identity_of.get(e.name, WORLD)
        binding = self.bindings.get(str(e.ip))
        return (
            ("ms", "src", str(e.ip)),
            (e, identity, binding, switches),
            lambda: self.compiler.source_flows(e, identity, binding, switches),
        )

    def _install_all(self) -> None:
        switches = tuple(self.topology.switches())
        world, compiler, v = self.world, self.compiler, self._verdicts
        generation = self.generation
        enforcing = bool(v.isolated["ingress"] or v.isolated["egress"] or any(v.deny.values()))
        live: set[Hashable] = set()

        def keep(owner: Hashable, inputs: object, build) -> None:
            live.add(owner)
            self._put(owner, inputs, build)

        keep(
            ("ms", "base"),
            (enforcing, generation, switches),
            lambda: {d: compiler.base_flows(enforcing, generation) for d in switches},
        )
        guards, log = self.guards, self.settings.log
        keep(
            ("ms", "waypoint"),
            (guards, log, switches),
            lambda: {d: compiler.guard_flows(guards, log) for d in switches},
        )
        for e in world.endpoints.values():
            identity = world.identity_of[e.name]
            keep(*self._source(e, switches))
            keep(
                ("ms", "dst", str(e.ip)),
                (e, identity, switches),
                lambda e=e, i=identity: {d: [compiler.destination_flow(e, i)] for d in switches},
            )
        for r in self.replicas.values():
            keep(*self._source(r, switches))
        for direction in ("egress", "ingress"):
            for identity in world.identities:
                isolated = identity in v.isolated[direction]
                allow = frozenset(v.allow.get((direction, identity), ()))
                deny = frozenset(v.deny.get((direction, identity), ()))
                families = frozenset(world.families(identity))
                log = self.settings.log and (isolated or bool(deny))
                inputs = (families, isolated, allow, deny, switches, log)
                keep(
                    ("ms", direction, identity),
                    inputs,
                    partial(self._policy, direction, identity, *inputs),
                )
        for owner in set(self._placed) - live:
            del self._placed[owner]
            self.desired.drop(owner)
        self.identities.set(len(world.identities))
        for direction in ("ingress", "egress"):
            self.isolated.labels(direction).set(len(v.isolated[direction]))

    def _policy(self, direction, identity, families, isolated, allow, deny, switches, log):
        """An identity's policy flows in one direction, the same on every switch."""
        flows = self.compiler.policy_flows(
            direction, identity, set(families), isolated, set(allow), set(deny), log
        )
        return {dpid: flows for dpid in switches}

    # --- bindings ------------------------------------------------------------------------------

    def on_switch_synced(self, dpid: int, installed: list[Flow], now: float) -> None:
        """Bindings live in the switch's flows: a restarted controller takes them back."""
        for f in installed:
            if f.cookie != COOKIE or f.table != self.compiler.src or f.priority != BOUND:
                continue
            match = f.match_dict()
            ip = match.get("ipv4_src") or match.get("ipv6_src")
            if ip and "in_port" in match and str(ip) not in self.bindings:
                self.bindings[str(ip)] = (dpid, match["in_port"])
        self._install_all()

    def on_packet_in(self, pkt: PacketIn, now: float) -> None:
        if pkt.cookie != COOKIE or pkt.table_id != self.compiler.src:
            return
        ip = source_ip(pkt.data)
        endpoint = (self.world.by_ip.get(ip) or self.replicas.get(ip)) if ip else None
        if endpoint is None or ip in self.bindings:
            return
        if pkt.in_port not in self.topology.edge_ports(pkt.dpid):
            return
        if endpoint.mac and pkt.eth_src != endpoint.mac:
            key = (pkt.dpid, pkt.in_port, ip)
            if now - self._spoof_logged.get(key, float("-inf")) >= SPOOF_LOG_INTERVAL:
                self._spoof_logged[key] = now
                LOG.warning(
                    "microseg: %s at switch %016x port %d claims %s (endpoint %s), "
                    "whose MAC is %s: not bound",
                    pkt.eth_src,
                    pkt.dpid,
                    pkt.in_port,
                    ip,
                    endpoint.name,
                    endpoint.mac,
                )
            return
        self.bindings[ip] = (pkt.dpid, pkt.in_port)
        LOG.info(
            "microseg: endpoint %s (%s) bound to switch %016x port %d",
            endpoint.name,
            ip,
            pkt.dpid,
            pkt.in_port,
        )
        self._put(*self._source(endpoint, tuple(self.topology.switches())))

    def tick(self, now: float) -> None:
        """After a policy change, once its flows are out: forget tracked connections, so no
        reply rides on an entry the new policy would not have made. Every STATS_INTERVAL,
        ask each switch for the counters of microseg's flows (per-rule metrics)."""
        if self._flush_conntrack:
            self._flush_conntrack = False
            for dpid in self.topology.switches():
                if self.core.ready(dpid):
                    self.core.send(dpid, [ct_flush_zone(CT_ZONE)])
        if now >= self._next_poll:
            self._next_poll = now + STATS_INTERVAL
            ready = {d for d in self.topology.switches() if self.core.ready(d)}
            self.counters.forget(ready)
            for dpid in sorted(ready):
                self.core.request_flow_stats(self, dpid, ALL_TABLES, COOKIE, APP_MASK)

    def on_flow_stats(self, dpid: int, stats: list, more: bool, now: float) -> None:
        self.counters.add(dpid, stats, more, self.explainer.explain)

    def explain(self, dpid: int, flow: Flow) -> dict | None:
        return self.explainer.explain(flow)

    def on_topology_change(self, now: float) -> None:
        for ip, (dpid, port) in list(self.bindings.items()):
            if port not in self.topology.live_ports(dpid) or port in self.topology.isl_ports(dpid):
                LOG.info("microseg: %s unbound: switch %016x port %d is gone", ip, dpid, port)
                del self.bindings[ip]
        self._install_all()
