"""Envoy's statistics as the services app's metrics (issue 15): per service, answers by class,
RBAC decisions, rate-limited requests, ejections and circuit-breaker overflows; scraped off the
event loop, counted as growth (a restarted Envoy's counts are added, not lost).

envoy-stats.txt is what Envoy 1.40's admin /stats said after: 6 concurrent slow requests
against max_connections 1 and max_pending_requests 1 (4 overflows), 2 requests a DENY policy
refused, 3 answers of 500 (1 ejection), then 100 requests through the seed's rate limit with
its 100 tokens spent (12 refused)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from apps.services import waypointstats
from apps.services.waypointstats import WaypointStats, totals
from controller.metrics import Metrics
from vnf.waypoint.model import (
    AuthzRule,
    Cluster,
    Endpoint,
    FilterPatch,
    Listener,
    Operation,
    Plan,
    Route,
)

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data")
SEED = yaml.safe_load(Path(DATA, "seed-mesh", "rate-limiting.yml").read_text())
LIMIT = json.dumps(SEED["spec"]["configPatches"][0]["patch"]["value"])


def _stats() -> dict[str, str]:
    text = Path(DATA, "waypoint", "envoy-stats.txt").read_text()
    return dict(line.split(": ", 1) for line in text.splitlines())


def _plan(name: str = "svc-a") -> Plan:
    deny = (AuthzRule("default.x[0]", operations=(Operation(paths=("/deny",)),)),)
    patch = FilterPatch("INSERT_FIRST", None, LIMIT, "here")
    x = Listener(name, "10.0.100.10", 80, (Route(None, f"{name}/0", "here"),), deny, None)
    return Plan(
        (Listener(**{**x.__dict__, "patches": (patch,)}),),
        (Cluster(f"{name}/0", (Endpoint("10.0.0.3", 80, 1),)),),
    )


def test_envoys_counts_are_summed_per_service():
    got = totals(_stats(), _plan())
    assert got[("requests", "svc-a", "2xx")] == 2
    assert got[("requests", "svc-a", "4xx")] == 14
    assert got[("requests", "svc-a", "5xx")] == 96
    assert got[("rbac", "svc-a", "allowed")] == 98
    assert got[("rbac", "svc-a", "denied")] == 2
    assert got[("rate_limited", "svc-a", "")] == 12  # under the seed's stat_prefix
    assert got[("ejections", "svc-a", "")] == 1
    assert got[("overflows", "svc-a", "")] == 4


def test_a_service_counts_its_own_listener_and_clusters_only():
    got = totals(_stats(), _plan("other"))
    assert got[("requests", "other", "4xx")] == 0 and got[("overflows", "other", "")] == 0
    # the rate limit is counted by its stat_prefix, which this service's filter has too
    assert got[("rate_limited", "other", "")] == 12
    no_limit = Plan(_plan("other").listeners[:0], _plan("other").clusters)
    assert totals(_stats(), no_limit) == {}


def _value(metrics: Metrics, name: str, **labels) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_counters_grow_by_what_envoy_counted_since_the_last_scrape(monkeypatch):
    metrics = Metrics()
    stats = WaypointStats(metrics)
    seen = [_stats()]
    monkeypatch.setattr(waypointstats.files, "stats", lambda sock, timeout: seen[-1])
    stats.scrape(["a.sock"], _plan())
    stats.scrape(["a.sock"], _plan())  # nothing new
    rate = "osken_waypoint_rate_limited_total"
    assert _value(metrics, rate, service="svc-a") == 12
    seen.append({**_stats(), "rate_limiter.http_local_rate_limit.rate_limited": "15"})
    stats.scrape(["a.sock"], _plan())
    assert _value(metrics, rate, service="svc-a") == 15
    seen.append({**_stats(), "rate_limiter.http_local_rate_limit.rate_limited": "2"})  # restart
    stats.scrape(["a.sock"], _plan())
    assert _value(metrics, rate, service="svc-a") == 17
    assert _value(metrics, "osken_waypoint_requests_total", service="svc-a", code="4xx") == 14
    assert _value(metrics, "osken_waypoint_rbac_total", service="svc-a", decision="denied") == 2
    assert _value(metrics, "osken_waypoint_overflows_total", service="svc-a") == 4


def test_a_scrape_runs_off_the_event_loop_every_few_seconds_never_two_at_once(monkeypatch):
    stats = WaypointStats(Metrics())
    started = []
    assert stats.due(100.0)
    stats.start(["a.sock"], _plan(), spawn=started.append)
    assert len(started) == 1  # handed to a thread, not run here
    assert not stats.due(100.0 + waypointstats.EVERY / 2)
    with stats._busy:  # a scrape still running
        assert not stats.due(100.0 + waypointstats.EVERY * 2)
    assert stats.due(100.0 + waypointstats.EVERY * 3)
    monkeypatch.setattr(waypointstats.files, "stats", lambda sock, timeout: {})
    started[0]()  # a replica that does not answer counts nothing
