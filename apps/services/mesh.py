"""The `mesh` config section, and the services that get an L7 waypoint: what Envoy serves.

```yaml
mesh:
  certs_dir: mesh-certs          # the lab CA's folder, relative to the config (the default)
  waypoint:
    bridge: s1                   # the Open vSwitch bridge the replicas plug into
    addresses: [10.0.0.250/8]    # one per replica: its address on the lab's network
    concurrency: 1               # Envoy worker threads per replica (optional)
    runtime: docker              # or namespace (optional; Docker when a daemon answers)
```

With a `mesh` section, the lab CA (vnf/waypoint/ca.py) gives every endpoint a certificate for
its Istio principal in `certs_dir`, and the waypoint one of its own for the VIPs it serves.

A service is waypointed when `mesh.waypoint` is set and its routing document has a rule with
request conditions (headers, URI, method, query...). Such a service's VIP:port is steered by
the switches to the waypoint's replicas (a select group, compile.py), which own the VIP for
that port; Envoy routes each request by the document's rules and splits it by weight over the
backends, exactly per request (weighted round-robin in one cluster, vnf/waypoint/model.py).
Services without request conditions keep the switches' own path, unchanged.

Istio rules keep their order (first match wins); Gateway API matches go most specific first
(`HttpMatch.specificity`), ties in list order.

A DestinationRule's trafficPolicy for the hosts (and subsets) a rule sends to becomes its
cluster's circuit breakers and outlier detection (`envoy_policy`). A cluster has one policy:
a rule whose backends fall under different policies gets a cluster per policy, and its route
splits between them at random per request (Envoy's weighted_clusters).
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, replace
from fractions import Fraction

from apps.services.routing import HTTPRoute, RouteRule
from apps.services.trafficpolicy import TrafficPolicy
from controller.config import Config
from controller.endpoints import Endpoint as Workload
from vnf.waypoint.ca import WAYPOINT as WAYPOINT_CERTS
from vnf.waypoint.ca import MeshCA, spiffe_id, usable_name
from vnf.waypoint.model import (
    Cluster,
    Ejection,
    Endpoint,
    HttpMatch,
    Limits,
    Listener,
    Route,
    Tls,
)
from vnf.waypoint.runner import Spec, replica_mac

WAYPOINT_NAME = "waypoint"
MAX_REPLICAS = 16
DEFAULT_CERTS_DIR = "mesh-certs"
_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# The waypoint's own identity (Istio names a waypoint's ServiceAccount after it).
WAYPOINT_PRINCIPAL = "cluster.local/ns/istio-system/sa/waypoint"

MESH_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "certs_dir": {"type": "string", "minLength": 1},
        "waypoint": {
            "type": "object",
            "additionalProperties": False,
            "required": ["bridge", "addresses"],
            "properties": {
                "bridge": {"type": "string", "minLength": 1, "maxLength": 15},
                "addresses": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_REPLICAS,
                    "items": {"type": "string"},
                },
                "concurrency": {"type": "integer", "minimum": 1, "maximum": 16},
                "runtime": {"enum": ["docker", "namespace"]},
            },
        },
    },
}


@dataclass(frozen=True)
class Replica:
    """One waypoint replica as the switches see it: a host with an address and a known MAC."""

    name: str  # "waypoint/0": the "/" keeps it apart from any endpoint's name
    ip: str
    mac: str


@dataclass(frozen=True)
class Mesh:
    spec: Spec
    replicas: tuple[Replica, ...]


def parse_mesh(config: Config) -> Mesh | None:
    """The waypoint's placement, or None without `mesh.waypoint`. Raises ConfigError (located)
    for an address that is not an IPv4 interface address, or one given twice."""
    section = (config.section("mesh") or {}).get("waypoint")
    if section is None:
        return None
    addresses, replicas = [], []
    for i, text in enumerate(section["addresses"]):
        where = ("mesh", "waypoint", "addresses", i)
        try:
            iface = ipaddress.IPv4Interface(text if "/" in text else f"{text}/24")
        except ValueError:
            raise config.error(where, f"{text!r} is not an IPv4 address (10.0.0.250/8)") from None
        ip = str(iface.ip)
        if any(r.ip == ip for r in replicas):
            raise config.error(where, f"{ip} is given twice")
        addresses.append(str(iface))
        replicas.append(Replica(f"{WAYPOINT_NAME}/{i}", ip, replica_mac(ip)))
    spec = Spec(
        WAYPOINT_NAME,
        section["bridge"],
        tuple(addresses),
        section.get("concurrency", 1),
        section.get("runtime"),
    )
    return Mesh(spec, tuple(replicas))


def needs_waypoint(rules: tuple[RouteRule, ...]) -> bool:
    """Whether any rule has request conditions or HTTP actions only a waypoint can do."""
    return any(r.needs_waypoint for r in rules)


def _integer_weights(split: tuple[tuple[str, Fraction], ...]) -> dict[str, int]:
    """Relative weights as the smallest whole numbers with the same ratios; zeros left out."""
    kept = {k: w for k, w in split if w}
    if not kept:
        return {}
    scale = math.lcm(*(w.denominator for w in kept.values()))
    whole = {k: int(w * scale) for k, w in kept.items()}
    common = math.gcd(*whole.values())
    return {k: w // common for k, w in whole.items()}


@dataclass(frozen=True)
class RoutedRule:
    """A rule of a waypointed service with what the resolver made of it: its split, and its
    mirrors' backends (backend keys, percent of requests copied)."""

    rule: RouteRule
    split: tuple[tuple[str, Fraction], ...]
    mirrors: tuple[tuple[tuple[str, ...], float], ...] = ()


def envoy_policy(policy: TrafficPolicy | None) -> tuple[Limits | None, Ejection | None]:
    """A DestinationRule trafficPolicy as a cluster's (limits, ejection), as Istio's pilot
    maps them: tcp.maxConnections -> max_connections, http.http1MaxPendingRequests ->
    max_pending_requests, http.http2MaxRequests -> max_requests, http.maxRetries ->
    max_retries, the rest by name; outlierDetection's consecutive5xxErrors,
    consecutiveGatewayErrors, consecutiveLocalOriginFailures, interval, baseEjectionTime,
    maxEjectionPercent, minHealthPercent (the healthy panic threshold)."""
    if policy is None:
        return None, None
    pool, outlier = policy.connection_pool, policy.outlier_detection
    limits = None
    if pool is not None:
        limits = Limits(
            max_connections=pool.max_connections,
            max_pending_requests=pool.http1_max_pending_requests,
            max_requests=pool.http2_max_requests,
            max_retries=pool.max_retries,
            max_requests_per_connection=pool.max_requests_per_connection,
            connect_timeout=pool.connect_timeout,
            idle_timeout=pool.idle_timeout,
        )
    ejection = None
    if outlier is not None:
        ejection = Ejection(
            consecutive_5xx=outlier.consecutive_5xx,
            consecutive_gateway_failure=outlier.consecutive_gateway,
            consecutive_local_origin_failure=outlier.consecutive_local_origin,
            split_external_local_origin_errors=outlier.split_external_local_origin_errors,
            interval=outlier.interval,
            base_ejection_time=outlier.base_ejection_time,
            max_ejection_percent=outlier.max_ejection_percent,
            min_health_percent=outlier.min_health_percent,
        )
    return limits, ejection


def _by_policy(
    weights: dict[str, int], policies: dict[str, TrafficPolicy]
) -> list[tuple[TrafficPolicy | None, dict[str, int]]]:
    """A rule's backend weights grouped by the trafficPolicy each falls under, in order."""
    groups: dict[TrafficPolicy | None, dict[str, int]] = {}
    for k, w in weights.items():
        groups.setdefault(policies.get(k), {})[k] = w
    return list(groups.items())


def listener(
    name: str,
    vip: str,
    port: int,
    routed: list[RoutedRule],
    addresses: dict[str, tuple[str, int]],
    gateway: bool,
    policies: dict[str, TrafficPolicy] | None = None,
) -> tuple[Listener, list[Cluster]]:
    """Service `name`'s listener on vip:port and the clusters its routes send to: one cluster
    per rule, its backends weighted as the rule splits them (`addresses`: backend key ->
    (ip, port)), limited as `policies` (backend key -> trafficPolicy) says; a rule whose
    backends have different policies gets one cluster per policy (`<name>/<rule>.<k>`),
    weighted by their sums; a cluster per mirror (`<name>/<rule>.mirror<k>`). `gateway`: order
    matches by Gateway API precedence, else keep rule order."""
    clusters, routes = [], []
    for r, item in enumerate(routed):
        groups = _by_policy(_integer_weights(item.split), policies or {}) or [(None, {})]
        named = [
            (f"{name}/{r}" + (f".{k}" if len(groups) > 1 else ""), weights)
            for k, (_, weights) in enumerate(groups)
        ]
        for (cname, weights), (policy, _) in zip(named, groups, strict=True):
            endpoints = tuple(Endpoint(*addresses[k], w) for k, w in weights.items())
            clusters.append(Cluster(cname, endpoints, *envoy_policy(policy)))
        weighted = tuple((c, sum(w.values())) for c, w in named) if len(named) > 1 else ()
        cname = named[0][0] if len(named) == 1 else ""
        mirrors = []
        for k, (keys, percent) in enumerate(item.mirrors):
            mname = f"{name}/{r}.mirror{k}"
            limits = envoy_policy((policies or {}).get(keys[0])) if keys else (None, None)
            clusters.append(
                Cluster(mname, tuple(Endpoint(*addresses[b], 1) for b in keys), *limits)
            )
            mirrors.append((mname, percent))
        actions = None
        if item.rule.actions is not None:
            actions = replace(item.rule.actions.actions, mirrors=tuple(mirrors))
        blocks = [m.http for m in item.rule.matches] or [None]
        routes += [Route(m, cname, item.rule.origin, weighted, actions) for m in blocks]
    if gateway:
        routes.sort(key=lambda x: (x.match or HttpMatch()).specificity())
    return Listener(name, vip, port, tuple(routes)), clusters


def is_gateway(doc: object) -> bool:
    """Whether a routing document's matches follow Gateway API precedence (not list order)."""
    return isinstance(doc, HTTPRoute)


def mesh_ca(config: Config, workloads: list[Workload]) -> MeshCA | None:
    """With a `mesh` section: the lab CA of `mesh.certs_dir`, with a certificate for every
    endpoint's principal (kept from disk when still good, else issued in memory: nothing is
    written until the config is applied). None without the section.

    Raises:
        ConfigError: an endpoint name that cannot be a folder name, or a CA folder whose files
            do not belong together; located.
    """
    section = config.section("mesh")
    if section is None:
        return None
    for i, w in enumerate(config.section("endpoints") or []):
        if not usable_name(w["name"]):
            raise config.error(
                ("endpoints", i, "name"),
                f"{w['name']!r} cannot name its certificate's folder in mesh.certs_dir "
                "(no '/', no leading '.')",
            )
    folder = config.resolve(section.get("certs_dir", DEFAULT_CERTS_DIR))
    try:
        ca = MeshCA.open(folder)
    except ValueError as exc:
        raise config.error(("mesh", "certs_dir"), str(exc)) from None
    for w in workloads:
        ca.issue(w.name, spiffe_id(w.principal))
    return ca


def waypoint_tls(ca: MeshCA | None, listeners: list[Listener]) -> Tls | None:
    """The waypoint's certificate (its principal, and the services' names and VIPs as DNS and
    IP SANs, so clients can check whom they reach) and the CA; None without a CA."""
    if ca is None:
        return None
    names = tuple(sorted({x.name for x in listeners if _DNS_NAME.match(x.name)}))
    vips = tuple(sorted({x.vip for x in listeners}))
    issued = ca.issue(WAYPOINT_CERTS, spiffe_id(WAYPOINT_PRINCIPAL), names, vips)
    return Tls(issued.cert, issued.key, ca.pem)
