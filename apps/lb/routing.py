"""Istio VirtualService / DestinationRule and Gateway API HTTPRoute, read unmodified.

Only what a switch can see is kept: who the client is (source labels, namespace, subnet), the
destination port, and the weighted split over destinations. A rule that needs more (HTTP
headers, URI, method, query, rewrites, redirects, retries, mirrors...) is rejected by name:
the log says which file, line and field, and the rule takes no traffic (connections it would
have taken fall through to the next rule, as if it had not been written). The rest of the
file still applies, so the seed's documents load as written.

Order: Istio rules are first-match in list order. Gateway API orders rules by how specific
their matches are; with header, query and method matches rejected, every rule left matches
everything, and among equals the first in list order wins. So both become one ordered list.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from fractions import Fraction

from apps.lb import schemas
from controller.config import OBJECT_HEADER, ConfigError, Document

LOG = logging.getLogger("osken_suite.canary")
Network = ipaddress.IPv4Network

ISTIO_GROUP = "networking.istio.io/"
GATEWAY_GROUP = "gateway.networking.k8s.io/"
GATEWAY_MAX_WEIGHT = 1_000_000
GATEWAY_MAX_ITEMS = 16  # rules per HTTPRoute, backendRefs per rule (the CRD's maxItems)

# Fields a switch cannot see or do, per place; naming them is the whole point.
_HTTP_MATCH_L7 = {
    "uri": "the request URI",
    "scheme": "the URI scheme",
    "method": "the HTTP method",
    "authority": "the HTTP authority (Host)",
    "headers": "HTTP headers",
    "queryParams": "query parameters",
    "withoutHeaders": "HTTP headers",
    "ignoreUriCase": "the request URI",
    "gateways": "mesh gateways",
}
_ISTIO_RULE_L7 = {
    "redirect",
    "directResponse",
    "delegate",
    "rewrite",
    "timeout",
    "retries",
    "fault",
    "mirror",
    "mirrors",
    "mirrorPercentage",
    "mirror_percent",
    "mirrorPercent",
    "corsPolicy",
    "headers",
}
_HTTPROUTE_MATCH_L7 = {"headers", "queryParams", "method"}


@dataclass(frozen=True)
class SourceMatch:
    """One Istio match block's source conditions (ANDed); None means any."""

    labels: tuple[tuple[str, str], ...] | None = None
    namespace: str | None = None
    subnet: Network | None = None
    port: int | None = None
    destination_subnets: tuple[Network, ...] | None = None


@dataclass(frozen=True)
class Destination:
    host: str
    subset: str | None
    port: int | None
    weight: Fraction
    where: tuple


@dataclass(frozen=True)
class RouteRule:
    """One rule: match blocks (ORed; empty = everything) and a weighted split."""

    matches: tuple[SourceMatch, ...]
    destinations: tuple[Destination, ...]
    origin: str  # file:line, for messages


@dataclass(frozen=True)
class VirtualService:
    name: str
    namespace: str | None
    hosts: tuple[str, ...]
    rules: tuple[RouteRule, ...]
    doc: Document


@dataclass(frozen=True)
class DestinationRule:
    name: str
    host: str
    subsets: dict[str, tuple[tuple[str, str], ...]]
    doc: Document


@dataclass(frozen=True)
class HTTPRoute:
    name: str
    namespace: str | None
    parents: tuple[str, ...]
    hostnames: tuple[str, ...]
    rules: tuple[RouteRule, ...]
    doc: Document


RoutingDoc = VirtualService | DestinationRule | HTTPRoute


def short_host(host: str) -> str:
    """`reviews.prod.svc.cluster.local` -> `reviews`: services are known by short name.

    >>> short_host("user-service.default.svc.cluster.local")
    'user-service'
    """
    return host.split(".", 1)[0]


def _reject(doc: Document, where: tuple, what: str) -> None:
    LOG.warning(
        "%s: %s: %s; a switch cannot see that, so this rule is rejected and takes no traffic",
        doc.located(where),
        ".".join(map(str, where)),
        what,
    )


def _mapping(doc: Document, value, where: tuple) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise doc.error(where, "must be a mapping")
    return value


def _list(doc: Document, value, where: tuple) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise doc.error(where, "must be a list")
    return value


def _labels(doc: Document, value, where: tuple) -> tuple[tuple[str, str], ...]:
    """A label map; values are strings (map<string, string>), never numbers read from `1.10`."""
    labels = _mapping(doc, value, where)
    for key, v in labels.items():
        if not isinstance(v, str):
            raise doc.error(where + (key,), f"{v!r} is not a string: quote label values")
    return tuple(sorted((str(k), v) for k, v in labels.items()))


def _network(doc: Document, value, where: tuple) -> Network:
    try:
        return ipaddress.IPv4Network(str(value), strict=False)
    except ValueError:
        raise doc.error(where, f"{value!r} is not an IPv4 address or subnet") from None


def _weight(doc: Document, value, where: tuple, default: int, maximum: int | None) -> Fraction:
    if value is None:
        return Fraction(default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise doc.error(where, f"weight must be a whole number >= 0, not {value!r}")
    if maximum is not None and value > maximum:
        raise doc.error(where, f"weight must be at most {maximum}")
    return Fraction(value)


# --- Istio -------------------------------------------------------------------------------------


def _istio_match(doc: Document, block, where: tuple, l4: bool) -> SourceMatch | None:
    """A match block as source conditions, or None (and a warning) if it needs L7."""
    block = _mapping(doc, block, where)
    for key in block:
        if key in _HTTP_MATCH_L7:
            _reject(doc, where + (key,), f"a match on {_HTTP_MATCH_L7[key]}")
            return None
    known = {"name", "sourceLabels", "sourceNamespace", "port", "statPrefix"}
    if l4:
        known |= {"destinationSubnets", "sourceSubnet"}
    for key in block:
        if key not in known:
            raise doc.error(where + (key,), "unknown key")
    port = block.get("port")
    if port is not None and (not isinstance(port, int) or not 1 <= port <= 65535):
        raise doc.error(where + ("port",), f"{port!r} is not a port number")
    subnet = block.get("sourceSubnet")
    dsts = block.get("destinationSubnets")
    return SourceMatch(
        labels=_labels(doc, block["sourceLabels"], where + ("sourceLabels",))
        if "sourceLabels" in block
        else None,
        namespace=block.get("sourceNamespace"),
        subnet=_network(doc, subnet, where + ("sourceSubnet",)) if subnet is not None else None,
        port=port,
        destination_subnets=tuple(
            _network(doc, d, where + ("destinationSubnets", i))
            for i, d in enumerate(_list(doc, dsts, where + ("destinationSubnets",)))
        )
        if dsts is not None
        else None,
    )


def _istio_destinations(doc: Document, routes, where: tuple) -> tuple[Destination, ...] | None:
    routes = _list(doc, routes, where)
    out = []
    for i, r in enumerate(routes):
        at = where + (i,)
        r = _mapping(doc, r, at)
        for key in r:
            if key == "headers":
                _reject(doc, at + (key,), "a header rewrite")
                return None
            if key not in ("destination", "weight"):
                raise doc.error(at + (key,), "unknown key")
        dest = _mapping(doc, r.get("destination"), at + ("destination",))
        if "host" not in dest:
            raise doc.error(at + ("destination",), "a destination needs a host")
        for key in dest:
            if key not in ("host", "subset", "port"):
                raise doc.error(at + ("destination", key), "unknown key")
        port = _mapping(doc, dest.get("port"), at + ("destination", "port")).get("number")
        if port is not None and (not isinstance(port, int) or not 1 <= port <= 65535):
            raise doc.error(at + ("destination", "port", "number"), f"{port!r} is not a port")
        # A sole destination takes everything; among several a missing weight is 0.
        default = 1 if len(routes) == 1 else 0
        out.append(
            Destination(
                str(dest["host"]),
                dest.get("subset"),
                port,
                _weight(doc, r.get("weight"), at + ("weight",), default, None),
                at,
            )
        )
    if len(out) == 1 and out[0].weight == 0:
        out[0] = Destination(out[0].host, out[0].subset, out[0].port, Fraction(1), out[0].where)
    return tuple(out)


def _istio_rules(doc: Document, spec: dict) -> tuple[RouteRule, ...]:
    if spec.get("tls"):
        _reject(doc, ("spec", "tls"), "TLS routes choose by SNI")
    rules = []
    for kind in ("http", "tcp"):
        for i, rule in enumerate(_list(doc, spec.get(kind), ("spec", kind))):
            at = ("spec", kind, i)
            rule = _mapping(doc, rule, at)
            extra = [k for k in rule if k in _ISTIO_RULE_L7]
            if extra:
                _reject(doc, at + (extra[0],), f"an HTTP action ({extra[0]})")
                continue
            for key in rule:
                if key not in ("name", "match", "route"):
                    raise doc.error(at + (key,), "unknown key")
            matches = [
                _istio_match(doc, m, at + ("match", j), l4=kind == "tcp")
                for j, m in enumerate(_list(doc, rule.get("match"), at + ("match",)))
            ]
            if None in matches:
                continue
            destinations = _istio_destinations(doc, rule.get("route"), at + ("route",))
            if destinations is None:
                continue
            if not destinations:
                raise doc.error(at, "a rule needs a route")
            rules.append(RouteRule(tuple(matches), destinations, doc.located(at)))
    return tuple(rules)


def _virtual_service(doc: Document, meta: dict, spec: dict) -> VirtualService:
    for key in spec:
        if key not in ("hosts", "gateways", "http", "tcp", "tls", "exportTo"):
            raise doc.error(("spec", key), "unknown key")
    hosts = tuple(str(h) for h in _list(doc, spec.get("hosts"), ("spec", "hosts")))
    return VirtualService(meta["name"], meta.get("namespace"), hosts, _istio_rules(doc, spec), doc)


def _destination_rule(doc: Document, meta: dict, spec: dict) -> DestinationRule:
    if "host" not in spec:
        raise doc.error(("spec",), "a DestinationRule needs a host")
    policy = _mapping(doc, spec.get("trafficPolicy"), ("spec", "trafficPolicy"))
    if policy:
        LOG.warning(
            "%s: spec.trafficPolicy (%s): connection pools and outlier detection are not "
            "enforced by the switch; backends leave the split when their port or link goes down",
            doc.located(("spec", "trafficPolicy")),
            ", ".join(sorted(policy)),
        )
    subsets = {}
    for i, s in enumerate(_list(doc, spec.get("subsets"), ("spec", "subsets"))):
        s = _mapping(doc, s, ("spec", "subsets", i))
        if "name" not in s:
            raise doc.error(("spec", "subsets", i), "a subset needs a name")
        subsets[str(s["name"])] = _labels(doc, s.get("labels"), ("spec", "subsets", i, "labels"))
    return DestinationRule(meta["name"], str(spec["host"]), subsets, doc)


# --- Gateway API -------------------------------------------------------------------------------


def _is_default_match(match: dict) -> bool:
    path = match.get("path") or {}
    return path.get("type", "PathPrefix") == "PathPrefix" and path.get("value", "/") == "/"


def _httproute_rules(doc: Document, spec: dict) -> tuple[RouteRule, ...]:
    rules = []
    listed = _list(doc, spec.get("rules"), ("spec", "rules"))
    if len(listed) > GATEWAY_MAX_ITEMS:
        raise doc.error(("spec", "rules"), f"at most {GATEWAY_MAX_ITEMS} rules per HTTPRoute")
    for i, rule in enumerate(listed):
        at = ("spec", "rules", i)
        rule = _mapping(doc, rule, at)
        if rule.get("filters"):
            _reject(doc, at + ("filters",), "HTTP filters (header edits, redirects, rewrites)")
            continue
        rejected = False
        for j, match in enumerate(_list(doc, rule.get("matches"), at + ("matches",))):
            match = _mapping(doc, match, at + ("matches", j))
            l7 = [k for k in match if k in _HTTPROUTE_MATCH_L7]
            if l7:
                _reject(doc, at + ("matches", j, l7[0]), f"a match on the request's {l7[0]}")
                rejected = True
                break
            if not _is_default_match(match):
                _reject(doc, at + ("matches", j, "path"), "a match on the request path")
                rejected = True
                break
        if rejected:
            continue
        refs = _list(doc, rule.get("backendRefs"), at + ("backendRefs",))
        if len(refs) > GATEWAY_MAX_ITEMS:
            raise doc.error(
                at + ("backendRefs",), f"at most {GATEWAY_MAX_ITEMS} backendRefs per rule"
            )
        destinations = []
        for j, ref in enumerate(refs):
            where = at + ("backendRefs", j)
            ref = _mapping(doc, ref, where)
            if "name" not in ref:
                raise doc.error(where, "a backendRef needs a name")
            if ref.get("kind", "Service") != "Service":
                raise doc.error(where + ("kind",), f"backends of kind {ref['kind']!r}")
            if ref.get("filters"):
                _reject(doc, where + ("filters",), "HTTP filters on a backend")
                rejected = True
                break
            port = ref.get("port")
            destinations.append(
                Destination(
                    str(ref["name"]),
                    None,
                    port,
                    _weight(doc, ref.get("weight"), where + ("weight",), 1, GATEWAY_MAX_WEIGHT),
                    where,
                )
            )
        if rejected:
            continue
        if not destinations:
            raise doc.error(at, "a rule needs backendRefs")
        rules.append(RouteRule((), tuple(destinations), doc.located(at)))
    return tuple(rules)


def _httproute(doc: Document, meta: dict, spec: dict) -> HTTPRoute:
    parents = tuple(
        str(_mapping(doc, p, ("spec", "parentRefs", i)).get("name", ""))
        for i, p in enumerate(_list(doc, spec.get("parentRefs"), ("spec", "parentRefs")))
    )
    hostnames = tuple(str(h) for h in _list(doc, spec.get("hostnames"), ("spec", "hostnames")))
    return HTTPRoute(
        meta["name"], meta.get("namespace"), parents, hostnames, _httproute_rules(doc, spec), doc
    )


_KINDS = {
    (ISTIO_GROUP, "VirtualService"): (_virtual_service, schemas.VIRTUAL_SERVICE),
    (ISTIO_GROUP, "DestinationRule"): (_destination_rule, schemas.DESTINATION_RULE),
    (GATEWAY_GROUP, "HTTPRoute"): (_httproute, schemas.HTTP_ROUTE),
}


def parse_routing(doc: Document) -> RoutingDoc | None:
    """One YAML document as a routing object; None (logged) for other kinds."""
    data = doc.data
    if not isinstance(data, dict):
        raise doc.error((), "a routing document must be a mapping")
    doc.validate(OBJECT_HEADER)
    api, kind = str(data.get("apiVersion", "")), data.get("kind")
    found = next((f for (g, k), f in _KINDS.items() if api.startswith(g) and kind == k), None)
    if found is None:
        LOG.info("%s: %s %s is not a routing document; skipped", doc.path, api, kind)
        return None
    parse, schema = found
    doc.validate(schema)
    meta = _mapping(doc, data.get("metadata"), ("metadata",))
    if not meta.get("name"):
        raise doc.error(("metadata",), "metadata.name is required")
    spec = _mapping(doc, data.get("spec"), ("spec",))
    try:
        return parse(doc, meta, spec)
    except ConfigError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise doc.error(("spec",), f"malformed {kind}: {exc}") from None
