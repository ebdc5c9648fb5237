"""What the services app declares for microsegmentation: the backend ports only the waypoint
may open, so L7 policy cannot be bypassed by going straight to a backend's address.

A waypointed service's VIP:port is served by the waypoint, which opens its own connections to
the backends (its clusters' endpoints). A host that connects to a backend's IP:port directly
would skip every route, AuthorizationPolicy and mTLS check there. Microsegmentation
(apps/microseg), when loaded, reads these guards from the services app's settings of the same
config and drops such connections, letting the waypoint's replicas through. Without it nothing
drops them (docs/waypoint.md).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackendGuard:
    """A backend's `ip`:`port` (TCP) that accepts connections only from `waypoints` (the
    replicas' (IPv4 address, MAC) pairs); `services` names the waypointed services that send
    to it."""

    ip: str
    port: int
    waypoints: tuple[tuple[str, str], ...]
    services: tuple[str, ...]

    @property
    def waypoint_ips(self) -> tuple[str, ...]:
        """The addresses of the waypoint replicas allowed through."""
        return tuple(ip for ip, _ in self.waypoints)

    def describe(self) -> str:
        """One line for logs and traces."""
        return (
            f"backend {self.ip}:{self.port}/tcp of waypointed service "
            f"{', '.join(self.services)} accepts only the waypoint "
            f"({', '.join(self.waypoint_ips)})"
        )


def waypoint_guards(settings: object) -> tuple[BackendGuard, ...]:
    """The guards a services app's settings (apps/services/settings.ServicesSettings, or None
    when the app is not loaded) ask for: one per address and port any waypoint cluster sends
    to, sorted; () without a running waypoint (no mesh.waypoint, or no waypointed service)."""
    mesh, plan = getattr(settings, "mesh", None), getattr(settings, "plan", None)
    if mesh is None or plan is None or not plan.listeners:
        return ()
    users: dict[str, set[str]] = {}
    for x in plan.listeners:
        for route in x.routes:
            users.setdefault(route.cluster, set()).add(x.name)
    found: dict[tuple[str, int], set[str]] = {}
    for c in plan.clusters:
        for e in c.endpoints:
            found.setdefault((e.ip, e.port), set()).update(users.get(c.name, {c.name}))
    sources = tuple((r.ip, r.mac) for r in mesh.replicas)
    return tuple(
        BackendGuard(ip, port, sources, tuple(sorted(names)))
        for (ip, port), names in sorted(found.items())
    )
