"""The `mesh` config section, and the services that get an L7 waypoint: what Envoy serves.

```yaml
mesh:
  waypoint:
    bridge: s1                   # the Open vSwitch bridge the replicas plug into
    addresses: [10.0.0.250/8]    # one per replica: its address on the lab's network
    concurrency: 1               # Envoy worker threads per replica (optional)
    runtime: docker              # or namespace (optional; Docker when a daemon answers)
```

A service is waypointed when `mesh.waypoint` is set and its routing document has a rule with
request conditions (headers, URI, method, query...). Such a service's VIP:port is steered by
the switches to the waypoint's replicas (a select group, compile.py), which own the VIP for
that port; Envoy routes each request by the document's rules and splits it by weight over the
backends, exactly per request (weighted round-robin in one cluster, vnf/waypoint/model.py).
Services without request conditions keep the switches' own path, unchanged.

Istio rules keep their order (first match wins); Gateway API matches go most specific first
(`HttpMatch.specificity`), ties in list order.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from fractions import Fraction

from apps.services.routing import HTTPRoute, RouteRule
from controller.config import Config
from vnf.waypoint.model import Cluster, Endpoint, HttpMatch, Listener, Route
from vnf.waypoint.runner import Spec, replica_mac

WAYPOINT_NAME = "waypoint"
MAX_REPLICAS = 16

MESH_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
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
    """Whether any rule has request conditions only a waypoint can judge."""
    return any(r.l7 is not None for r in rules)


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
    """A rule of a waypointed service with what the resolver made of it: its split."""

    rule: RouteRule
    split: tuple[tuple[str, Fraction], ...]


def listener(
    name: str,
    vip: str,
    port: int,
    routed: list[RoutedRule],
    addresses: dict[str, tuple[str, int]],
    gateway: bool,
) -> tuple[Listener, list[Cluster]]:
    """Service `name`'s listener on vip:port and the clusters its routes send to: one cluster
    per rule, its backends weighted as the rule splits them (`addresses`: backend key ->
    (ip, port)). `gateway`: order matches by Gateway API precedence, else keep rule order."""
    clusters, routes = [], []
    for r, item in enumerate(routed):
        cname = f"{name}/{r}"
        weights = _integer_weights(item.split)
        clusters.append(
            Cluster(cname, tuple(Endpoint(*addresses[k], w) for k, w in weights.items()))
        )
        blocks = [m.http for m in item.rule.matches] or [None]
        routes += [Route(m, cname, item.rule.origin) for m in blocks]
    if gateway:
        routes.sort(key=lambda x: (x.match or HttpMatch()).specificity())
    return Listener(name, vip, port, tuple(routes)), clusters


def is_gateway(doc: object) -> bool:
    """Whether a routing document's matches follow Gateway API precedence (not list order)."""
    return isinstance(doc, HTTPRoute)
