"""Connection caps: a DestinationRule's `connectionPool.tcp.maxConnections` as a conntrack zone
limit, one counting zone per service.

A capped service's packets pass its own counting zone both ways (compile.py): the client's
packets to VIP:port are committed there before anything else, the replies pass it after their
translations are undone, so the zone's entries are the service's connections as the client
sees them (client address and port, VIP:port). The zone's limit (set with
controller/ctlimits.py) is the cap: Open vSwitch's conntrack refuses a commit past it, and the
packet comes back without the mark the commit sets, which the pipeline drops.

Per service, not per backend (Istio counts per upstream host): the cap is checked before the
backend is picked, on the only key the switch has then, so a refused connection takes no
round-robin turn and no select-group hash, and one zone serves the whole service. A service
whose backends' policies differ (subsets) takes the smallest maxConnections among them.
"""

from __future__ import annotations

from apps.services.settings import WAYPOINT, Service
from controller.pipeline import REGISTRY

ZONES = REGISTRY.get("ct_zone", "services", "limit")  # one per service, by its index
MAX_CAPPED_SERVICES = ZONES.last - ZONES.first + 1
COUNTED_MARK = 0x60  # ct_mark of a connection its counting zone took


def connection_cap(service: Service) -> int | None:
    """The service's cap in connections, or None: no cap (not asked for with `conntrack_cap:
    true`, UDP, a waypoint, or no backend's policy sets `connectionPool.tcp.maxConnections`).
    Shape: a positive int."""
    return requested_cap(service) if service.conntrack_cap else None


def requested_cap(service: Service) -> int | None:
    """The smallest maxConnections the routing files set for a plain TCP service's backends,
    whether or not the switch enforces it (None: none set, UDP, or a waypoint's own)."""
    if service.protocol != "tcp" or service.method == WAYPOINT:
        return None
    caps = [
        p.connection_pool.max_connections
        for _, p in service.traffic_policies
        if p.connection_pool is not None and p.connection_pool.max_connections is not None
    ]
    return min(caps) if caps else None


def limit_zone(index: int) -> int:
    """The counting zone of the service at `index` in the config's list.

    Raises:
        ValueError: past MAX_CAPPED_SERVICES.
    """
    if not 0 <= index < MAX_CAPPED_SERVICES:
        raise ValueError(f"service index {index}: at most {MAX_CAPPED_SERVICES} services")
    return ZONES.first + index


def zone_limits(services: list[Service]) -> dict[int, int]:
    """{counting zone: cap} for every capped service."""
    return {
        limit_zone(i): cap for i, s in enumerate(services) if (cap := connection_cap(s)) is not None
    }
