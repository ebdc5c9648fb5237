"""Method "exact": the controller picks each new connection's backend by smooth weighted
round-robin (weights.SmoothWeighted), so the split is exact to within one connection."""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterable

from apps.services.backends import backups
from apps.services.compile import PROTOCOLS
from apps.services.settings import Backend, Service
from apps.services.weights import SmoothWeighted


class ConnectionPicker:
    """The rotations new connections take turns in, and the services they address.

    State: one rotation per (service name, route index) and one per service for its backups,
    each started at a service's first pick after its split changed; `by_address` maps
    (VIP, IP protocol number, port) to (service index, service).
    """

    def __init__(self) -> None:
        self.rr: dict[tuple[str, int], SmoothWeighted] = {}
        self.backup_rr: dict[str, SmoothWeighted] = {}
        self.by_address: dict[tuple[str, int, int], tuple[int, Service]] = {}

    def configure(self, old: dict[str, Service], services: Iterable[Service]) -> None:
        """Take `services` (the ones before by name in `old`): a changed split starts a new
        rotation; unchanged ones keep their turn."""
        services = tuple(services)
        for s in services:
            if old.get(s.name) != s:
                for r in range(len(s.routes)):
                    self.rr.pop((s.name, r), None)
                self.backup_rr.pop(s.name, None)
        self.by_address = {
            (s.vip, PROTOCOLS[s.protocol], s.port): (i, s) for i, s in enumerate(services)
        }

    def service_for(self, conn: tuple[str, str, int, int, int] | None) -> Service | None:
        """The service a connection (packets.connection_of's 5-tuple) is addressed to."""
        found = self.by_address.get((conn[1], conn[2], conn[4])) if conn else None
        return None if found is None else found[1]

    def pick(self, s: Service, src: str, live: Collection[str]) -> Backend | None:
        """The backend for a new connection from `src`: the next turn of the first route that
        takes `src`, among its primaries that are up (keys in `live`); if none is up, the
        backups' next turn. A client no route takes gets nothing."""
        r = next((i for i, route in enumerate(s.routes) if route.takes(src)), None)
        if r is None and s.routes:
            return None
        if r is not None:
            rr = self.rr.setdefault((s.name, r), SmoothWeighted(dict(s.routes[r].split)))
            key = rr.pick(live)
            if key is not None:
                return s.backend(key)
        up = backups(s, live)
        if not up:
            return None
        rr = self.backup_rr.setdefault(s.name, SmoothWeighted(dict(backups(s, None))))
        return s.backend(rr.pick(up))

    def peek(self, s: Service, src: str, live: Collection[str]) -> Backend | None:
        """The backend `pick` would give a new connection from `src` now, without taking
        the turn: the rotations of `s` are copied and the copy picks."""
        ahead = ConnectionPicker()
        ahead.rr = {k: copy.deepcopy(v) for k, v in self.rr.items() if k[0] == s.name}
        ahead.backup_rr = {k: copy.deepcopy(v) for k, v in self.backup_rr.items() if k == s.name}
        return ahead.pick(s, src, live)
