"""The services app's Prometheus metrics."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from apps.services.compile import vip_mac
from apps.services.settings import Backend, Service
from controller.metrics import Metrics


class ServicesMetrics:
    """`connections`: new connections sent to each backend (counter, labels service and
    backend endpoint); `live_backends`: backends taking new connections (gauge, label
    service); `healthy`: 1 while a checked backend is in health, 0 out of it (gauge);
    `checks`: health checks by result, success, refused or timeout (counter); `ejections`:
    times a backend left the split, by reason, health or outlier (counter). `counts` holds the
    same connection counts for the topology page."""

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
        self.healthy = metrics.gauge(
            "osken_services_backend_healthy",
            "1 while a checked backend is in health, 0 while it is out",
            ("service", "backend"),
        )
        self.checks = metrics.counter(
            "osken_services_health_checks",
            "Active health checks of each backend, by result (success, refused, timeout)",
            ("service", "backend", "result"),
        )
        self.ejections = metrics.counter(
            "osken_services_ejections",
            "Times a backend left the split, by reason (health, outlier)",
            ("service", "backend", "reason"),
        )
        self.counts: dict[tuple[str, str], int] = {}  # (service, endpoint) -> connections

    def checked(self, s: Service, b: Backend, result: str) -> None:
        """Count one health check of `b` in `s` with `result`."""
        self.checks.labels(s.name, b.endpoint, result).inc()

    def ejected(self, s: Service, b: Backend) -> None:
        """Count an outlier ejection of `b` in `s`."""
        self.ejections.labels(s.name, b.endpoint, "outlier").inc()

    def health(self, s: Service, b: Backend, healthy: bool) -> None:
        """Record `b`'s health in `s`; a backend going out of it counts as an ejection."""
        self.healthy.labels(s.name, b.endpoint).set(int(healthy))
        if not healthy:
            self.ejections.labels(s.name, b.endpoint, "health").inc()

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

    def describe(
        self,
        services: Iterable[Service],
        live: Collection[str],
        out_of_split: dict[str, str] | None = None,
    ) -> list[dict]:
        """Each service as the topology page shows it: per route, the configured split
        (backend endpoint -> percent of new connections) and the observed one: connections
        sent to each backend, picked by the controller (method "exact") or counted by the
        select groups' buckets (method "switch"); None for a waypoint, where Envoy picks. A
        backend taking no new connections because it is out of health or ejected says why
        (`out`, from `out_of_split`: backend key -> reason)."""
        out_of_split = out_of_split or {}
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
                | ({"out": out_of_split[b.key]} if b.key in out_of_split else {})
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
