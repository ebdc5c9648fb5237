"""Envoy's statistics from the waypoint's replicas, as the services app's Prometheus metrics.

Every `EVERY` seconds the app's tick starts one scrape in a thread of its own (never two at
once; each replica's admin API gets `TIMEOUT` seconds), so the event loop never waits on Envoy.
The scrape reads each replica's `/stats` and adds what grew since the last one to counters per
service (Envoy's counters restart at 0 with a replica: what a restarted one counts is added):

- `osken_waypoint_requests_total{service,code}`: answers by class (`2xx`...), from the
  listener's `http.<service>.downstream_rq_<N>xx`;
- `osken_waypoint_rbac_total{service,decision}`: requests the RBAC filters `allowed` or
  `denied` (a DENY policy's denials plus an ALLOW policy's);
- `osken_waypoint_rate_limited_total{service}`: requests a local rate limit refused (Envoy
  counts those under the filter's own `stat_prefix`: a prefix used by several services is
  counted under each of them);
- `osken_waypoint_ejections_total{service}`: outlier ejections of its clusters' backends;
- `osken_waypoint_overflows_total{service}`: requests its clusters' circuit breakers refused
  (pending queue or request limit full: the 503s).

Source: Envoy's statistics reference (HTTP connection manager, RBAC, local rate limit, cluster
manager "upstream_rq_pending_overflow", outlier detection "ejections_enforced_total").
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from controller.metrics import Metrics
from vnf.waypoint import files
from vnf.waypoint.model import Plan

EVERY = 5.0  # seconds between scrapes
TIMEOUT = 2.0  # seconds a replica's admin API may take
CODES = ("1xx", "2xx", "3xx", "4xx", "5xx")
RATELIMIT = "envoy.filters.http.local_ratelimit"


def _rate_limit_prefixes(plan: Plan) -> dict[str, list[str]]:
    """Each local rate limit `stat_prefix` -> the services whose filter chain has it."""
    out: dict[str, list[str]] = {}
    for x in plan.listeners:
        for p in x.patches:
            value = json.loads(p.value) if p.value else {}
            if value.get("name") != RATELIMIT:
                continue
            config = value.get("typed_config") or {}
            prefix = (config.get("value") or config).get("stat_prefix")
            if prefix and x.name not in out.setdefault(prefix, []):
                out[prefix].append(x.name)
    return out


def totals(stats: dict[str, str], plan: Plan) -> dict[tuple[str, str, str], int]:
    """One replica's statistics (name -> value, as Envoy's /stats) summed per metric:
    (metric, service, label value) -> count. Services are the plan's listeners."""

    def get(name: str) -> int:
        value = stats.get(name, "0")
        return int(value) if value.isdigit() else 0

    out: dict[tuple[str, str, str], int] = {}
    for x in plan.listeners:
        http = f"http.{x.name}."
        for code in CODES:
            out[("requests", x.name, code)] = get(f"{http}downstream_rq_{code}")
        denied = get(f"{http}rbac.deny.denied") + get(f"{http}rbac.allow.denied")
        last = "allow" if x.allow is not None else "deny"  # the filter that lets requests on
        out[("rbac", x.name, "allowed")] = get(f"{http}rbac.{last}.allowed")
        out[("rbac", x.name, "denied")] = denied
        out[("ejections", x.name, "")] = 0
        out[("overflows", x.name, "")] = 0
        out[("rate_limited", x.name, "")] = 0
    for c in plan.clusters:
        service = c.name.rsplit("/", 1)[0]
        if ("ejections", service, "") in out:
            base = f"cluster.{c.name}."
            ejected = get(f"{base}outlier_detection.ejections_enforced_total")
            out[("ejections", service, "")] += ejected
            out[("overflows", service, "")] += get(f"{base}upstream_rq_pending_overflow")
    for prefix, services in _rate_limit_prefixes(plan).items():
        limited = get(f"{prefix}.http_local_rate_limit.rate_limited")
        for service in services:
            out[("rate_limited", service, "")] += limited
    return out


class WaypointStats:
    """The waypoint's Envoy statistics as counters; `scrape` runs in a thread of its own."""

    def __init__(self, metrics: Metrics) -> None:
        self.requests = metrics.counter(
            "osken_waypoint_requests", "Waypoint answers by class", ("service", "code")
        )
        self.rbac = metrics.counter(
            "osken_waypoint_rbac", "Waypoint RBAC decisions", ("service", "decision")
        )
        self.rate_limited = metrics.counter(
            "osken_waypoint_rate_limited", "Requests a local rate limit refused", ("service",)
        )
        self.ejections = metrics.counter(
            "osken_waypoint_ejections", "Backends ejected by outlier detection", ("service",)
        )
        self.overflows = metrics.counter(
            "osken_waypoint_overflows", "Requests circuit breakers refused", ("service",)
        )
        self._last: dict[tuple[str, tuple[str, str, str]], int] = {}  # (socket, key) -> count
        self._busy = threading.Lock()
        self._next = 0.0

    def due(self, now: float) -> bool:
        """Whether a scrape should start now (every EVERY s, never two at once)."""
        if now < self._next or self._busy.locked():
            return False
        self._next = now + EVERY
        return True

    def start(self, sockets: list[str], plan: Plan, spawn: Callable | None = None) -> None:
        """Scrape `sockets` (the replicas' admin APIs) for `plan` in a thread (or `spawn`)."""
        run = spawn or (lambda f: threading.Thread(target=f, daemon=True).start())
        run(lambda: self.scrape(sockets, plan))

    def scrape(self, sockets: list[str], plan: Plan) -> None:
        """Read every replica's statistics and add what grew to the counters."""
        with self._busy:
            for sock in sockets:
                stats = files.stats(sock, timeout=TIMEOUT)
                if not stats:
                    continue
                for key, value in totals(stats, plan).items():
                    before = self._last.get((sock, key), 0)
                    self._last[(sock, key)] = value
                    grew = value - before if value >= before else value  # a restart: from 0
                    if grew:
                        self._counter(key).inc(grew)

    def _counter(self, key: tuple[str, str, str]):
        metric, service, label = key
        if metric == "requests":
            return self.requests.labels(service, label)
        if metric == "rbac":
            return self.rbac.labels(service, label)
        return getattr(self, metric).labels(service)
