"""Istio DestinationRule `trafficPolicy`: connection pools and outlier detection, read unmodified.

Source: Istio's networking/v1 API reference, DestinationRule (`TrafficPolicy`,
`ConnectionPoolSettings`, `OutlierDetection`). Who enforces what:

- an L7 waypoint (mesh.waypoint) turns both into Envoy circuit breakers and outlier detection;
- for a plain TCP/UDP service the switch and the controller enforce `connectionPool.tcp.
  maxConnections` and eject backends on consecutive connect failures (see docs/services.md).

The seed's `circuitBreaker: {consecutiveErrors, interval, baseEjectionTime}` is Istio's
pre-1.0 field, no longer in the API: it is read as `outlierDetection` with
`consecutive5xxErrors`, and the log says so once per document. Fields neither enforces
(`loadBalancer`, `tls`, `portLevelSettings`, ...) are named in a warning; the rest applies.
A subset's `trafficPolicy` replaces the top level's field by field, as Istio merges them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields, replace

from controller.config import Document
from controller.durations import located_seconds

LOG = logging.getLogger("osken_suite.services")

_COUNT = {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}  # Istio's int32
_PERCENT = {"type": "integer", "minimum": 0, "maximum": 100}
_DURATION = {"type": ["string", "number"]}
_OUTLIER = {
    "type": "object",
    "properties": {
        "consecutiveErrors": _COUNT,
        "consecutive5xxErrors": _COUNT,
        "consecutiveGatewayErrors": _COUNT,
        "consecutiveLocalOriginFailures": _COUNT,
        "splitExternalLocalOriginErrors": {"type": "boolean"},
        "interval": _DURATION,
        "baseEjectionTime": _DURATION,
        "maxEjectionPercent": _PERCENT,
        "minHealthPercent": _PERCENT,
    },
}
TRAFFIC_POLICY_SCHEMA = {
    "type": "object",
    "properties": {
        "connectionPool": {
            "type": "object",
            "properties": {
                "tcp": {
                    "type": "object",
                    "properties": {"maxConnections": _COUNT, "connectTimeout": _DURATION},
                },
                "http": {
                    "type": "object",
                    "properties": {
                        "http1MaxPendingRequests": _COUNT,
                        "http2MaxRequests": _COUNT,
                        "maxRequestsPerConnection": _COUNT,
                        "maxRetries": _COUNT,
                        "idleTimeout": _DURATION,
                    },
                },
            },
        },
        "outlierDetection": _OUTLIER,
        "circuitBreaker": _OUTLIER,
    },
}
_ENFORCED = {
    "connectionPool": {"tcp", "http"},
    "connectionPool.tcp": {"maxConnections", "connectTimeout"},
    "connectionPool.http": {
        "http1MaxPendingRequests",
        "http2MaxRequests",
        "maxRequestsPerConnection",
        "maxRetries",
        "idleTimeout",
    },
}


@dataclass(frozen=True)
class ConnectionPool:
    """`connectionPool`; None: not set (no limit). Durations in seconds."""

    max_connections: int | None = None  # tcp.maxConnections, per backend
    connect_timeout: float | None = None  # tcp.connectTimeout
    http1_max_pending_requests: int | None = None
    http2_max_requests: int | None = None
    max_requests_per_connection: int | None = None
    max_retries: int | None = None
    idle_timeout: float | None = None


@dataclass(frozen=True)
class OutlierDetection:
    """`outlierDetection`, with Istio's defaults (interval 10 s, ejection 30 s, 10%, 0%).

    `consecutive_5xx` counts 5xx answers for HTTP and connect failures for TCP (Istio's
    `consecutive5xxErrors`, default 5; the deprecated `consecutiveErrors` sets it too);
    `consecutive_gateway` counts 502/503/504 only (None: off).
    """

    consecutive_5xx: int = 5
    consecutive_gateway: int | None = None
    consecutive_local_origin: int | None = None
    split_external_local_origin_errors: bool = False
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_percent: int = 10
    min_health_percent: int = 0


@dataclass(frozen=True)
class TrafficPolicy:
    connection_pool: ConnectionPool | None = None
    outlier_detection: OutlierDetection | None = None

    def merged(self, override: TrafficPolicy | None) -> TrafficPolicy:
        """This (top level) policy with a subset's set fields in place of its own."""
        if override is None:
            return self
        return replace(
            self,
            **{
                f.name: getattr(override, f.name)
                for f in fields(self)
                if getattr(override, f.name) is not None
            },
        )


def parse_traffic_policy(doc: Document, where: tuple, spec: dict | None) -> TrafficPolicy | None:
    """The policy at `where` in `doc` (already schema-checked), or None when absent.

    Raises ConfigError (located) for a duration that is not one; warns of fields not enforced.
    """
    if not spec:
        return None
    _warn_unenforced(doc, where, spec)
    outlier = spec.get("outlierDetection")
    at = where + ("outlierDetection",)
    if outlier is None and spec.get("circuitBreaker") is not None:
        outlier, at = spec["circuitBreaker"], where + ("circuitBreaker",)
        LOG.warning(
            "%s: circuitBreaker is not a current Istio field; read as outlierDetection "
            "(consecutiveErrors as consecutive5xxErrors)",
            doc.located(at),
        )
    return TrafficPolicy(
        _connection_pool(doc, where + ("connectionPool",), spec.get("connectionPool")),
        None if outlier is None else _outlier(doc, at, outlier),
    )


def _duration(doc: Document, where: tuple, spec: dict, key: str) -> float | None:
    """Field `key` of `spec` (at `where`) in seconds, None when absent."""
    value = spec.get(key)
    if value is None:
        return None
    return located_seconds(doc, where + (key,), value)


def _connection_pool(doc: Document, where: tuple, spec: dict | None) -> ConnectionPool | None:
    if spec is None:
        return None
    tcp, http = spec.get("tcp") or {}, spec.get("http") or {}
    return ConnectionPool(
        max_connections=tcp.get("maxConnections"),
        connect_timeout=_duration(doc, where + ("tcp",), tcp, "connectTimeout"),
        http1_max_pending_requests=http.get("http1MaxPendingRequests"),
        http2_max_requests=http.get("http2MaxRequests"),
        max_requests_per_connection=http.get("maxRequestsPerConnection"),
        max_retries=http.get("maxRetries"),
        idle_timeout=_duration(doc, where + ("http",), http, "idleTimeout"),
    )


def _outlier(doc: Document, where: tuple, spec: dict) -> OutlierDetection:
    default = OutlierDetection()
    consecutive = spec.get("consecutive5xxErrors", spec.get("consecutiveErrors"))
    return OutlierDetection(
        consecutive_5xx=default.consecutive_5xx if consecutive is None else consecutive,
        consecutive_gateway=spec.get("consecutiveGatewayErrors"),
        consecutive_local_origin=spec.get("consecutiveLocalOriginFailures"),
        split_external_local_origin_errors=spec.get("splitExternalLocalOriginErrors", False),
        interval=_duration(doc, where, spec, "interval") or default.interval,
        base_ejection_time=_duration(doc, where, spec, "baseEjectionTime")
        or default.base_ejection_time,
        max_ejection_percent=spec.get("maxEjectionPercent", default.max_ejection_percent),
        min_health_percent=spec.get("minHealthPercent", default.min_health_percent),
    )


def _warn_unenforced(doc: Document, where: tuple, spec: dict) -> None:
    known = {"connectionPool", "outlierDetection", "circuitBreaker"}
    unenforced = [(where + (k,), k) for k in spec if k not in known]
    pool = spec.get("connectionPool") or {}
    unenforced += [
        (where + ("connectionPool", k), k) for k in pool if k not in _ENFORCED["connectionPool"]
    ]
    for part in ("tcp", "http"):
        allowed = _ENFORCED[f"connectionPool.{part}"]
        at = where + ("connectionPool", part)
        unenforced += [(at + (k,), k) for k in pool.get(part) or {} if k not in allowed]
    for at, name in unenforced:
        LOG.warning(
            "%s: trafficPolicy field %s is not enforced; the rest applies", doc.located(at), name
        )
