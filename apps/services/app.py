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
"""

from __future__ import annotations

import logging
from types import MappingProxyType

from apps.services.compile import (
    COOKIE,
    MAX_BACKENDS,
    MAX_ROUTES,
    PROTOCOLS,
    ServicesCompiler,
    commit_to,
    service_tag,
    vip_mac,
)
from apps.services.settings import (
    ROUTING_SCHEMA,
    SERVICES_SCHEMA,
    Backend,
    Service,
    ServicesSettings,
    parse_services,
)
from apps.services.weights import SmoothWeighted
from controller.app import PacketIn, SuiteApp
from controller.config import DocumentCache
from controller.flows import Flow, group_action, output, packet_out
from controller.packets import (
    ARP_REPLY,
    ARP_REQUEST,
    ETH_TYPE_ARP,
    arp_frame,
    connection_of,
    parse_arp,
)

LOG = logging.getLogger("osken_suite.services")
ARP_PROBE_INTERVAL = 2.0
MAX_LEARNED = 65536  # IP -> MAC entries kept from ARP
# A backend taken out of the config keeps its translation flows this long: its connections
# end normally, and a client reusing a port whose conntrack entry still points at it (TIME_WAIT)
# is not sent into a void.
DRAIN_SECONDS = 300.0


class Services(SuiteApp):
    name = "services"
    config_section = "services"
    config_schemas = MappingProxyType({"services": SERVICES_SCHEMA, "routing": ROUTING_SCHEMA})
    requires = ("apps.l2_learning",)  # forwarding comes from the L2 app
    cookie = COOKIE

    def __init__(self, core) -> None:
        super().__init__(core)
        self.compiler = ServicesCompiler(core.pipeline)
        self.documents = DocumentCache()  # routing files parsed at earlier loads
        self.settings = ServicesSettings()
        # IP -> MAC of every host heard in ARP, so a backend added later is ready at once.
        self.learned_macs: dict[str, str] = {}
        self.located: dict[str, tuple[int, int]] = {}  # MAC -> where it was last seen
        self.rr: dict[tuple[str, int], SmoothWeighted] = {}
        self.backup_rr: dict[str, SmoothWeighted] = {}
        self._placed: object = None
        self._by_address: dict[tuple[str, int, int], tuple[int, Service]] = {}
        self._resolved_services: dict[str, Service] = {}
        self._ff: dict[int, dict[str, dict[str, int]]] = {}  # dpid -> service -> backend -> group
        self._live: set[str] = set()  # backends taking connections, as of the last _install
        self._next_probe = 0.0
        self.draining: list[tuple[Service, float]] = []  # what left the config, until when
        self.connections = core.metrics.counter(
            "osken_services_connections",
            "New connections sent to each backend",
            ("service", "backend"),
        )
        self.live_backends = core.metrics.gauge(
            "osken_services_live_backends",
            "Backends taking new connections, per service",
            ("service",),
        )

    # --- config --------------------------------------------------------------------------------

    def parse_config(self, section, config) -> ServicesSettings:
        settings = parse_services(section, config, self.documents)
        for i, s in enumerate(settings.services):
            if len(s.backends) > MAX_BACKENDS or len(s.routes) > MAX_ROUTES:
                raise config.error(
                    ("services", i),
                    f"at most {MAX_BACKENDS} backends and {MAX_ROUTES} routes per service",
                )
        return settings

    def configure(self, settings: ServicesSettings, now: float) -> None:
        old = {s.name: s for s in self.settings.services}
        self.settings = settings
        self._drain(old, now)
        for s in self.settings.services:
            if old.get(s.name) != s:  # a new split starts a new rotation
                for r in range(len(s.routes)):
                    self.rr.pop((s.name, r), None)
                self.backup_rr.pop(s.name, None)
        self._by_address = {
            (s.vip, PROTOCOLS[s.protocol], s.port): (i, s)
            for i, s in enumerate(self.settings.services)
        }
        self._next_probe = now + ARP_PROBE_INTERVAL
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

    def _drain(self, old: dict[str, Service], now: float) -> None:
        """Backends (and whole services) the new config dropped keep steering what conntrack
        still holds for them, for DRAIN_SECONDS; new connections never go to them."""
        new = {s.name: {b.key for b in s.backends} for s in self.settings.services}
        for name, s in old.items():
            gone = tuple(
                b
                for b in self._resolved_services.get(name, s).backends
                if b.key not in new.get(name, set()) and b.mac
            )
            if gone:
                LOG.info(
                    "services: %s: %s drain for %.0f s",
                    name,
                    ", ".join(b.endpoint for b in gone),
                    DRAIN_SECONDS,
                )
                self.draining.append(
                    (
                        Service(s.name, s.vip, s.port, s.protocol, s.method, gone, (), ()),
                        now + DRAIN_SECONDS,
                    )
                )

    @staticmethod
    def _describe(s: Service, r: int) -> str:
        route = s.routes[r]
        total = sum(w for _, w in route.split) or 1
        split = ", ".join(f"{k} {float(w / total) * 100:.1f}%" for k, w in route.split)
        who = "all clients" if route.sources is None else f"{len(route.sources)} sources"
        return f"{who}: {split}"

    # --- who can take traffic ------------------------------------------------------------------

    def mac_of(self, b: Backend) -> str | None:
        return b.mac or self.learned_macs.get(b.ip)

    def _where(self, b: Backend) -> tuple[int, int] | None:
        mac = self.mac_of(b)
        return None if mac is None else self.located.get(mac)

    def alive(self, b: Backend) -> bool:
        """Ready (its MAC known) and not last seen at a port that is down. A backend never
        seen yet counts as up: the fabric floods to find it."""
        if self.mac_of(b) is None:
            return False
        where = self._where(b)
        return where is None or where[1] in self.topology.live_ports(where[0])

    def _watch(self, dpid: int, b: Backend) -> list[int]:
        """The ports of `dpid` that lead to `b`: its own port if it is here, else every
        equal-cost next hop toward its switch. None known: []."""
        where = self._where(b)
        if where is None:
            return []
        if where[0] == dpid:
            return [where[1]]
        return self.topology.equal_cost_next_hops(dpid, where[0])

    def _refresh_locations(self) -> bool:
        """Copy where the fabric last saw each backend; True if anything moved."""
        hosts = self.topology.hosts()
        changed = False
        for s in self.settings.services:
            for b in s.backends:
                mac = self.mac_of(b)
                if mac in hosts and self.located.get(mac) != hosts[mac]:
                    self.located[mac] = hosts[mac]
                    changed = True
        return changed

    # --- desired flows and groups --------------------------------------------------------------

    def _install(self) -> None:
        switches = tuple(self.topology.switches())
        live = {b.key for s in self.settings.services for b in s.backends if self.alive(b)}
        self._live = live  # every input of liveness reaches _install; a new connection reads this
        inputs = (
            self.settings.services,
            switches,
            frozenset(live),
            tuple(
                sorted((b.ip, self.mac_of(b)) for s in self.settings.services for b in s.backends)
            ),
            tuple(sorted(self.located.items())),
            self.topology.version,
            tuple(self.draining),
        )
        if inputs == self._placed:
            return
        self._placed = inputs
        flows = {}
        groups: dict[int, list] = {d: [] for d in switches}
        self._ff = {d: {} for d in switches}
        for index, s in enumerate(self.settings.services):
            resolved = self._resolved_services[s.name] = self._resolved(s)
            for f in self.compiler.service_flows(resolved):
                flows[f.key] = f
            for dpid in switches:
                groups[dpid] += self._groups(index, resolved, dpid, live)
            has_group = {r for r in range(len(s.routes)) if self._choices(s, r, live)}
            for f in self.compiler.new_connection_flows(index, resolved, has_group.__contains__):
                flows[f.key] = f
            self.live_backends.labels(s.name).set(sum(b.key in live for b in s.backends))
        for retired, _ in self.draining:  # what is in force now wins any shared entry
            for f in self.compiler.service_flows(retired):
                flows.setdefault(f.key, f)
        self.desired.put(("lb", "flows"), {d: list(flows.values()) for d in switches})
        self.desired.put_groups(("lb", "groups"), groups)

    def _resolved(self, s: Service) -> Service:
        """The service with learned MACs filled in."""
        backends = tuple(Backend(b.endpoint, b.ip, self.mac_of(b), b.port) for b in s.backends)
        return Service(s.name, s.vip, s.port, s.protocol, s.method, backends, s.routes, s.backups)

    @staticmethod
    def _backups(s: Service, live: set | None) -> dict[str, object]:
        """Backup key -> weight, of those up (all, with live None). Backups that all have
        weight 0 (nginx's `backup` servers have none) share evenly."""
        weights = dict(s.backups) if any(w for _, w in s.backups) else {k: 1 for k, _ in s.backups}
        return {k: w for k, w in weights.items() if w and (live is None or k in live)}

    def _choices(self, s: Service, r: int, live: set) -> list[tuple[Backend, object]]:
        """(backend, weight) pairs route `r` can use now: its primaries that are up, else the
        backups that are."""
        primaries = [(s.backend(k), w) for k, w in s.routes[r].split if w and k in live]
        return primaries or [(s.backend(k), w) for k, w in self._backups(s, live).items()]

    def _groups(self, index: int, s: Service, dpid: int, live: set) -> list:
        backups = [s.backend(k) for k, _ in s.backups]
        out: list = []
        ff = self._ff[dpid][s.name] = {}
        for b in s.backends:
            if b.mac is None:
                continue
            g = self.compiler.failover_group(
                index, s, b, [k for k in backups if k.mac], lambda x: self._watch(dpid, x)
            )
            if g is not None:
                out.append(g)
                ff[b.key] = g.group_id
        if s.method == "switch":
            for r in range(len(s.routes)):
                choices = self._choices(s, r, live)
                if choices:
                    out.append(self.compiler.select_group(index, r, choices, self._via(ff)))
        return out

    def _via(self, ff: dict):
        """How a switch commits a connection to a backend: through its fast-failover group
        when it has one, else directly."""

        def via(b: Backend):
            if b.key in ff:
                return group_action(ff[b.key])
            return commit_to(b, self.compiler.track)

        return via

    # --- events --------------------------------------------------------------------------------

    def on_switch_synced(self, dpid: int, installed: list[Flow], now: float) -> None:
        """Learned backend MACs live in the switch's steering flows: a restarted controller
        takes them back, so connections in flight keep their way to the backend."""
        backends = {b.ip for s in self.settings.services for b in s.backends if b.mac is None}
        for f in installed:
            if f.cookie != COOKIE or f.table != self.compiler.track:
                continue
            ip = f.match_dict().get("ipv4_dst")
            mac = next(
                (
                    a[2]
                    for ins in f.instructions
                    if ins[0] == "apply"
                    for a in ins[1]
                    if a[:2] == ("set_field", "eth_dst")
                ),
                None,
            )
            if ip in backends and mac and ip not in self.learned_macs:
                self.learned_macs[ip] = mac

    def on_packet_in(self, pkt: PacketIn, now: float) -> None:
        if pkt.eth_type == ETH_TYPE_ARP:
            self._arp(pkt)
        if pkt.cookie == COOKIE and pkt.table_id == self.compiler.track:
            self._new_connection(pkt)

    def _arp(self, pkt: PacketIn) -> None:
        a = parse_arp(pkt.data)
        if a is None:  # not Ethernet/IPv4 ARP, or cut short: not ours to answer
            return
        vip = next((s for s in self.settings.services if s.vip == a.dst_ip), None)
        if a.opcode == ARP_REQUEST and vip is not None and pkt.cookie == COOKIE:
            frame = arp_frame(ARP_REPLY, vip_mac(vip.vip), vip.vip, a.src_mac, a.src_ip)
            self.core.send(pkt.dpid, [packet_out(frame, [output(pkt.in_port)])])
            return
        self._learn_mac(a.src_ip, a.src_mac)

    def _learn_mac(self, ip: str, mac: str) -> None:
        """Hosts are known by the MAC they speak ARP with (a backend's configured MAC wins)."""
        if self.learned_macs.get(ip) == mac or int(mac[:2], 16) & 1:
            return
        self.learned_macs.pop(ip, None)
        if len(self.learned_macs) >= MAX_LEARNED:
            del self.learned_macs[next(iter(self.learned_macs))]  # the oldest goes
        self.learned_macs[ip] = mac
        if any(b.ip == ip and b.mac is None for s in self.settings.services for b in s.backends):
            LOG.info("services: backend %s is at %s", ip, mac)
            self._refresh_locations()
            self._install()

    def _new_connection(self, pkt: PacketIn) -> None:
        conn = connection_of(pkt.data)
        found = self._by_address.get((conn[1], conn[2], conn[4])) if conn else None
        if found is None:
            return
        _, service = found
        src = conn[0]
        backend = self.pick(service, src)
        if backend is None:
            LOG.warning("services: %s: no backend up for %s; connection dropped", service.name, src)
            return
        self.connections.labels(service.name, backend.endpoint).inc()
        resolved = self._resolved_services[service.name].backend(backend.key)
        via = self._via(self._ff.get(pkt.dpid, {}).get(service.name, {}))
        actions = [service_tag(service), via(resolved)]  # the tag: in case it is a hairpin
        self.core.send(pkt.dpid, [packet_out(pkt.data, actions, pkt.in_port)])

    def pick(self, s: Service, src: str) -> Backend | None:
        """The backend for a new connection from `src`: the next turn of the first route that
        takes `src`, among its primaries that are up; if none is up, the backups' next turn.
        A client no route takes gets nothing."""
        r = next((i for i, route in enumerate(s.routes) if route.takes(src)), None)
        if r is None and s.routes:
            return None
        live = self._live
        if r is not None:
            rr = self.rr.setdefault((s.name, r), SmoothWeighted(dict(s.routes[r].split)))
            key = rr.pick(live)
            if key is not None:
                return s.backend(key)
        backups = self._backups(s, live)
        if not backups:
            return None
        rr = self.backup_rr.setdefault(s.name, SmoothWeighted(dict(self._backups(s, None))))
        return s.backend(rr.pick(backups))

    def on_topology_change(self, now: float) -> None:
        self._refresh_locations()
        self._install()

    def on_switch_ready(self, dpid: int, now: float) -> None:
        self._install()

    def tick(self, now: float) -> None:
        drained = [d for d in self.draining if d[1] > now]
        if self._refresh_locations() or len(drained) != len(self.draining):
            self.draining = drained
            self._install()
        if now >= self._next_probe:
            self._next_probe = now + ARP_PROBE_INTERVAL
            self._probe_unknown()

    def _probe_unknown(self) -> None:
        """Ask, from the VIP, for backends whose MAC nobody told us: their reply comes back
        to the VIP's ARP entry and to us."""
        for s in self.settings.services:
            for b in s.backends:
                if self.mac_of(b) is not None:
                    continue
                frame = arp_frame(ARP_REQUEST, vip_mac(s.vip), s.vip, "00:00:00:00:00:00", b.ip)
                for dpid in self.topology.switches():
                    if self.core.ready(dpid):
                        ports = sorted(self.topology.edge_ports(dpid))
                        if ports:
                            self.core.send(dpid, [packet_out(frame, [output(p) for p in ports])])
