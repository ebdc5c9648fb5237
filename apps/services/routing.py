"""Istio VirtualService / DestinationRule, Gateway API HTTPRoute and Knative Ingress, read
unmodified.

What a switch can see: who the client is (source labels, namespace, subnet), the destination
port, and the weighted split over destinations. Request conditions (HTTP headers, URI or path,
method, query parameters, authority, scheme) are kept too, as `SourceMatch.http`: an Envoy
waypoint (mesh.waypoint) judges them; without one, the settings reject such a rule by name
(`reject_l7`): the log says which file, line and field, and the rule takes no traffic
(connections it would have taken fall through to the next rule, as if it had not been
written). So are HTTP actions (timeouts, retries, faults, mirrors, header edits, rewrites:
httpactions.py), which only the waypoint does. What neither can do (redirects, CORS, mesh
gateways...) is rejected by name here. The rest of the file still applies, so the seed's
documents load as written.

Order: Istio rules are first-match in list order. Gateway API orders matches by how specific
they are (`HttpMatch.specificity`); among equals the first in list order wins. Rules without
request conditions match everything, so for a switch both become one ordered list.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field
from fractions import Fraction

import apps.services.schemas as schemas
from apps.services.httpactions import Refused, RuleActions, gateway_actions, istio_actions
from apps.services.schemas import HTTP_MATCH_L7, ISTIO_RULE_L7, KNATIVE_PATH_L7, KNATIVE_SPLIT_L7
from apps.services.trafficpolicy import TrafficPolicy, parse_traffic_policy
from controller.config import OBJECT_HEADER, ConfigError, Document
from vnf.waypoint.model import HttpMatch, StringMatch

LOG = logging.getLogger("osken_suite.services")

ISTIO_GROUP = "networking.istio.io/"
GATEWAY_GROUP = "gateway.networking.k8s.io/"
SECURITY_GROUP = "security.istio.io/"
KNATIVE_GROUP = "networking.knative.dev/"
KNATIVE_PERCENT = 100  # a path's splits add up to this (Knative's validation)
GATEWAY_MAX_ITEMS = 16  # rules per HTTPRoute, backendRefs per rule (the CRD's maxItems)

_HTTPROUTE_MATCH_L7 = {"headers", "queryParams", "method"}
# Istio match fields an Envoy waypoint honours (the rest of HTTP_MATCH_L7 stays refused by name).
_ISTIO_MATCH_WAYPOINT = {
    "uri",
    "scheme",
    "method",
    "authority",
    "headers",
    "queryParams",
    "withoutHeaders",
    "ignoreUriCase",
}
_GATEWAY_MATCH_KIND = {"Exact": "exact", "PathPrefix": "prefix", "RegularExpression": "regex"}


@dataclass(frozen=True)
class SourceMatch:
    """One Istio match block's source conditions (ANDed); None means any."""

    labels: tuple[tuple[str, str], ...] | None = None
    namespace: str | None = None
    subnet: ipaddress.IPv4Network | None = None
    port: int | None = None
    destination_subnets: tuple[ipaddress.IPv4Network, ...] | None = None
    http: HttpMatch | None = None  # request conditions: only an L7 waypoint can judge them


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
    actions: RuleActions | None = None  # HTTP actions: only an L7 waypoint does them

    @property
    def needs_waypoint(self) -> bool:
        """Whether only an L7 waypoint can serve it (request conditions or HTTP actions)."""
        return self.l7 is not None or self.actions is not None

    @property
    def l7(self) -> HttpMatch | None:
        """The first match block's request conditions, if any block has some (else None)."""
        return next((m.http for m in self.matches if m.http is not None), None)


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
    subsets: dict[str, tuple[tuple[str, str], ...]]  # subset name -> its labels
    doc: Document
    traffic_policy: TrafficPolicy | None = None
    subset_policies: dict[str, TrafficPolicy] = field(default_factory=dict)

    def policy_for(self, subset: str | None) -> TrafficPolicy | None:
        """The policy for traffic to `subset` (None: the host): the subset's fields win."""
        override = self.subset_policies.get(subset) if subset else None
        if self.traffic_policy is None:
            return override
        return self.traffic_policy.merged(override)


@dataclass(frozen=True)
class HTTPRoute:
    name: str
    namespace: str | None
    parents: tuple[str, ...]
    hostnames: tuple[str, ...]
    rules: tuple[RouteRule, ...]
    doc: Document


@dataclass(frozen=True)
class KnativeIngress:
    """A Knative Ingress: the hosts of its rules, and each HTTP path's split as a rule."""

    name: str
    namespace: str | None
    hosts: tuple[str, ...]
    rules: tuple[RouteRule, ...]
    doc: Document


RoutingDoc = VirtualService | DestinationRule | HTTPRoute | KnativeIngress


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


def _refused(doc: Document, refused: Refused) -> None:
    LOG.warning(
        "%s: %s: %s; neither a switch nor the waypoint does that, so this rule is rejected "
        "and takes no traffic",
        doc.located(refused.where),
        ".".join(map(str, refused.where)),
        refused.what,
    )


def reject_l7(doc: Document, rule: RouteRule) -> None:
    """Say by name that `rule` needs request conditions a switch cannot see or HTTP actions it
    cannot do (with no waypoint to do them): the rule takes no traffic."""
    match = rule.l7
    if match is None and rule.actions is not None:
        _reject(doc, rule.actions.where, f"an HTTP action ({rule.actions.where[-1]})")
        return
    if match is None:
        return
    key = match.where[-1]
    if key in HTTP_MATCH_L7:
        what = f"a match on {HTTP_MATCH_L7[key]}"
    elif key == "path":
        what = "a match on the request path"
    else:
        what = f"a match on the request's {key}"
    LOG.warning(
        "%s: %s: %s; a switch cannot see that, so this rule is rejected and takes no traffic "
        "(mesh.waypoint runs an Envoy waypoint that can)",
        doc.located(match.where),
        ".".join(map(str, match.where)),
        what,
    )


def _labels(value: dict | None) -> tuple[tuple[str, str], ...]:
    """A label map (string values: the schema's LABELS) as sorted pairs."""
    return tuple(sorted((str(k), v) for k, v in (value or {}).items()))


def _network(doc: Document, value, where: tuple) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(str(value), strict=False)
    except ValueError:
        raise doc.error(where, f"{value!r} is not an IPv4 address or subnet") from None


def _weight(value: int | None, default: int) -> Fraction:
    """A weight the schema checked (a whole number >= 0), or `default` when none is given."""
    return Fraction(default if value is None else value)


# --- Istio -------------------------------------------------------------------------------------


def _string_match(value: dict) -> StringMatch:
    """Istio's StringMatch (the schema allows exact, prefix, regex; one is used)."""
    kind = next((k for k in ("exact", "prefix", "regex") if k in value), None)
    if kind is None:
        raise ValueError("a string match needs exact, prefix or regex")
    return StringMatch(kind, str(value[kind]))


def _named(doc: Document, value: dict, where: tuple) -> tuple[tuple[str, StringMatch], ...]:
    out = []
    for name, m in sorted(value.items()):
        try:
            out.append((str(name).lower(), _string_match(m or {})))
        except ValueError as exc:
            raise doc.error(where + (name,), str(exc)) from None
    return tuple(out)


def _istio_http(doc: Document, block: dict, where: tuple) -> HttpMatch | None:
    """The request conditions of an Istio match block, or None if it has none."""
    keys = [k for k in block if k in _ISTIO_MATCH_WAYPOINT]
    if not keys:
        return None

    def one(key: str) -> StringMatch | None:
        if key not in block:
            return None
        try:
            return _string_match(block[key] or {})
        except ValueError as exc:
            raise doc.error(where + (key,), str(exc)) from None

    return HttpMatch(
        path=one("uri"),
        ignore_case=bool(block.get("ignoreUriCase", False)),
        method=one("method"),
        authority=one("authority"),
        scheme=one("scheme"),
        headers=_named(doc, block.get("headers") or {}, where + ("headers",)),
        without_headers=_named(doc, block.get("withoutHeaders") or {}, where + ("withoutHeaders",)),
        query=_named(doc, block.get("queryParams") or {}, where + ("queryParams",)),
        where=where + (keys[0],),
    )


def _istio_match(doc: Document, block: dict, where: tuple) -> SourceMatch | None:
    """A match block as source and request conditions, or None (and a warning) if it needs
    what no one here can see (mesh gateways, or request fields in a `tcp` rule)."""
    honoured = _ISTIO_MATCH_WAYPOINT if where[1] == "http" else set()
    for key in block:
        if key in HTTP_MATCH_L7 and key not in honoured:
            _reject(doc, where + (key,), f"a match on {HTTP_MATCH_L7[key]}")
            return None
    port = block.get("port")
    subnet = block.get("sourceSubnet")
    dsts = block.get("destinationSubnets")
    return SourceMatch(
        labels=_labels(block["sourceLabels"]) if "sourceLabels" in block else None,
        namespace=block.get("sourceNamespace"),
        subnet=_network(doc, subnet, where + ("sourceSubnet",)) if subnet is not None else None,
        port=port,
        destination_subnets=tuple(
            _network(doc, d, where + ("destinationSubnets", i)) for i, d in enumerate(dsts)
        )
        if dsts is not None
        else None,
        http=_istio_http(doc, block, where) if honoured else None,
    )


def _istio_destinations(doc: Document, routes, where: tuple) -> tuple[Destination, ...] | None:
    routes = routes or []
    out = []
    for i, r in enumerate(routes):
        at = where + (i,)
        if "headers" in r:
            _reject(doc, at + ("headers",), "a header rewrite")
            return None
        dest = r["destination"]
        port = (dest.get("port") or {}).get("number")
        # A sole destination takes everything; among several a missing weight is 0.
        default = 1 if len(routes) == 1 else 0
        out.append(
            Destination(
                str(dest["host"]),
                dest.get("subset"),
                port,
                _weight(r.get("weight"), default),
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
        for i, rule in enumerate(spec.get(kind) or []):
            at = ("spec", kind, i)
            actions = None
            extra = [k for k in rule if k in ISTIO_RULE_L7]
            if extra and kind == "tcp":
                _reject(doc, at + (extra[0],), f"an HTTP action ({extra[0]})")
                continue
            try:
                actions = istio_actions(doc, rule, at) if kind == "http" else None
            except Refused as refused:
                _refused(doc, refused)
                continue
            matches = [
                _istio_match(doc, m, at + ("match", j))
                for j, m in enumerate(rule.get("match") or [])
            ]
            if None in matches:
                continue
            destinations = _istio_destinations(doc, rule.get("route"), at + ("route",))
            if destinations is None:
                continue
            if not destinations:
                raise doc.error(at, "a rule needs a route")
            rules.append(RouteRule(tuple(matches), destinations, doc.located(at), actions))
    return tuple(rules)


def _virtual_service(doc: Document, meta: dict, spec: dict) -> VirtualService:
    hosts = tuple(spec.get("hosts") or ())
    return VirtualService(meta["name"], meta.get("namespace"), hosts, _istio_rules(doc, spec), doc)


def _note_policies(doc: Document, top: TrafficPolicy | None, subsets: dict) -> None:
    """Say what of the rule's connection pools the switches enforce (apps/services/connlimit.py);
    outlier detection is enforced everywhere (apps/services/outlier.py, the waypoint)."""
    where = doc.located(("spec", "trafficPolicy") if top is not None else ("spec", "subsets"))
    every = [p for p in (top, *subsets.values()) if p is not None]
    if any(p.connection_pool is not None for p in every):
        LOG.info(
            "%s: spec.trafficPolicy: connectionPool.tcp.maxConnections caps the connections of "
            "a TCP service without a waypoint (one count per service); the pool's other fields "
            "are enforced by the waypoint (mesh.waypoint) only",
            where,
        )


def _destination_rule(doc: Document, meta: dict, spec: dict) -> DestinationRule:
    subsets, policies = {}, {}
    for i, s in enumerate(spec.get("subsets") or []):
        subsets[s["name"]] = _labels(s.get("labels"))
        at = ("spec", "subsets", i, "trafficPolicy")
        policy = parse_traffic_policy(doc, at, s.get("trafficPolicy"))
        if policy is not None:
            policies[s["name"]] = policy
    top = parse_traffic_policy(doc, ("spec", "trafficPolicy"), spec.get("trafficPolicy"))
    if top is not None or policies:
        _note_policies(doc, top, policies)
    return DestinationRule(meta["name"], str(spec["host"]), subsets, doc, top, policies)


# --- Gateway API -------------------------------------------------------------------------------


def _is_default_match(match: dict) -> bool:
    path = match.get("path") or {}
    return path.get("type", "PathPrefix") == "PathPrefix" and path.get("value", "/") == "/"


def _httproute_rules(doc: Document, spec: dict) -> tuple[RouteRule, ...]:
    """The HTTPRoute's rules the switch can honour, in order; the others are rejected by name
    (a warning, the rule left out). Raises ConfigError for a rule that cannot be read."""
    listed = spec.get("rules") or []
    if len(listed) > GATEWAY_MAX_ITEMS:
        raise doc.error(("spec", "rules"), f"at most {GATEWAY_MAX_ITEMS} rules per HTTPRoute")
    rules = (_httproute_rule(doc, rule, ("spec", "rules", i)) for i, rule in enumerate(listed))
    return tuple(r for r in rules if r is not None)


def _httproute_rule(doc: Document, rule: dict, at: tuple) -> RouteRule | None:
    """Rule `rule` at `at`, or None if it needs what neither a switch nor the waypoint can do
    (rejected by name)."""
    try:
        actions = gateway_actions(doc, rule, at)
    except Refused as refused:
        _refused(doc, refused)
        return None
    matches = tuple(
        _httproute_match(doc, match, at + ("matches", j))
        for j, match in enumerate(rule.get("matches") or [])
    )
    destinations = _httproute_destinations(doc, rule, at)
    if destinations is None:
        return None
    if not destinations:
        raise doc.error(at, "a rule needs backendRefs")
    return RouteRule(matches, destinations, doc.located(at), actions)


def _gateway_string(doc: Document, kind: str, value: object, where: tuple) -> StringMatch:
    try:
        return StringMatch(_GATEWAY_MATCH_KIND[kind], str(value))
    except ValueError as exc:
        raise doc.error(where, str(exc)) from None


def _gateway_named(
    doc: Document, values: list, where: tuple
) -> tuple[tuple[str, StringMatch], ...]:
    return tuple(
        (
            str(v["name"]).lower(),
            _gateway_string(doc, v.get("type", "Exact"), v["value"], where + (i, "value")),
        )
        for i, v in enumerate(values)
    )


def _httproute_match(doc: Document, match: dict, at: tuple) -> SourceMatch:
    """One HTTPRouteMatch: the default (PathPrefix /, nothing else) takes every request; any
    other condition is for a waypoint to judge."""
    l7 = [k for k in match if k in _HTTPROUTE_MATCH_L7]
    if not l7 and _is_default_match(match):
        return SourceMatch()
    path = match.get("path") or {}
    where = at + (l7[0] if l7 else "path",)
    http = HttpMatch(
        path=_gateway_string(
            doc, path.get("type", "PathPrefix"), path.get("value", "/"), at + ("path", "value")
        ),
        method=StringMatch("exact", match["method"]) if "method" in match else None,
        headers=_gateway_named(doc, match.get("headers") or [], at + ("headers",)),
        query=_gateway_named(doc, match.get("queryParams") or [], at + ("queryParams",)),
        where=where,
    )
    return SourceMatch(http=http)


def _httproute_destinations(doc: Document, rule: dict, at: tuple) -> tuple[Destination, ...] | None:
    """The rule's backendRefs as destinations (default weight 1), or None if one has filters
    (rejected by name). Raises ConfigError for too many refs or a kind other than Service."""
    refs = rule.get("backendRefs") or []
    if len(refs) > GATEWAY_MAX_ITEMS:
        raise doc.error(at + ("backendRefs",), f"at most {GATEWAY_MAX_ITEMS} backendRefs per rule")
    destinations = []
    for j, ref in enumerate(refs):
        where = at + ("backendRefs", j)
        if ref.get("kind", "Service") != "Service":
            raise doc.error(where + ("kind",), f"backends of kind {ref['kind']!r}")
        if ref.get("filters"):
            _reject(doc, where + ("filters",), "HTTP filters on a backend")
            return None
        weight = _weight(ref.get("weight"), 1)
        destinations.append(Destination(str(ref["name"]), None, ref.get("port"), weight, where))
    return tuple(destinations)


def _httproute(doc: Document, meta: dict, spec: dict) -> HTTPRoute:
    parents = tuple(p.get("name", "") for p in spec.get("parentRefs") or [])
    hostnames = tuple(spec.get("hostnames") or ())
    return HTTPRoute(
        meta["name"], meta.get("namespace"), parents, hostnames, _httproute_rules(doc, spec), doc
    )


# --- Knative ----------------------------------------------------------------------------------


def _knative_ingress(doc: Document, meta: dict, spec: dict) -> KnativeIngress:
    """Every rule's hosts, and each HTTP path as a rule that takes every client: the switch
    sees no Host header, so the paths of all rules form one list in order."""
    if spec.get("tls"):
        _reject(doc, ("spec", "tls"), "TLS termination")
    hosts: list[str] = []
    rules = []
    for i, rule in enumerate(spec.get("rules") or []):
        hosts += rule.get("hosts") or []
        for j, path in enumerate((rule.get("http") or {}).get("paths") or []):
            found = _knative_path(doc, path, ("spec", "rules", i, "http", "paths", j))
            if found is not None:
                rules.append(found)
    return KnativeIngress(meta["name"], meta.get("namespace"), tuple(hosts), tuple(rules), doc)


def _knative_path(doc: Document, path: dict, at: tuple) -> RouteRule | None:
    """One HTTPIngressPath's percent split, or None (and a warning) if it needs what a switch
    cannot do: a path other than "/", header matches or edits, Host rewrites, timeouts,
    retries. Raises ConfigError when its percents do not add up to 100."""
    if path.get("path", "/") not in ("", "/"):
        _reject(doc, at + ("path",), "a match on the request path")
        return None
    for key, what in KNATIVE_PATH_L7.items():
        if path.get(key):
            _reject(doc, at + (key,), what)
            return None
    splits = path.get("splits") or []
    if not splits:
        raise doc.error(at, "a path needs splits")
    destinations = []
    for k, split in enumerate(splits):
        where = at + ("splits", k)
        for key, what in KNATIVE_SPLIT_L7.items():
            if split.get(key):
                _reject(doc, where + (key,), what)
                return None
        default = KNATIVE_PERCENT if len(splits) == 1 else 0
        weight = _weight(split.get("percent"), default)
        destinations.append(
            Destination(str(split["serviceName"]), None, split.get("servicePort"), weight, where)
        )
    total = sum(d.weight for d in destinations)
    if total != KNATIVE_PERCENT:
        raise doc.error(at + ("splits",), f"the percents add up to {total}, not 100")
    return RouteRule((), tuple(destinations), doc.located(at))


_KINDS = {
    (ISTIO_GROUP, "VirtualService"): (_virtual_service, schemas.VIRTUAL_SERVICE),
    (ISTIO_GROUP, "DestinationRule"): (_destination_rule, schemas.DESTINATION_RULE),
    (GATEWAY_GROUP, "HTTPRoute"): (_httproute, schemas.HTTP_ROUTE),
    (KNATIVE_GROUP, "Ingress"): (_knative_ingress, schemas.KNATIVE_INGRESS),
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
        # those are read as security (authz.py, envoyfilter.py)
        if not api.startswith(SECURITY_GROUP) and kind != "EnvoyFilter":
            LOG.info("%s: %s %s is not a routing document; skipped", doc.path, api, kind)
        return None
    parse, schema = found
    doc.validate(schema)
    meta = data.get("metadata") or {}
    if not meta.get("name"):
        raise doc.error(("metadata",), "metadata.name is required")
    spec = data.get("spec") or {}
    try:
        return parse(doc, meta, spec)
    except ConfigError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise doc.error(("spec",), f"malformed {kind}: {exc}") from None
