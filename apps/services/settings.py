"""The `services` and `routing` config sections, resolved into what the switch enforces.

A service is a virtual IP and port. Its split comes from its own `backends` list, or from
routing documents (Istio VirtualService + DestinationRule, Gateway API HTTPRoute, Knative
Ingress) that name it: a VirtualService by one of its `hosts` (short name) or, without hosts, by
its own name; an HTTPRoute by a `parentRefs` name, a hostname or its own name; a Knative Ingress
by a host of one of its rules (short name) or its own name. A route destination names a host:
the backends of the service of that name, or else the endpoints labelled `app: <host>`; a
subset narrows them by the DestinationRule's labels. A destination's weight is shared equally
by its endpoints. `backup: true` backends take traffic only while no primary is up.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from fractions import Fraction

from apps.services import ciliuml7
from apps.services.authz import (
    SecurityDoc,
    ServiceSecurity,
    for_service,
    parse_security,
    warn_unenforced,
)
from apps.services.ciliuml7 import CiliumL7, Workloads
from apps.services.mesh import (
    Mesh,
    RoutedRule,
    is_gateway,
    listener,
    mesh_ca,
    needs_waypoint,
    parse_mesh,
    waypoint_tls,
)
from apps.services.routing import (
    Destination,
    DestinationRule,
    HTTPRoute,
    KnativeIngress,
    RouteRule,
    RoutingDoc,
    SourceMatch,
    VirtualService,
    parse_routing,
    reject_l7,
    short_host,
)
from apps.services.trafficpolicy import TrafficPolicy
from controller.config import Config, Document, DocumentCache
from controller.durations import parse_duration
from controller.endpoints import Endpoint, parse_endpoints
from vnf.waypoint import envoy
from vnf.waypoint.ca import MeshCA
from vnf.waypoint.model import Cluster, Listener, Plan

LOG = logging.getLogger("osken_suite.services")
METHODS = ("exact", "switch")
WAYPOINT = "waypoint"  # the method of a service whose VIP:port an Envoy waypoint serves

SERVICES_SCHEMA = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["name", "vip", "port"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "vip": {"type": "string"},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "protocol": {"enum": ["tcp", "udp", "TCP", "UDP"]},
            "method": {"enum": list(METHODS)},
            "backends": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["endpoint"],
                    "additionalProperties": False,
                    "properties": {
                        "endpoint": {"type": "string"},
                        "weight": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
                        "backup": {"type": "boolean"},
                        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                    },
                },
            },
            "conntrack_cap": {"type": "boolean"},
            "health": {
                "oneOf": [
                    {"const": False},
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "interval": {"type": ["string", "number"]},
                            "timeout": {"type": ["string", "number"]},
                            "unhealthy": {"type": "integer", "minimum": 1, "maximum": 1000},
                            "healthy": {"type": "integer", "minimum": 1, "maximum": 1000},
                            "send": {"type": "string", "maxLength": 1024},
                            "expect": {"type": "string", "maxLength": 1024},
                        },
                    },
                ]
            },
        },
    },
}
ROUTING_SCHEMA = {"type": "array", "items": {"type": "string"}}  # files or folders


@dataclass(frozen=True)
class Backend:
    endpoint: str
    ip: str
    mac: str | None
    port: int

    @property
    def key(self) -> str:
        return f"{self.endpoint}:{self.port}"


@dataclass(frozen=True)
class HealthCheck:
    """A service's active health check (`health:`; apps/services/health.py). Seconds, counts
    of consecutive checks; `send`/`expect`: a UDP probe's payload and the reply it must start
    with (None: not set)."""

    interval: float = 1.0
    timeout: float = 1.0
    unhealthy: int = 3
    healthy: int = 2
    send: bytes | None = None
    expect: bytes | None = None


def parse_health(config: Config, i: int, spec: dict) -> HealthCheck | None:
    """Service item `i`'s `health` (schema-checked): None for `false`, defaults when absent.
    Raises ConfigError at the field for a duration that is not one."""
    given = spec.get("health", {})
    if given is False:
        return None
    durations = {}
    for key in ("interval", "timeout"):
        if key in given:
            durations[key] = parse_duration(given[key])
            if durations[key] is None:
                raise config.error(
                    ("services", i, "health", key),
                    f"{given[key]!r} is not a duration (e.g. 1s, 500ms)",
                )
    text = {k: given[k].encode() for k in ("send", "expect") if k in given}
    counts = {k: given[k] for k in ("unhealthy", "healthy") if k in given}
    return HealthCheck(**durations, **counts, **text)


@dataclass(frozen=True)
class Route:
    """A first-match rule: the sources it takes (None: all) and its split (backend key, weight)."""

    sources: tuple[ipaddress.IPv4Network, ...] | None
    split: tuple[tuple[str, Fraction], ...]
    origin: str

    def takes(self, ip: str) -> bool:
        if self.sources is None:
            return True
        addr = ipaddress.IPv4Address(ip)
        return any(addr in net for net in self.sources)


@dataclass(frozen=True)
class Service:
    name: str
    vip: str
    port: int
    protocol: str  # "tcp" or "udp"
    # "exact": the controller picks each new connection; "switch": a select group; "waypoint":
    # a select group over the waypoint's replicas (its backends), which route each request
    method: str
    backends: tuple[Backend, ...]  # every backend any route or the backup list names
    routes: tuple[Route, ...]
    backups: tuple[tuple[str, Fraction], ...]
    # backend key -> the DestinationRule trafficPolicy for traffic to it (none: no limits)
    traffic_policies: tuple[tuple[str, TrafficPolicy], ...] = ()
    health: HealthCheck | None = None  # active checks (None: off)
    # `conntrack_cap: true`: the routing files' maxConnections is enforced in the switch
    # (connlimit.py), counting closed connections until conntrack sweeps them
    conntrack_cap: bool = False

    def backend(self, key: str) -> Backend:
        return next(b for b in self.backends if b.key == key)

    def route_for(self, src: str) -> Route | None:
        return next((r for r in self.routes if r.takes(src)), None)

    def traffic_policy(self, key: str) -> TrafficPolicy | None:
        """The DestinationRule trafficPolicy in force for backend `key`, if any."""
        return dict(self.traffic_policies).get(key)


@dataclass
class ServicesSettings:
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    services: list[Service] = field(default_factory=list)
    mesh: Mesh | None = None  # where the waypoint runs, if the config has one
    plan: Plan = field(default_factory=Plan)  # what it serves (no listener: it need not run)
    ca: MeshCA | None = None  # the lab CA and what it issued, saved when applied


def _endpoint(config: Config, where: tuple, name: str, endpoints: dict) -> Endpoint:
    e = endpoints.get(name)
    if e is None:
        raise config.error(where, f"no endpoint named {name!r}")
    if e.ip.version != 4:
        raise config.error(where, f"endpoint {name!r} is IPv6; services are IPv4 only")
    return e


def _backend(e: Endpoint, port: int) -> Backend:
    return Backend(e.name, str(e.ip), e.mac, port)


def _listed(config: Config, i: int, spec: dict, endpoints: dict) -> tuple[list, list]:
    """(primaries, backups) of a service's own `backends`: (Backend, weight) pairs."""
    primaries, backups, seen = [], [], set()
    for j, b in enumerate(spec.get("backends") or []):
        at = ("services", i, "backends", j)
        backend = _backend(
            _endpoint(config, at + ("endpoint",), b["endpoint"], endpoints),
            b.get("port", spec["port"]),
        )
        if backend.key in seen:
            raise config.error(at, f"backend {backend.key} is listed twice")
        seen.add(backend.key)
        (backups if b.get("backup") else primaries).append((backend, Fraction(b.get("weight", 1))))
    return primaries, backups


class _Resolver:
    """Route documents against the config: who is which host, subset and source."""

    def __init__(self, config: Config, endpoints: dict, listed: dict, docs: list) -> None:
        self.config = config
        self.endpoints = endpoints
        self.listed = listed  # service name -> its own primaries
        self.subsets: dict[str, dict] = {}
        self.rules: dict[str, DestinationRule] = {}  # short host -> its DestinationRule
        # backend key -> the trafficPolicy of the host (and subset) it was reached as
        self.policies: dict[str, TrafficPolicy] = {}
        for d in docs:
            if isinstance(d, DestinationRule):
                self.subsets.setdefault(short_host(d.host), {}).update(d.subsets)
                self.rules.setdefault(short_host(d.host), d)

    def note_policy(self, host: str, subset: str | None, members: list[Backend]) -> None:
        """Record the trafficPolicy host `host` (subset `subset`) gives each of `members`."""
        rule = self.rules.get(short_host(host))
        policy = rule.policy_for(subset) if rule is not None else None
        if policy is not None:
            self.policies.update((b.key, policy) for b in members)

    def pool(self, service_port: int, dest: Destination, doc) -> list[Backend]:
        host = short_host(dest.host)
        if host in self.listed and self.listed[host]:
            members = [b for b, _ in self.listed[host]]
        else:
            members = [
                _backend(e, service_port)
                for e in sorted(self.endpoints.values(), key=lambda e: e.name)
                if ("app", host) in e.labels and e.ip.version == 4
            ]
        if dest.subset is not None:
            labels = self.subsets.get(host, {}).get(dest.subset)
            if labels is None:
                raise doc.error(
                    dest.where + ("destination", "subset"),
                    f"no DestinationRule defines subset {dest.subset!r} of host {host!r}",
                )
            members = [b for b in members if set(labels) <= set(self.endpoints[b.endpoint].labels)]
        if dest.port is not None:
            members = [Backend(b.endpoint, b.ip, b.mac, dest.port) for b in members]
        self.note_policy(host, dest.subset, members)
        if not members and dest.weight:
            raise doc.error(
                dest.where,
                f"{dest.host}{'/' + dest.subset if dest.subset else ''} has no endpoints "
                f"(none listed as the service's backends, none labelled app: {host})",
            )
        return members

    def sources(self, match: SourceMatch, service: dict) -> set[ipaddress.IPv4Network] | None:
        """The client networks one match block takes; an empty set: it never matches."""
        if match.port is not None and match.port != service["port"]:
            return set()
        vip = ipaddress.IPv4Address(service["vip"])
        if match.destination_subnets is not None and not any(
            vip in n for n in match.destination_subnets
        ):
            return set()
        if match.labels is None and match.namespace is None:
            return None if match.subnet is None else {match.subnet}
        nets = set()
        for e in self.endpoints.values():
            if e.ip.version != 4:
                continue
            if match.labels is not None and not set(match.labels) <= set(e.labels):
                continue
            if match.namespace is not None and e.namespace != match.namespace:
                continue
            if match.subnet is not None and e.ip not in match.subnet:
                continue
            nets.add(ipaddress.IPv4Network(f"{e.ip}/32"))
        return nets

    def route(self, rule: RouteRule, service: dict, doc) -> tuple[Route | None, list]:
        # no match: every client
        sources: set[ipaddress.IPv4Network] | None = set() if rule.matches else None
        for m in rule.matches:
            got = self.sources(m, service)
            if got is None:
                sources = None
                break
            sources |= got
        if sources is not None and not sources:
            LOG.info("%s: no client matches this rule here; it takes no traffic", rule.origin)
            return None, []
        split: dict[str, Fraction] = {}
        backends = []
        for dest in rule.destinations:
            members = self.pool(service["port"], dest, doc)
            for b in members:
                split[b.key] = split.get(b.key, Fraction(0)) + dest.weight / len(members)
                backends.append(b)
        nets = None if sources is None else tuple(sorted(sources, key=lambda n: (n.prefixlen, n)))
        return Route(nets, tuple(split.items()), rule.origin), backends


def _attached(doc: RoutingDoc, name: str) -> bool:
    if isinstance(doc, VirtualService):
        return any(short_host(h) == name for h in doc.hosts) or (not doc.hosts and doc.name == name)
    if isinstance(doc, HTTPRoute):
        return (
            name in doc.parents
            or doc.name == name
            or any(short_host(h) == name for h in doc.hostnames)
        )
    if isinstance(doc, KnativeIngress):
        return doc.name == name or any(short_host(h) == name for h in doc.hosts)
    return False


def _routing_in(doc) -> list[RoutingDoc]:
    parsed = parse_routing(doc)
    return [] if parsed is None else [parsed]


def _routing_docs(config: Config, documents: DocumentCache) -> list[RoutingDoc]:
    return [
        d for _, path in config.listed_files("routing") for d in documents.parsed(path, _routing_in)
    ]


def _security_docs(
    config: Config, documents: DocumentCache, parse_policies: Callable[[Document], list]
) -> list[SecurityDoc]:
    """AuthorizationPolicies and PeerAuthentications from `routing:` and `policies:` files,
    in the config's order (routing first)."""
    out = []
    for section, parse in (("routing", parse_security), ("policies", parse_policies)):
        for _, path in config.listed_files(section):
            out += documents.parsed(path, parse)
    return out


def _vip(config: Config, i: int, spec: dict, taken: dict) -> str:
    try:
        vip = str(ipaddress.IPv4Address(spec["vip"]))
    except ValueError:
        raise config.error(
            ("services", i, "vip"), f"{spec['vip']!r} is not an IPv4 address"
        ) from None
    key = (vip, spec["port"], spec.get("protocol", "tcp").lower())
    if key in taken:
        raise config.error(("services", i), f"{vip}:{spec['port']} is also {taken[key]!r}")
    taken[key] = spec["name"]
    return vip


def parse_services(
    section,
    config: Config,
    documents: DocumentCache,
    parse_policies: Callable[[Document], list] = parse_security,
) -> ServicesSettings:
    """Everything checked and resolved; the first problem is raised, located. `documents`
    keeps what the routing and policy files parsed to, so a reload parses again only those
    that changed; `parse_policies` reads a `policies:` document (one function for the app's
    life: the cache knows it by identity)."""
    endpoints = {e.name: e for e in parse_endpoints(config)}
    specs = section or []
    listed, backups = _listed_by_name(config, specs, endpoints)
    docs = _routing_docs(config, documents)
    security = _security_docs(config, documents, parse_policies)
    cilium = [d for d in security if isinstance(d, CiliumL7)]
    security = [d for d in security if not isinstance(d, CiliumL7)]
    world = Workloads.of(config, list(endpoints.values())) if cilium else None
    resolver = _Resolver(config, endpoints, listed, docs)
    mesh = parse_mesh(config)
    settings = ServicesSettings(endpoints, mesh=mesh, ca=mesh_ca(config, list(endpoints.values())))
    used: set[int] = set()
    enforced: set[int] = set()
    vips: dict = {}
    listeners: list[Listener] = []
    clusters: list[Cluster] = []
    for i, spec in enumerate(specs):
        vip = _vip(config, i, spec, vips)
        mine = _routing_of(spec["name"], docs)
        if mine is not None:
            used.add(mine[0])
        if mesh is not None:
            members = _members(spec, mine, resolver, listed, backups)
            workloads = [(endpoints[b.endpoint], b.port) for b in members]
            sec = for_service(workloads, spec["port"], security)
            l7, l7_docs = ciliuml7.for_service(workloads, cilium, world) if cilium else (None, ())
            routed = mine is not None and needs_waypoint(mine[1].rules)
            if routed or sec.needs_waypoint or l7 is not None:
                x, used_clusters = _waypointed(config, i, spec, vip, mine, resolver, listed, sec)
                x = replace(x, l7_allow=l7)
                enforced |= {id(p) for p in sec.policies} | {id(d) for d in l7_docs}
                listeners.append(x)
                clusters += used_clusters
                settings.services.append(_waypoint_service(spec, vip, mesh, x))
                continue
        routes, members = _routes(config, i, spec, mine, resolver, listed, backups)
        if mine is None:
            resolver.note_policy(spec["name"], None, members)
        settings.services.append(
            Service(
                spec["name"],
                vip,
                spec["port"],
                spec.get("protocol", "tcp").lower(),
                spec.get("method", "exact"),
                tuple({b.key: b for b in members}.values()),
                tuple(routes),
                tuple((b.key, w) for b, w in backups[spec["name"]]),
                _policies_of(members, resolver),
                parse_health(config, i, spec),
                bool(spec.get("conntrack_cap", False)),
            )
        )
    _warn_unrouted(docs, used)
    warn_unenforced(security, enforced, mesh is not None)
    ciliuml7.warn_unenforced(cilium, enforced)
    tls = waypoint_tls(settings.ca, listeners) if listeners else None
    settings.plan = Plan(tuple(listeners), tuple(clusters), tls)
    if listeners:
        _check_with_envoy(config, settings.plan)
    return settings


def _policies_of(members: list[Backend], resolver: _Resolver) -> tuple:
    """(backend key, trafficPolicy) for each member that has one, in member order."""
    keys = dict.fromkeys(b.key for b in members)
    return tuple((k, resolver.policies[k]) for k in keys if k in resolver.policies)


def _members(
    spec: dict, mine: tuple[int, RoutingDoc] | None, resolver: _Resolver, listed, backups
) -> list[Backend]:
    """Every backend service `spec` may send to: its routing's destinations, else its own
    backends and backups."""
    if mine is None:
        return [b for b, _ in listed[spec["name"]] + backups[spec["name"]]]
    doc = mine[1]
    return [
        b
        for rule in doc.rules
        for dest in rule.destinations
        for b in resolver.pool(spec["port"], dest, doc.doc)
    ]


def _waypointed(
    config: Config,
    i: int,
    spec: dict,
    vip: str,
    mine: tuple[int, RoutingDoc] | None,
    resolver: _Resolver,
    listed: dict,
    sec: ServiceSecurity,
) -> tuple[Listener, list[Cluster]]:
    """The waypoint's listener for service `spec` (config item `i`) and its clusters: from its
    routing document's rules, else one route over its own backends; with the authorization
    rules, mTLS mode and EnvoyFilter patches `sec`, and the DestinationRule trafficPolicy of
    each backend. A rule
    with source conditions is rejected by name (the waypoint routes on the request alone).
    Raises ConfigError for a service that is not TCP."""
    if spec.get("protocol", "tcp").lower() != "tcp":
        raise config.error(("services", i, "protocol"), "an HTTP waypoint serves TCP services")
    routed, addresses = [], {}
    if mine is None:
        own = listed[spec["name"]]
        addresses = {b.key: (b.ip, b.port) for b, _ in own}
        resolver.note_policy(spec["name"], None, [b for b, _ in own])
        rule = RouteRule((), (), f"services[{i}]")
        routed.append(RoutedRule(rule, tuple((b.key, w) for b, w in own)))
    for rule in mine[1].rules if mine is not None else ():
        route, found = resolver.route(rule, spec, mine[1].doc)
        if route is None:
            continue
        if route.sources is not None:
            LOG.warning(
                "%s: a rule of waypointed service %s matches on its source (labels, namespace "
                "or subnet); the waypoint routes on the request alone, so this rule is "
                "rejected and takes no traffic",
                rule.origin,
                spec["name"],
            )
            continue
        addresses.update({b.key: (b.ip, b.port) for b in found})
        mirrors = []
        for m in rule.actions.mirrors if rule.actions is not None else ():
            target = Destination(m.host, m.subset, m.port, Fraction(1), m.where)
            members = resolver.pool(spec["port"], target, mine[1].doc)
            addresses.update({b.key: (b.ip, b.port) for b in members})
            mirrors.append((tuple(b.key for b in members), m.percent))
        routed.append(RoutedRule(rule, route.split, tuple(mirrors)))
    gateway = mine is not None and is_gateway(mine[1])
    x, clusters = listener(
        spec["name"], vip, spec["port"], routed, addresses, gateway, resolver.policies
    )
    return replace(x, deny=sec.deny, allow=sec.allow, mtls=sec.mtls, patches=sec.patches), clusters


def _waypoint_service(spec: dict, vip: str, mesh: Mesh, x: Listener) -> Service:
    """What the switches enforce for a waypointed service: its VIP:port to the replicas."""
    replicas = tuple(Backend(r.name, r.ip, r.mac, spec["port"]) for r in mesh.replicas)
    split = tuple((b.key, Fraction(1)) for b in replicas)
    origin = x.routes[0].origin if x.routes else "mesh.waypoint"
    return Service(
        spec["name"],
        vip,
        spec["port"],
        "tcp",
        WAYPOINT,
        replicas,
        (Route(None, split, origin),),
        (),
    )


def _check_with_envoy(config: Config, plan: Plan) -> None:
    """Refuse, before anything is applied, a plan Envoy would refuse (`envoy --mode validate`).
    Raises ConfigError at mesh.waypoint, with Envoy's reason."""
    try:
        problem = envoy.check(plan)
    except FileNotFoundError as exc:
        raise config.error(("mesh", "waypoint"), str(exc)) from None
    if problem is not None:
        raise config.error(("mesh", "waypoint"), f"Envoy refuses the waypoint's config: {problem}")


def _listed_by_name(config: Config, specs: list, endpoints: dict) -> tuple[dict, dict]:
    """(service name -> its listed (backend, weight) pairs, name -> its backup pairs); raises
    ConfigError for a service name given twice."""
    listed: dict[str, list] = {}
    backups: dict[str, list] = {}
    for i, spec in enumerate(specs):
        if spec["name"] in listed:
            raise config.error(("services", i, "name"), f"service {spec['name']!r} twice")
        listed[spec["name"]], backups[spec["name"]] = _listed(config, i, spec, endpoints)
    return listed, backups


def _routing_of(name: str, docs: list[RoutingDoc]) -> tuple[int, RoutingDoc] | None:
    """(index, document) of the routing document attached to service `name`, else None;
    raises ConfigError (at the second) if two are."""
    mine = [(k, d) for k, d in enumerate(docs) if _attached(d, name)]
    if len(mine) > 1:
        first, second = mine[0][1], mine[1][1]
        raise second.doc.error(
            ("metadata", "name"),
            f"{second.name} routes service {name!r}, and so does {first.name} "
            f"({first.doc.path}); one routing document per service",
        )
    return mine[0] if mine else None


def _routes(
    config: Config,
    i: int,
    spec: dict,
    mine: tuple[int, RoutingDoc] | None,
    resolver: _Resolver,
    listed: dict,
    backups: dict,
) -> tuple[list[Route], list[Backend]]:
    """(routes, member backends) of service `spec` (config item `i`): from its routing
    document if it has one, else one route over its listed backends; backups join the
    members. Raises ConfigError for a service with no backends, routing or backups."""
    name = spec["name"]
    routes, members = [], [b for b, _ in listed[name]]
    if mine:
        for rule in mine[1].rules:
            if rule.needs_waypoint:
                reject_l7(mine[1].doc, rule)
                continue
            route, found = resolver.route(rule, spec, mine[1].doc)
            if route is not None:
                routes.append(route)
                members += found
    elif listed[name]:
        routes.append(Route(None, tuple((b.key, w) for b, w in listed[name]), f"services[{i}]"))
    elif not backups[name]:
        raise config.error(("services", i), f"service {name!r} has no backends and no routing")
    return routes, members + [b for b, _ in backups[name]]


def _warn_unrouted(docs: list[RoutingDoc], used: set[int]) -> None:
    """Warn of each routing document (DestinationRules aside) no service took, and of each
    of its rules that would need a waypoint."""
    for k, d in enumerate(docs):
        if k not in used and not isinstance(d, DestinationRule):
            for rule in d.rules:
                reject_l7(d.doc, rule)
            LOG.warning(
                "%s: %s %s names no service in the config (by host, parent or name); "
                "it routes nothing",
                d.doc.path,
                type(d).__name__,
                d.name,
            )
