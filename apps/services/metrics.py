"""The services app's Prometheus metrics."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from apps.services.settings import Backend, Service
from controller.metrics import Metrics


class ServicesMetrics:
    """`connections`: new connections sent to each backend (counter, labels service and
    backend endpoint); `live_backends`: backends taking new connections (gauge, label
    service)."""

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

    def connected(self, s: Service, b: Backend) -> None:
        """Count one new connection of `s` sent to `b`."""
        self.connections.labels(s.name, b.endpoint).inc()

    def set_live(self, services: Iterable[Service], live: Collection[str]) -> None:
        """Set each service's count of backends whose key is in `live`."""
        for s in services:
            self.live_backends.labels(s.name).set(sum(b.key in live for b in s.backends))
