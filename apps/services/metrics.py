"""The services app's Prometheus metrics."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from apps.services.compile import vip_mac
from apps.services.settings import Backend, Service
from controller.metrics import Metrics


class ServicesMetrics:
    """`connections`: new connections sent to each backend (counter, labels service and
    backend endpoint); `live_backends`: backends taking new connections (gauge, label
    service). `counts` holds the same connection counts for the topology page."""

    def __init__(self, metrics: Metrics) -> None:
        self.connections = metrics.counter(
            "osken_services_connections",
            "New connections sent to each backend",
            ("service", "backend"),
        )
        self.live_backends = metrics.gauge(
            "osken_services_live_backends",
            "Backends taking new connections, per service",
            ("service",),
        )
        self.counts: dict[tuple[str, str], int] = {}  # (service, endpoint) -> connections

    def connected(self, s: Service, b: Backend) -> None:
        """Count one new connection of `s` sent to `b` (method "exact": the controller's pick)."""
        self.connected_many(s, b.endpoint, 1)

    def connected_many(self, s: Service, endpoint: str, n: int) -> None:
        """Count `n` new connections of `s` sent to the backend `endpoint` (method "switch":
        read from the select groups' bucket counters, counting.py)."""
        self.connections.labels(s.name, endpoint).inc(n)
        self.counts[(s.name, endpoint)] = self.counts.get((s.name, endpoint), 0) + n

    def set_live(self, services: Iterable[Service], live: Collection[str]) -> None:
        """Set each service's count of backends whose key is in `live`."""
        for s in services:
            self.live_backends.labels(s.name).set(sum(b.key in live for b in s.backends))

    def describe(self, services: Iterable[Service], live: Collection[str]) -> list[dict]:
        """Each service as the topology page shows it: per route, the configured split
        (backend endpoint -> percent of new connections) and the observed one: connections
        sent to each backend, picked by the controller (method "exact") or counted by the
        select groups' buckets (method "switch"); None for a waypoint, where Envoy picks."""
        out = []
        for s in services:
            routes = []
            for r in s.routes:
                total = sum(w for _, w in r.split) or 1
                split = {
                    s.backend(k).endpoint: round(float(w / total) * 100, 1) for k, w in r.split
                }
                sources = None if r.sources is None else [str(n) for n in r.sources]
                routes.append({"sources": sources, "split": split})
            observed = None
            if s.method in ("exact", "switch"):
                observed = {
                    b.endpoint: self.counts.get((s.name, b.endpoint), 0) for b in s.backends
                }
            backends = [
                {"endpoint": b.endpoint, "ip": b.ip, "port": b.port, "live": b.key in live}
                for b in s.backends
            ]
            out.append(
                {
                    "name": s.name,
                    "vip": s.vip,
                    "vip_mac": vip_mac(s.vip),
                    "port": s.port,
                    "protocol": s.protocol,
                    "method": s.method,
                    "backends": backends,
                    "routes": routes,
                    "observed": observed,
                }
            )
        return out
