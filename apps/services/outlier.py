"""Passive outlier detection for TCP services: a backend whose new connections fail is ejected.

The DestinationRule `outlierDetection` (or the seed's legacy `circuitBreaker`) of a backend
(trafficpolicy.OutlierDetection) governs it, for services of method "exact", where the
controller sees every new connection it gives a backend. For a TCP service
`consecutive_5xx` counts connect failures, as Envoy's does for TCP (Istio's reference,
`consecutive5xxErrors`):

- a connection the backend answers with a RST within CONNECT_WINDOW seconds of its SYN is a
  failure (a flow on the backend's own switch copies the RSTs it sends from its own port, MAC,
  IP and service port to the controller, the packet's way otherwise unchanged);
- one it does not reset within that window is a success, and ends the run.

`consecutive_5xx` failures in a row eject the backend for `base_ejection_time` (Envoy ejects
for base x times ejected; here each ejection lasts the base time). `max_ejection_percent`
caps the share of a service's backends ejected at once, but one may always be (as Envoy
does): floor(backends x percent / 100), at least 1. Ejected, a backend takes no new
connections (backends.Locations.alive); its open ones stay. A backend that never answers a SYN
is left to the active checks (health.py): with no SYN-ACK seen here, silence and success look
alike.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from apps.services.compile import COOKIE, CT_ZONE
from apps.services.settings import Backend, Service
from apps.services.trafficpolicy import OutlierDetection
from controller.flows import Flow, apply, conntrack, flow, nat, to_controller
from controller.packets import ETH_TYPE_IP, IPPROTO_TCP

LOG = logging.getLogger("osken_suite.services")
CONNECT_WINDOW = 1.0  # seconds: a RST this soon after the SYN is a failed connect
# services table: above a backend's replies, below its hairpin replies (which take zone 10
# first) and the health checks' answers
RESET_PRIORITY = 340
TCP_RST = 0x004
MAX_PENDING = 65536  # new connections remembered for their connect window


@dataclass
class Ejection:
    """A backend's run of connect `failures`, and until when it is ejected (0: it is not)."""

    failures: int = 0
    until: float = 0.0


def detection(s: Service, b: Backend) -> OutlierDetection | None:
    """The outlier detection the controller enforces for `b` in `s`, if any."""
    if s.method != "exact" or s.protocol != "tcp":
        return None
    policy = s.traffic_policy(b.key)
    return None if policy is None else policy.outlier_detection


def reset_flows(
    track_table: int, table: int, services: Iterable[Service], locate, mac_of
) -> dict[int, list[Flow]]:
    """dpid -> the flows copying each detected backend's RSTs, from its own port on that
    switch, to the controller; the packet then goes on as any reply of the backend's (through
    zone CT_ZONE, un-NATed, to `track_table`)."""
    untranslate = conntrack(CT_ZONE, track_table, nested=(nat(),))
    out: dict[int, list[Flow]] = {}
    for s in services:
        for b in s.backends:
            where, mac = locate(b), mac_of(b)
            if detection(s, b) is None or where is None or mac is None:
                continue
            match = {
                "in_port": where[1],
                "eth_src": mac,
                "eth_type": ETH_TYPE_IP,
                "ipv4_src": b.ip,
                "ip_proto": IPPROTO_TCP,
                "tcp_src": b.port,
                "tcp_flags": (TCP_RST, TCP_RST),
            }
            actions = apply(to_controller(128), untranslate)
            out.setdefault(where[0], []).append(
                flow(table, RESET_PRIORITY, match, actions, cookie=COOKIE)
            )
    return out


class OutlierDetector:
    """Connect failures per (service name, backend key), and who is ejected.

    `pending` maps (backend ip, client ip, client port) to (service, backend, when sent), oldest
    first, at most MAX_PENDING; `ejected` is called with (service, backend) once per ejection.
    """

    def __init__(self, ejected: Callable[[Service, Backend], None]) -> None:
        self.runs: dict[tuple[str, str], Ejection] = {}
        self.pending: OrderedDict[tuple[str, str, int], tuple[Service, Backend, float]] = (
            OrderedDict()
        )
        self.on_ejected = ejected

    def configure(self, services: Iterable[Service]) -> None:
        """Keep the runs and ejections of backends still detected; forget the rest."""
        keep = {(s.name, b.key) for s in services for b in s.backends if detection(s, b)}
        self.runs = {k: v for k, v in self.runs.items() if k in keep}
        self.pending.clear()

    def sent(self, s: Service, b: Backend, client: str, sport: int, now: float) -> None:
        """A new connection from client:sport went to `b`: watch its connect window."""
        if detection(s, b) is None:
            return
        key = (b.ip, client, sport)
        self.pending.pop(key, None)
        if len(self.pending) >= MAX_PENDING:
            self.pending.popitem(last=False)
        self.pending[key] = (s, b, now)

    def reset(
        self, src: str, dst: str, dport: int, came_from: tuple[int, int], locate, now: float
    ) -> bool:
        """A RST from backend `src` to client dst:dport that came in at `came_from` (dpid,
        port); True if that ejected the backend. Only one from the backend's own port
        (`locate`) within its connection's window counts."""
        found = self.pending.get((src, dst, dport))
        if found is None or now - found[2] > CONNECT_WINDOW or locate(found[1]) != came_from:
            return False
        del self.pending[(src, dst, dport)]
        s, b, _ = found
        od = detection(s, b)
        run = self.runs.setdefault((s.name, b.key), Ejection())
        run.failures += 1
        if run.failures < od.consecutive_5xx or run.until > now:
            return False
        if not self._may_eject(s, od, now):
            LOG.warning(
                "services: %s: backend %s failed %d connects in a row, but maxEjectionPercent "
                "%d%% is reached; it stays",
                s.name,
                b.key,
                run.failures,
                od.max_ejection_percent,
            )
            return False
        run.until, run.failures = now + od.base_ejection_time, 0
        LOG.warning(
            "services: %s: backend %s refused %d new connections in a row; ejected for %.0f s "
            "(outlierDetection)",
            s.name,
            b.key,
            od.consecutive_5xx,
            od.base_ejection_time,
        )
        self.on_ejected(s, b)
        return True

    def _may_eject(self, s: Service, od: OutlierDetection, now: float) -> bool:
        out = sum(self.runs.get((s.name, b.key), Ejection()).until > now for b in s.backends)
        cap = max(1, len(s.backends) * od.max_ejection_percent // 100)
        return out < cap

    def tick(self, now: float) -> bool:
        """Connections past their window unreset are successes; ejections past their time
        end. True if any ejection ended."""
        while self.pending:
            key, (s, b, when) = next(iter(self.pending.items()))
            if now - when <= CONNECT_WINDOW:
                break
            del self.pending[key]
            run = self.runs.get((s.name, b.key))
            if run is not None:
                run.failures = 0
        ended = False
        for (name, key), run in self.runs.items():
            if run.until and run.until <= now:
                run.until = 0.0
                ended = True
                LOG.warning("services: %s: backend %s is back from its ejection", name, key)
        return ended

    def ejected(self, now: float) -> frozenset[str]:
        """Keys of the backends ejected at `now`."""
        return frozenset(key for (_, key), run in self.runs.items() if run.until > now)
