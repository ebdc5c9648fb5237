"""The desired flows and groups of the services: translation, new-connection steering, and the
fast-failover and select groups, recomputed only when one of their inputs changed."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from apps.services.backends import Locations, choices
from apps.services.compile import ServicesCompiler, commit_to
from apps.services.connlimit import connection_cap, limit_zone
from apps.services.settings import WAYPOINT, Backend, Service
from controller.flows import Action, Flow, group_action


class Placement:
    """What the switches should hold for the services, and what it was computed from.

    State: `live` (keys of the backends taking connections, as of the last `place`),
    `resolved` (service name -> the service with learned MACs filled in), `ff`
    (dpid -> service name -> backend key -> fast-failover group id) and the inputs last placed.
    """

    def __init__(self, compiler: ServicesCompiler, locations: Locations) -> None:
        self.compiler = compiler
        self.locations = locations
        self.live: set[str] = set()
        self.resolved: dict[str, Service] = {}
        self.ff: dict[int, dict[str, dict[str, int]]] = {}
        self._placed: object = None

    def place(
        self,
        services: Sequence[Service],
        switches: Sequence[int],
        draining: Sequence[tuple[Service, float]],
    ) -> tuple[dict[int, list[Flow]], dict[int, list]] | None:
        """(flows by dpid, groups by dpid) for `services` on `switches`, keeping the flows of
        `draining` where nothing in force shares their key; None if no input changed since the
        last call (liveness, MACs, locations, topology version included)."""
        macs = self.locations.macs
        live = {b.key for s in services for b in s.backends if self.locations.alive(b)}
        self.live = live  # every input of liveness reaches place; a new connection reads this
        inputs = (
            services,
            switches,
            frozenset(live),
            tuple(sorted((b.ip, macs.mac_of(b)) for s in services for b in s.backends)),
            tuple(sorted(self.locations.located.items())),
            self.locations.topology.version,
            tuple(draining),
        )
        if inputs == self._placed:
            return None
        self._placed = inputs
        flows = {}
        groups: dict[int, list] = {d: [] for d in switches}
        self.ff = {d: {} for d in switches}
        for index, s in enumerate(services):
            resolved = self.resolved[s.name] = self._resolve(s)
            zone = limit_zone(index) if connection_cap(s) is not None else None
            for f in self.compiler.service_flows(resolved, zone):
                flows[f.key] = f
            for dpid in switches:
                groups[dpid] += self._groups(index, resolved, dpid, live)
            if s.method == WAYPOINT:
                has_group = {0} if self._steerable(resolved, live) else set()
            else:
                has_group = {r for r in range(len(s.routes)) if choices(s, r, live)}
            for f in self.compiler.new_connection_flows(index, resolved, has_group.__contains__):
                flows[f.key] = f
        for retired, _ in draining:  # what is in force now wins any shared entry
            for f in self.compiler.service_flows(retired):
                flows.setdefault(f.key, f)
        return {d: list(flows.values()) for d in switches}, groups

    def _resolve(self, s: Service) -> Service:
        """The service with learned MACs filled in."""
        macs = self.locations.macs
        backends = tuple(Backend(b.endpoint, b.ip, macs.mac_of(b), b.port) for b in s.backends)
        return Service(s.name, s.vip, s.port, s.protocol, s.method, backends, s.routes, s.backups)

    def _steerable(self, s: Service, live: set[str]) -> bool:
        """Whether a waypointed service has a live replica the fabric has seen."""
        return any(b.key in live and self.locations.where(b) for b in s.backends)

    def _replicas(self, s: Service, dpid: int, live: set[str]) -> list[tuple[Backend, int]]:
        """A waypointed service's live replicas the fabric has seen, each with the port of
        `dpid` toward it (its own, or the first equal-cost next hop)."""
        out = []
        for b in s.backends:
            ports = self.locations.watch(dpid, b) if b.key in live else []
            if ports:
                out.append((b, ports[0]))
        return out

    def _groups(self, index: int, s: Service, dpid: int, live: set[str]) -> list:
        """The fast-failover group of each backend of `s` with a MAC on `dpid` (recorded in
        `ff`), and for method "switch" each route's select group; for a waypointed service,
        the select group over its replicas."""
        if s.method == WAYPOINT:  # on every switch alike: the steering flow is the same
            if not self._steerable(s, live):
                return []
            return [self.compiler.waypoint_group(index, self._replicas(s, dpid, live))]
        backups = [s.backend(k) for k, _ in s.backups]
        out: list = []
        ff = self.ff[dpid][s.name] = {}
        for b in s.backends:
            if b.mac is None:
                continue
            g = self.compiler.failover_group(
                index, s, b, [k for k in backups if k.mac], lambda x: self.locations.watch(dpid, x)
            )
            if g is not None:
                out.append(g)
                ff[b.key] = g.group_id
        if s.method == "switch":
            for r in range(len(s.routes)):
                route_choices = choices(s, r, live)
                if route_choices:
                    out.append(self.compiler.select_group(index, r, route_choices, self.via(ff)))
        return out

    def via(self, ff: dict[str, int]) -> Callable[[Backend], Action]:
        """How a switch commits a connection to a backend: through its fast-failover group
        (`ff`: backend key -> group id) when it has one, else directly."""

        def via(b: Backend) -> Action:
            if b.key in ff:
                return group_action(ff[b.key])
            return commit_to(b, self.compiler.track)

        return via

    def commit(self, dpid: int, s: Service, b: Backend) -> Action:
        """The action committing a new connection of `s` on `dpid` to backend `b` (its MAC
        filled in as last placed)."""
        resolved = self.resolved[s.name].backend(b.key)
        return self.via(self.ff.get(dpid, {}).get(s.name, {}))(resolved)
