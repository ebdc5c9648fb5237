"""Where each backend is, whether it can take connections, and whom a route fails over to.

A backend is up when its MAC is known and it was not last seen at a port that is down; one
never seen yet counts as up (the fabric floods to find it). A route uses its primaries that are
up, else the `backup: true` backends that are.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from apps.services.arp import MacTable
from apps.services.settings import Backend, Service
from controller.topology import Topology


class Locations:
    """Where the fabric last saw each backend, and what follows from it.

    `located` maps a backend MAC to (dpid, port) where the topology last saw it; MACs come
    from the backend's config or from `macs`. `held`: endpoint names of backends that are
    there but not serving yet (a waypoint replica whose Envoy has not taken its config).
    `out`: keys of backends out of health or ejected (health.py, outlier.py).
    """

    def __init__(self, topology: Topology, macs: MacTable) -> None:
        self.topology = topology
        self.macs = macs
        self.located: dict[str, tuple[int, int]] = {}
        self.held: frozenset[str] = frozenset()  # endpoints not serving yet (waypoints)
        self.out: frozenset[str] = frozenset()  # backend keys out of health or ejected

    def where(self, b: Backend) -> tuple[int, int] | None:
        """(dpid, port) where `b` was last seen, else None."""
        mac = self.macs.mac_of(b)
        return None if mac is None else self.located.get(mac)

    def alive(self, b: Backend) -> bool:
        """Ready (its MAC known) and not last seen at a port that is down. A backend never
        seen yet counts as up: the fabric floods to find it. A held one, or one out of health
        or ejected, is down."""
        if self.macs.mac_of(b) is None or b.endpoint in self.held or b.key in self.out:
            return False
        where = self.where(b)
        return where is None or where[1] in self.topology.live_ports(where[0])

    def watch(self, dpid: int, b: Backend) -> list[int]:
        """The ports of `dpid` that lead to `b`: its own port if it is here, else every
        equal-cost next hop toward its switch. None known: []."""
        where = self.where(b)
        if where is None:
            return []
        if where[0] == dpid:
            return [where[1]]
        return self.topology.equal_cost_next_hops(dpid, where[0])

    def refresh(self, services: Iterable[Service]) -> bool:
        """Copy where the fabric last saw each backend of `services`; True if anything moved."""
        hosts = self.topology.hosts()
        changed = False
        for s in services:
            for b in s.backends:
                mac = self.macs.mac_of(b)
                if mac in hosts and self.located.get(mac) != hosts[mac]:
                    self.located[mac] = hosts[mac]
                    changed = True
        return changed


def backups(s: Service, live: Collection[str] | None) -> dict[str, object]:
    """Backup key -> weight, of those up (keys in `live`; all, with live None). Backups that
    all have weight 0 (nginx's `backup` servers have none) share evenly."""
    weights = dict(s.backups) if any(w for _, w in s.backups) else {k: 1 for k, _ in s.backups}
    return {k: w for k, w in weights.items() if w and (live is None or k in live)}


def choices(s: Service, r: int, live: Collection[str]) -> list[tuple[Backend, object]]:
    """(backend, weight) pairs route `r` can use now: its primaries that are up (keys in
    `live`), else the backups that are."""
    primaries = [(s.backend(k), w) for k, w in s.routes[r].split if w and k in live]
    return primaries or [(s.backend(k), w) for k, w in backups(s, live).items()]
