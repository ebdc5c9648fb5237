"""CiliumNetworkPolicy L7 rules (`ingress[].toPorts[].rules.http`) for traffic to a service VIP,
enforced by the service's waypoint; their L3/L4 part stays microsegmentation's.

Read unmodified from `policies:` files, with the label selectors microsegmentation uses too
(controller/labelselectors.py: Cilium's view of an endpoint's labels), so both apps agree on
whom a rule is about. A service whose backends a policy selects, on a port (the
backend's) one of its rules has HTTP rules for, gets a waypoint; its listener then allows a
request only when some ingress rule for that port allows it, as Cilium's proxy does: from one
of the rule's peers (endpoints by address, CIDRs; any client for a rule without peers) and
matching one of its HTTP rules (`method`, `path` and `host` regular expressions on the whole
value, `headers` "Name: value" or "Name"), or any request from the peers of a rule without
HTTP rules on that port. What none allows gets 403 (vnf/waypoint/ciliumrbac.py).

Peers: `fromEndpoints` (the policy's namespace unless the selector names one), `fromCIDR` and
`fromCIDRSet` (with `except`; an endpoint's own address is not a CIDR peer, as in Cilium),
`fromEntities` `all` (any client) and `cluster` (every endpoint). Refused by name (a warning
with file and line; that rule, HTTP rule or block is left out, so less is allowed, never
more): other entities, `fromRequires`, `headerMatches`, named ports, other L7 protocols
(`dns`, `kafka`, `l7proto`), L7 rules on egress. L7 rules for endpoints no waypointed service
has as backends (pod-to-pod traffic without a VIP) are named in the log as not enforced.

Source: Cilium's API reference (PortRule, L7Rules, PortRuleHTTP), "Layer 7 Examples".
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from controller.config import LABELS, OBJECT_HEADER, Config, Document
from controller.endpoints import DEFAULT_NAMESPACE, Endpoint, labels_of
from controller.labelselectors import (
    CILIUM_NAMESPACE_KEY,
    NAMESPACE_NAME_LABEL,
    Selector,
    cilium_key,
    cilium_view,
)
from vnf.waypoint.model import HttpRule, L7Allow, check_regex

LOG = logging.getLogger("osken_suite.services")
# The shape of what this module reads of a CiliumNetworkPolicy (cilium.io/v2; microsegmentation
# checks the whole policy, but the services app may read it first, or alone), so a value of the
# wrong type is refused at its line rather than met as an AttributeError.
_STRINGS = {"type": ["array", "null"], "items": {"type": "string"}}
_OBJECTS = {"type": ["array", "null"], "items": {"type": "object"}}
_SELECTOR = {
    "type": ["object", "null"],
    "properties": {"matchLabels": LABELS, "matchExpressions": _OBJECTS},
}
_HTTP_RULES = {
    "type": ["array", "null"],
    "items": {
        "type": "object",
        "properties": {
            "method": {"type": "string"},
            "path": {"type": "string"},
            "host": {"type": "string"},
            "headers": {"type": "array", "items": {"type": "string"}},
            "headerMatches": {"type": "array", "items": {"type": "object"}},
        },
    },
}
_PORT = {
    "type": "object",
    "properties": {
        "port": {"type": ["string", "integer"]},
        "endPort": {"type": "integer"},
        "protocol": {"type": "string"},
    },
}
_TO_PORTS = {
    "type": ["array", "null"],
    "items": {
        "type": "object",
        "properties": {
            "ports": {"type": ["array", "null"], "items": _PORT},
            "rules": {"type": ["object", "null"], "properties": {"http": _HTTP_RULES}},
        },
    },
}
_RULE = {
    "type": ["object", "null"],
    "properties": {
        "fromEndpoints": {"type": ["array", "null"], "items": _SELECTOR},
        "fromCIDR": _STRINGS,
        "fromCIDRSet": {
            "type": ["array", "null"],
            "items": {
                "type": "object",
                "required": ["cidr"],
                "properties": {"cidr": {"type": "string"}, "except": _STRINGS},
            },
        },
        "fromEntities": _STRINGS,
        "fromRequires": _OBJECTS,
        "toPorts": _TO_PORTS,
    },
}
_SPEC = {
    "type": ["object", "null"],
    "properties": {
        "endpointSelector": _SELECTOR,
        "ingress": {"type": ["array", "null"], "items": _RULE},
        "egress": {"type": ["array", "null"], "items": _RULE},
    },
}
L7_SCHEMA = {
    "type": "object",
    "properties": {
        "spec": _SPEC,
        "specs": {"type": "array", "items": _SPEC},
    },
}
KIND = "CiliumNetworkPolicy"
_L7_OTHER = ("dns", "kafka", "l7proto", "l7")


@dataclass(frozen=True)
class PortBlock:
    """One `toPorts` entry: its TCP ports (None: every port) and HTTP rules (None: none, an
    L4-only entry)."""

    ports: frozenset[int] | None
    http: tuple[HttpRule, ...] | None


@dataclass(frozen=True)
class Peer:
    """Endpoints by `selector` (in `namespace`; None: any namespace), or the clients in `nets`."""

    selector: Selector | None = None
    namespace: str | None = None
    nets: tuple[ipaddress.IPv4Network, ...] = ()


@dataclass(frozen=True)
class IngressRule:
    """An ingress rule: its peers (None: any client) and port blocks; `index` in its list."""

    index: int
    peers: tuple[Peer, ...] | None
    blocks: tuple[PortBlock, ...]


@dataclass(frozen=True)
class CiliumL7:
    """One policy (one `spec`): for the endpoints of `selector` in `namespace`, its rules."""

    namespace: str
    name: str
    selector: Selector
    rules: tuple[IngressRule, ...]
    doc: Document

    @property
    def has_http(self) -> bool:
        return any(b.http is not None for r in self.rules for b in r.blocks)


def _warn(doc: Document, where: tuple, what: str) -> None:
    LOG.warning(
        "%s: %s is not enforced by the waypoint; left out (less is allowed, never more)",
        doc.located(where),
        what,
    )


def _http_rule(doc: Document, where: tuple, spec: dict) -> HttpRule | None:
    if spec.get("headerMatches"):
        _warn(doc, where + ("headerMatches",), "headerMatches")
        return None
    headers = []
    for text in spec.get("headers") or ():
        name, sep, value = str(text).partition(":")
        headers.append((name.strip().lower(), value.strip() if sep else None))
    for key in ("method", "path", "host"):  # Cilium's PortRuleHTTP: regular expressions
        if spec.get(key):
            try:
                check_regex(str(spec[key]))
            except ValueError as exc:
                raise doc.error(where + (key,), str(exc)) from None
    return HttpRule(
        spec.get("method") or None, spec.get("path") or None, spec.get("host"), tuple(headers)
    )


def _quiet(doc: Document, where: tuple, what: str) -> None:
    """For a policy without HTTP rules: what the waypoint leaves out is not worth a word."""


def _block(doc: Document, where: tuple, spec: dict, warn=_warn) -> PortBlock | None:
    ports: set[int] = set()
    every = not spec.get("ports")
    for j, p in enumerate(spec.get("ports") or ()):
        if p.get("protocol", "ANY").upper() not in ("TCP", "ANY"):
            continue
        port = p.get("port")
        if isinstance(port, str) and not port.isdigit():
            warn(doc, where + ("ports", j, "port"), f"named port {port!r}")
            return None
        if port in (None, 0, "0"):
            every = True
        else:
            ports.update(range(int(port), int(p.get("endPort") or port) + 1))
    rules = spec.get("rules") or {}
    for key in _L7_OTHER:
        if rules.get(key):
            warn(doc, where + ("rules", key), f"L7 protocol {key}")
            return None
    http = None
    if "http" in rules:
        parsed = [
            _http_rule(doc, where + ("rules", "http", k), h or {})
            for k, h in enumerate(rules["http"] or [])
        ]
        http = tuple(h for h in parsed if h is not None) or None
        if http is None:
            return None
    return PortBlock(None if every else frozenset(ports), http)


def _selector(spec) -> Selector:
    return Selector.parse(spec if isinstance(spec, dict) else {}, cilium_key)


def _endpoint_peer(spec, namespace: str) -> Peer:
    selector = _selector(spec)
    crosses = CILIUM_NAMESPACE_KEY in selector.label_keys()
    return Peer(selector, None if crosses else namespace)


def _without(nets: list, cuts) -> list:
    """`nets` less the addresses of `cuts` (networks of the same family), as networks."""
    for cut in cuts:
        nets = [x for n in nets for x in ((n,) if not cut.subnet_of(n) else n.address_exclude(cut))]
    return nets


def _cidr(text: str, excepts=()) -> tuple[ipaddress.IPv4Network, ...]:
    nets = [ipaddress.ip_network(str(text), strict=False)]
    if nets[0].version != 4:
        return ()
    cuts = [ipaddress.ip_network(str(e), strict=False) for e in excepts or ()]
    return tuple(_without(nets, [c for c in cuts if c.version == 4]))


def _peers(doc: Document, where: tuple, rule: dict, namespace: str) -> tuple[Peer, ...] | None:
    """A rule's peers; None: any client. Raises _Refused for a peer kind it cannot judge."""
    if rule.get("fromRequires"):
        raise _Refused(where + ("fromRequires",), "fromRequires")
    peers: list[Peer] = []
    given = False
    for spec in rule.get("fromEndpoints") or ():
        given = True
        peers.append(_endpoint_peer(spec, namespace))
    for text in rule.get("fromCIDR") or ():
        given = True
        peers.append(Peer(nets=_cidr(text)))
    for item in rule.get("fromCIDRSet") or ():
        given = True
        peers.append(Peer(nets=_cidr(item["cidr"], item.get("except"))))
    for i, entity in enumerate(rule.get("fromEntities") or ()):
        given = True
        if entity == "all":
            return None
        if entity != "cluster":
            raise _Refused(where + ("fromEntities", i), f"entity {entity}")
        peers.append(Peer(Selector(), None))
    return tuple(peers) if given else None


class _Refused(Exception):
    def __init__(self, where: tuple, what: str) -> None:
        super().__init__(what)
        self.where, self.what = where, what


def _policy(doc: Document, path: tuple, spec: dict, namespace: str, name: str) -> CiliumL7:
    for i, rule in enumerate(spec.get("egress") or []):
        for j, block in enumerate((rule or {}).get("toPorts") or []):
            if (block.get("rules") or {}).get("http"):
                _warn(doc, path + ("egress", i, "toPorts", j, "rules"), "an egress L7 rule")
    ingress = [rule or {} for rule in spec.get("ingress") or []]
    loud = any((b.get("rules") or {}).get("http") for r in ingress for b in r.get("toPorts") or [])
    warn = _warn if loud else _quiet
    rules = []
    for i, rule in enumerate(ingress):
        at = path + ("ingress", i)
        try:
            peers = _peers(doc, at, rule, namespace)
        except _Refused as refused:
            warn(doc, refused.where, refused.what)
            continue
        blocks = [
            _block(doc, at + ("toPorts", j), b, warn)
            for j, b in enumerate(rule.get("toPorts") or [])
        ]
        rules.append(IngressRule(i, peers, tuple(b for b in blocks if b is not None)))
    selector = _selector(spec.get("endpointSelector"))
    return CiliumL7(namespace, name, selector, tuple(rules), doc)


def parse_cilium_l7(doc: Document) -> list[CiliumL7]:
    """A CiliumNetworkPolicy document (one item per `spec`/`specs` entry), its L7-relevant
    part; microsegmentation checks and enforces the rest. Raises ConfigError, located, for a
    malformed one."""
    doc.validate(OBJECT_HEADER)
    doc.validate(L7_SCHEMA)
    data = doc.data
    meta = data.get("metadata") or {}
    namespace = meta.get("namespace") or DEFAULT_NAMESPACE
    name = str(meta.get("name", ""))
    paths = [("spec",)] if "spec" in data else []
    paths += [("specs", i) for i in range(len(data.get("specs") or ()))]
    out = []
    for path in paths:
        spec = data[path[0]] if len(path) == 1 else data["specs"][path[1]]
        suffix = "" if len(path) == 1 else f"#{path[1]}"
        try:
            out.append(_policy(doc, path, spec or {}, namespace, name + suffix))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise doc.error(path, f"malformed CiliumNetworkPolicy: {exc}") from None
    return out


@dataclass(frozen=True)
class Workloads:
    """The config's endpoints as Cilium's selectors see them."""

    endpoints: tuple[Endpoint, ...]
    views: dict[str, dict[str, str]]  # endpoint name -> its labels, Cilium's view

    @classmethod
    def of(cls, config: Config, endpoints: list[Endpoint]) -> Workloads:
        """From the config's `namespaces` (their labels) and `endpoints`."""
        labels = {
            spec["name"]: labels_of(spec.get("labels"))
            for spec in config.section("namespaces") or []
        }
        views = {}
        for e in endpoints:
            ns = labels_of({**dict(labels.get(e.namespace, ())), NAMESPACE_NAME_LABEL: e.namespace})
            views[e.name] = cilium_view(e.labels, e.namespace, ns)
        return cls(tuple(endpoints), views)

    def matching(self, peer: Peer) -> list[Endpoint]:
        return [
            e
            for e in self.endpoints
            if (peer.namespace is None or e.namespace == peer.namespace)
            and peer.selector.matches(self.views[e.name])
        ]

    def sources(self, peers: tuple[Peer, ...] | None) -> tuple[ipaddress.IPv4Network, ...] | None:
        """The client networks of `peers` (None: any client). A CIDR peer leaves out the
        endpoints' own addresses (Cilium: CIDR rules select peers that are not endpoints)."""
        if peers is None:
            return None
        own = [ipaddress.IPv4Network(f"{e.ip}/32") for e in self.endpoints if e.ip.version == 4]
        nets: set[ipaddress.IPv4Network] = set()
        for p in peers:
            if p.selector is not None:
                nets |= {
                    ipaddress.IPv4Network(f"{e.ip}/32")
                    for e in self.matching(p)
                    if e.ip.version == 4
                }
                continue
            nets.update(_without(list(p.nets), own))
        return tuple(sorted(nets, key=lambda n: (n.network_address, n.prefixlen)))


def for_service(
    backends: list[tuple[Endpoint, int]], docs: list[CiliumL7], world: Workloads
) -> tuple[tuple[L7Allow, ...] | None, tuple[CiliumL7, ...]]:
    """(the L7 rules of a service whose backends are `backends` ((endpoint, target port)
    pairs), None when no HTTP rule is for them; the policies they come from)."""
    ports = {p for _, p in backends}
    rules: list[L7Allow] = []
    used = []
    http = False
    for d in docs:
        selected = [
            e
            for e, _ in backends
            if e.namespace == d.namespace and d.selector.matches(world.views[e.name])
        ]
        if not selected:
            continue
        for rule in d.rules:
            mine = [b for b in rule.blocks if b.ports is None or b.ports & ports]
            if not mine:
                continue
            name = f"{d.namespace}.{d.name}[{rule.index}]"
            sources = world.sources(rule.peers)
            if any(b.http is None for b in mine):  # an L4-only entry: every request
                rules.append(L7Allow(name, sources, None))
            else:
                rules.append(L7Allow(name, sources, tuple(h for b in mine for h in b.http)))
            http = http or any(b.http is not None for b in mine)
            used.append(d)
    return (tuple(rules) if http else None), tuple(used if http else ())


def warn_unenforced(docs: list[CiliumL7], enforced: set[int]) -> None:
    """Name the policies with HTTP rules no waypointed service enforces (`enforced`: ids)."""
    for d in docs:
        if d.has_http and id(d) not in enforced:
            LOG.warning(
                "%s: %s %s/%s: its L7 rules select no backend of a service on their port "
                "(or the config has no mesh.waypoint); pod-to-pod L7 without a VIP is not "
                "enforced (only the L4 part is, by microsegmentation)",
                d.doc.located(("metadata", "name")),
                KIND,
                d.namespace,
                d.name,
            )
