"""Weighted canaries behind virtual IPs: splits exact to the connection, failover in the switch.

Run it with ``osken-manager apps/services --config lab.yaml``; L2 learning comes along. The
config's `services` put a VIP and port in front of weighted backends (endpoints by name), or
take their split from Istio / Gateway API routing files (`routing`); see docs/services.md.

- Clients only ever see the VIP: the controller answers ARP for it, the switch translates the
  destination to the chosen backend and the replies back, with conntrack NAT (compile.py).
- Method "exact" (the default): each new connection's first packet comes to the controller,
  which picks the backend by smooth weighted round-robin, so the split is exact to within one
  connection whatever the clients' ports; the switch commits the choice and carries the rest
  of the connection alone. Method "switch": a select group picks, with no controller in the
  path, as closely as Open vSwitch's hashing allows.
- Weight changes apply to the next new connection; established ones stay on their backend.
- A backend whose port or link goes down leaves the split at once; `backup: true` backends take
  over while no primary is up, first in the switch (fast-failover groups watching the way to
  each primary), then in the controller's choices.
- A service whose routing needs the request itself (headers, URI, method...) gets an Envoy
  waypoint when the config has `mesh.waypoint` (mesh.py, waypoint.py): the switches steer its
  VIP:port to the waypoint's replicas, and Envoy routes and splits each request.
"""

from __future__ import annotations

import logging
from types import MappingProxyType

from apps.services.arp import ArpProber, MacTable, vip_reply
from apps.services.authz import parse_security
from apps.services.backends import Locations
from apps.services.ciliuml7 import KIND as CILIUM
from apps.services.ciliuml7 import parse_cilium_l7
from apps.services.compile import COOKIE, MAX_BACKENDS, MAX_ROUTES, ServicesCompiler, service_tag
from apps.services.connlimit import (
    MAX_CAPPED_SERVICES,
    connection_cap,
    requested_cap,
    zone_limits,
)
from apps.services.counting import STATS_INTERVAL, GroupCounts
from apps.services.drain import Draining
from apps.services.explain import explain_flow
from apps.services.health import HealthChecker, health_meter
from apps.services.mesh import MESH_SCHEMA
from apps.services.metrics import ServicesMetrics
from apps.services.outlier import TCP_RST, OutlierDetector, reset_flows
from apps.services.picking import ConnectionPicker
from apps.services.placement import Placement
from apps.services.settings import (
    ROUTING_SCHEMA,
    SERVICES_SCHEMA,
    WAYPOINT,
    Backend,
    Service,
    ServicesSettings,
    parse_services,
)
from apps.services.waypoint import WaypointDriver
from apps.services.waypointstats import WaypointStats
from controller.app import PacketIn, SuiteApp
from controller.config import Document, DocumentCache
from controller.ctlimits import ZoneLimits
from controller.flows import Flow, output, packet_out
from controller.packets import (
    ETH_TYPE_ARP,
    ETH_TYPE_IP,
    IPPROTO_TCP,
    connection_of,
    header_fields,
    parse_arp,
)
from controller.policydocs import POLICIES_SCHEMA, is_mine

LOG = logging.getLogger("osken_suite.services")
ANNOUNCE_EVERY = 2.0  # seconds between gratuitous ARPs of waypoint replicas not located yet


class Services(SuiteApp):
    """The services app: wires the core's hooks to ARP (arp.py), backend locations and
    liveness (backends.py), the desired flows and groups (placement.py), new-connection
    picking (picking.py), draining (drain.py) and metrics (metrics.py)."""

    name = "services"
    config_section = "services"
    config_schemas = MappingProxyType(
        {
            "services": SERVICES_SCHEMA,
            "routing": ROUTING_SCHEMA,
            "mesh": MESH_SCHEMA,
            "policies": POLICIES_SCHEMA,  # shared with microseg: its Istio kinds are ours
        }
    )
    requires = ("apps.l2_learning",)  # forwarding comes from the L2 app
    cookie = COOKIE

    def __init__(self, core) -> None:
        super().__init__(core)
        self.compiler = ServicesCompiler(core.pipeline)
        self.documents = DocumentCache()  # routing files parsed at earlier loads
        self.settings = ServicesSettings()
        self.macs = MacTable()
        self.locations = Locations(self.topology, self.macs)
        self.placement = Placement(self.compiler, self.locations)
        self.picker = ConnectionPicker()
        self.drain = Draining()
        self.prober = ArpProber(core, self.topology)
        self.metrics = ServicesMetrics(core.metrics)
        self.health = HealthChecker(self._health_changed, self.metrics.checked)
        self.outlier = OutlierDetector(self.metrics.ejected)
        self.connections = self.metrics.connections
        self.live_backends = self.metrics.live_backends
        self.waypoint = WaypointDriver()
        self.waypoint_stats = WaypointStats(core.metrics)
        self._announce_at = 0.0
        self._loaded = core.loaded
        self.group_counts = GroupCounts(self.metrics.connected_many)
        self._next_poll = 0.0
        self.zone_limits = ZoneLimits()
        self._said_unenforced: set[tuple[str, int]] = set()  # (service, maxConnections) logged

    def _parse_policy(self, doc: Document) -> list:
        """A `policies:` document: the Istio security kinds are ours (authz.py), and a
        CiliumNetworkPolicy's L7 rules (ciliuml7.py: its L3/L4 part is microsegmentation's);
        the rest is another app's (controller/policydocs.py)."""
        if not isinstance(doc.data, dict):
            return []
        if doc.data.get("kind") == CILIUM:
            if not self._loaded("microseg"):
                LOG.warning(
                    "%s: %s: its L3/L4 rules are enforced by apps.microseg, which is not "
                    "loaded; only its L7 rules for service VIPs apply (the waypoint's)",
                    doc.located(("kind",)),
                    CILIUM,
                )
            return parse_cilium_l7(doc)
        if not is_mine(doc, self.name, self._loaded):
            return []
        return parse_security(doc)

    @property
    def draining(self) -> list[tuple[Service, float]]:
        """(retired service, until when in seconds) still steering their connections."""
        return self.drain.entries

    # --- config --------------------------------------------------------------------------------

    def parse_config(self, section, config) -> ServicesSettings:
        settings = parse_services(section, config, self.documents, self._parse_policy)
        for i, s in enumerate(settings.services):
            if len(s.backends) > MAX_BACKENDS or len(s.routes) > MAX_ROUTES:
                raise config.error(
                    ("services", i),
                    f"at most {MAX_BACKENDS} backends and {MAX_ROUTES} routes per service",
                )
            if i >= MAX_CAPPED_SERVICES and connection_cap(s) is not None:
                raise config.error(
                    ("services", i),
                    f"maxConnections: only the first {MAX_CAPPED_SERVICES} services can be capped",
                )
        return settings

    def configure(self, settings: ServicesSettings, now: float) -> None:
        old = {s.name: s for s in self.settings.services}
        self.settings = settings
        self.drain.retire(old, settings.services, self.placement.resolved, now)
        self.picker.configure(old, settings.services)
        self.health.configure(settings.services, now)
        for s in settings.services:
            for b in s.backends:
                h = self.health.states.get((s.name, b.key))
                if h is not None:
                    self.metrics.healthy.labels(s.name, b.endpoint).set(int(h.healthy))
        self.outlier.configure(settings.services)
        self._set_out(now)
        self.prober.restart(now)
        self._save_certificates(settings)
        self.waypoint.configure(settings.mesh, settings.plan)
        self.locations.held = self.waypoint.held()
        self._set_zone_limits()
        self._install()
        self._probe_unknown()  # a new backend that never spoke is asked for its MAC at once
        for s in self.settings.services:
            LOG.info(
                "services: %s %s:%d/%s, method %s: %s",
                s.name,
                s.vip,
                s.port,
                s.protocol,
                s.method,
                "; ".join(self._describe(s, r) for r in range(len(s.routes))) or "backups only",
            )

    def _set_zone_limits(self) -> None:
        """Cap each capped service's counting zone on the local datapath (connlimit.py), and
        lift the caps no longer configured; say loudly when they cannot be enforced, or are
        not asked for (`conntrack_cap`)."""
        unenforced = {
            (s.name, cap)
            for s in self.settings.services
            if (cap := requested_cap(s)) is not None and not s.conntrack_cap
        }
        for name, cap in sorted(unenforced - self._said_unenforced):
            LOG.warning(
                "services: %s: maxConnections %d is not enforced: Open vSwitch's conntrack "
                "counts a closed connection until it sweeps it (about 40 s on 3.1's "
                "userspace datapath), so a cap would refuse connections Istio allows; "
                "put the service behind mesh.waypoint for Envoy's exact count, or set "
                "conntrack_cap: true for the switch's approximation",
                name,
                cap,
            )
        self._said_unenforced = unenforced
        wanted = zone_limits(self.settings.services)
        if not wanted and not self.zone_limits.in_force:
            return
        why = self.zone_limits.usable()
        err = why or self.zone_limits.apply(wanted)
        if err:
            LOG.error(
                "services: connection caps (maxConnections) NOT enforced: %s "
                "(zone limits need the switches' ovs-vswitchd on this machine)",
                err,
            )
            return
        for s in self.settings.services:
            cap = connection_cap(s)
            if cap is not None:
                LOG.info("services: %s: at most %d connections (maxConnections)", s.name, cap)

    @staticmethod
    def _save_certificates(settings: ServicesSettings) -> None:
        """Write the lab CA and the certificates issued for this config (only what is new)."""
        if settings.ca is None:
            return
        try:
            written = settings.ca.save()
        except OSError as exc:
            LOG.error("mesh: could not write certificates to %s: %s", settings.ca.folder, exc)
            return
        if written:
            LOG.info("mesh: certificates issued in %s for %s", settings.ca.folder, written)

    @staticmethod
    def _describe(s: Service, r: int) -> str:
        route = s.routes[r]
        total = sum(w for _, w in route.split) or 1
        split = ", ".join(f"{k} {float(w / total) * 100:.1f}%" for k, w in route.split)
        who = "all clients" if route.sources is None else f"{len(route.sources)} sources"
        return f"{who}: {split}"

    # --- desired flows and groups --------------------------------------------------------------

    def _install(self) -> None:
        switches = tuple(self.topology.switches())
        services = self.settings.services
        self._install_health(switches)
        placed = self.placement.place(services, switches, self.drain.entries)
        if placed is None:
            return
        flows, groups = placed
        self.metrics.set_live(services, self.placement.live)
        self.desired.put(("lb", "flows"), flows)
        self.desired.put_groups(("lb", "groups"), groups)

    def _install_health(self, switches: tuple[int, ...]) -> None:
        """The flows bringing health check answers to the controller, and their meter, on the
        switches the checked backends sit on."""
        table = self.compiler.services_table
        flows = self.health.flows(
            table, self.settings.services, self.locations.where, self.macs.mac_of
        )
        flows = {d: f for d, f in flows.items() if d in switches}
        self.desired.put(("lb", "health"), flows)
        self.desired.put_meters(("lb", "health"), {d: [health_meter()] for d in flows})
        resets = reset_flows(
            self.compiler.track,
            table,
            self.settings.services,
            self.locations.where,
            self.macs.mac_of,
        )
        self.desired.put(("lb", "outlier"), {d: f for d, f in resets.items() if d in switches})

    def _set_out(self, now: float) -> None:
        """Backends out of health or ejected take no new connections."""
        self.locations.out = self.health.unhealthy() | self.outlier.ejected(now)

    def _health_changed(self, s: Service, b: Backend, healthy: bool) -> None:
        """Log and count a backend's health change, once."""
        self.metrics.health(s, b, healthy)
        if healthy:
            LOG.warning(
                "services: %s: backend %s is healthy again; back in the split", s.name, b.key
            )
        else:
            LOG.warning(
                "services: %s: backend %s failed %d health checks in a row; out of the split "
                "(its open connections stay)",
                s.name,
                b.key,
                s.health.unhealthy,
            )

    def _may_probe(self, dpid: int) -> bool:
        """Probes go out only through switches that are ready and take our writes (master)."""
        return self.core.ready(dpid) and self.core.is_master(dpid)

    def _health_moved(self, sends: list, moved: bool, now: float) -> None:
        for dpid, msg in sends:
            self.core.send(dpid, [msg])
        if moved:
            self._set_out(now)
            self._install()

    def _probe_unknown(self) -> None:
        self.prober.probe(self.settings.services, self.macs)

    # --- events --------------------------------------------------------------------------------

    def on_switch_synced(self, dpid: int, installed: list[Flow], now: float) -> None:
        """Learned backend MACs live in the switch's steering flows: a restarted controller
        takes them back, so connections in flight keep their way to the backend."""
        unknown = {b.ip for s in self.settings.services for b in s.backends if b.mac is None}
        self.macs.restore(unknown, installed, COOKIE, self.compiler.track)

    def on_packet_in(self, pkt: PacketIn, now: float) -> None:
        if pkt.eth_type == ETH_TYPE_ARP:
            self._arp(pkt)
        if pkt.cookie == COOKIE and pkt.table_id == self.compiler.track:
            self._new_connection(pkt, now)
        if (
            pkt.cookie == COOKIE
            and pkt.table_id == self.compiler.services_table
            and pkt.eth_type == ETH_TYPE_IP
        ):
            self._answer(pkt, now)

    def _answer(self, pkt: PacketIn, now: float) -> None:
        """A backend's answer to a health check, or a RST it sent a client."""
        sends, moved = self.health.on_answer(
            self.settings.services, pkt.dpid, pkt.in_port, pkt.data
        )
        conn = connection_of(pkt.data)
        rst = conn is not None and conn[2] == IPPROTO_TCP
        if (
            not sends
            and not moved
            and rst
            and header_fields(pkt.data).get("tcp_flags", 0) & TCP_RST
        ):
            at = (pkt.dpid, pkt.in_port)
            moved = self.outlier.reset(conn[0], conn[1], conn[4], at, self.locations.where, now)
        self._health_moved(sends, moved, now)

    def _arp(self, pkt: PacketIn) -> None:
        a = parse_arp(pkt.data)
        if a is None:  # not Ethernet/IPv4 ARP, or cut short: not ours to answer
            return
        if pkt.cookie != COOKIE:  # learn only from ARP that crossed the firewall and microseg
            return
        reply = vip_reply(a, self.settings.services)
        if reply is not None:
            self.core.send(pkt.dpid, [packet_out(reply, [output(pkt.in_port)])])
            return
        if not self.macs.learn(a.src_ip, a.src_mac):
            return
        if any(
            b.ip == a.src_ip and b.mac is None for s in self.settings.services for b in s.backends
        ):
            LOG.info("services: backend %s is at %s", a.src_ip, a.src_mac)
            self.locations.refresh(self.settings.services)
            self._install()

    def _new_connection(self, pkt: PacketIn, now: float) -> None:
        conn = connection_of(pkt.data)
        service = self.picker.service_for(conn)
        if service is None:
            return
        src = conn[0]
        backend = self.picker.pick(service, src, self.placement.live)
        if backend is None:
            LOG.warning("services: %s: no backend up for %s; connection dropped", service.name, src)
            return
        self.metrics.connected(service, backend)
        self.outlier.sent(service, backend, src, conn[3], now)
        actions = self._commit_actions(pkt.dpid, service, backend)
        self.core.send(pkt.dpid, [packet_out(pkt.data, actions, pkt.in_port)])

    def _commit_actions(self, dpid: int, service: Service, backend) -> list:
        """A new connection's packet-out: tagged with its service (in case it is a hairpin),
        then committed to `backend` on switch `dpid`."""
        return [service_tag(service), self.placement.commit(dpid, service, backend)]

    def predict(self, dpid: int, flow: Flow, packet: dict) -> dict | None:
        """For a trace of method "exact": the backend the next new connection from the
        packet's source would get (the rotation copied, not advanced), and the packet-out
        that would commit it."""
        if flow.cookie != COOKIE or flow.table != self.compiler.track:
            return None
        proto = packet.get("ip_proto")
        name = {6: "tcp", 17: "udp"}.get(proto)
        src, dst = packet.get("ipv4_src"), packet.get("ipv4_dst")
        if name is None or src is None:
            return None
        conn = (src, dst, proto, packet.get(f"{name}_src"), packet.get(f"{name}_dst"))
        service = self.picker.service_for(conn)
        backend = None if service is None else self.picker.peek(service, src, self.placement.live)
        if backend is None:
            return None
        return {
            "actions": self._commit_actions(dpid, service, backend),
            "picked": {
                "service": service.name,
                "backend": {"endpoint": backend.endpoint, "ip": backend.ip, "port": backend.port},
                "text": f"the controller's next pick for a new connection from {src} (smooth "
                "weighted round-robin; its turn not taken)",
            },
        }

    def explain(self, dpid: int, flow: Flow) -> dict | None:
        resolved = [self.placement.resolved.get(s.name, s) for s in self.settings.services]
        groups = self.desired.groups.get(dpid, {})
        ff = self.placement.ff.get(dpid, {})
        return explain_flow(self.compiler, resolved, groups, ff, flow, self._out_of_split())

    def _out_of_split(self) -> dict[str, str]:
        """Backend key -> why it takes no new connections: out of health, or ejected."""
        reasons = {key: "ejected (outlierDetection)" for key in self.locations.out}
        return {**reasons, **{key: "out of health" for key in self.health.unhealthy()}}

    def describe(self) -> dict[str, list]:
        live = self.placement.live
        return {
            "services": self.metrics.describe(self.settings.services, live, self._out_of_split())
        }

    def on_topology_change(self, now: float) -> None:
        self.locations.refresh(self.settings.services)
        self._install()

    def on_switch_ready(self, dpid: int, now: float) -> None:
        self._install()

    def tick(self, now: float) -> None:
        moved = self.locations.refresh(self.settings.services)
        expired = self.drain.expire(now)
        if self.waypoint.poll():
            self.locations.held = self.waypoint.held()
            moved = True
        if now >= self._announce_at:  # replicas the fabric has not located yet speak up
            self._announce_at = now + ANNOUNCE_EVERY
            self.waypoint.announce(self._unlocated_replicas())
        if moved or expired:
            self._install()
        if self.prober.due(now):
            self._probe_unknown()
        if self.waypoint.serving and self.waypoint_stats.due(now):
            self.waypoint_stats.start(self.waypoint.admin_sockets(), self.waypoint.plan)
        sends, moved = self.health.tick(
            self.settings.services, self.locations.where, self.macs.mac_of, now, self._may_probe
        )
        self._health_moved(sends, self.outlier.tick(now) or moved, now)
        self._poll_groups(now)

    def _poll_groups(self, now: float) -> None:
        """Every STATS_INTERVAL, while a service picks in the switch (method "switch"), ask
        each ready switch for its groups' counters: its connections per backend (counting.py)."""
        if now < self._next_poll or not any(s.method == "switch" for s in self.settings.services):
            return
        self._next_poll = now + STATS_INTERVAL
        ready = [d for d in self.topology.switches() if self.core.ready(d)]
        self.group_counts.forget(ready)
        for dpid in ready:
            self.core.request_group_stats(self, dpid)

    def on_group_stats(self, dpid: int, stats: list, more: bool, now: float) -> None:
        resolved = [self.placement.resolved.get(s.name, s) for s in self.settings.services]
        groups = self.desired.groups.get(dpid, {})
        ff = self.placement.ff.get(dpid, {})
        self.group_counts.add(dpid, stats, more, now, resolved, groups, ff)

    def _unlocated_replicas(self) -> set[str]:
        return {
            b.endpoint
            for s in self.settings.services
            if s.method == WAYPOINT
            for b in s.backends
            if self.locations.where(b) is None
        }

    def shutdown(self) -> None:
        """Stop the waypoint's replicas and lift the zone limits: they live outside OpenFlow."""
        self.waypoint.close()
        if self.zone_limits.in_force:
            err = self.zone_limits.clear()
            if err:
                LOG.error("services: could not lift connection caps: %s", err)
