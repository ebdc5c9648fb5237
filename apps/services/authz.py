"""Istio's AuthorizationPolicy and PeerAuthentication (security.istio.io), read unmodified from
`routing:` or `policies:` files, and what they ask of one waypointed service.

Which workloads a policy is for (Istio): a policy in the root namespace (`istio-system`)
without a selector is for every workload; one in another namespace is for that namespace's
workloads, narrowed by `selector.matchLabels`; a root-namespace policy with a selector is for
the workloads it selects in every namespace. A waypointed service enforces every policy for any
of its backends (the waypoint judges a request before it picks the backend).

AuthorizationPolicy: `action` ALLOW (default) or DENY; rules with `from.source` (principals,
namespaces, ipBlocks and their `not` forms), `to.operation` (methods, paths, ports and their
`not` forms) and `when` (source.ip, source.namespace, source.principal, request.headers[...],
destination.port). Ports are the service's port or a backend's, decided here per service. What
this waypoint cannot judge (JWT request principals, hosts, remoteIpBlocks, CUSTOM and AUDIT
actions, targetRefs...) is refused at its line: a security policy is never half enforced.

PeerAuthentication: `mtls.mode` STRICT, PERMISSIVE, DISABLE or UNSET (inherit), by workload
selector (with `portLevelMtls`), namespace, or mesh (root namespace); the most specific wins,
and a workload none covers is PERMISSIVE (Istio's default). A service's listener takes the
strictest mode of its backends.

Source: Istio reference, security.istio.io/v1 AuthorizationPolicy, PeerAuthentication,
"Authorization Policy Conditions".
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from apps.services.envoyfilter import KIND as ENVOY_FILTER
from apps.services.envoyfilter import EnvoyFilter, parse_envoy_filter, patches_for
from apps.services.routing import ISTIO_GROUP, SECURITY_GROUP
from apps.services.selection import ROOT_NAMESPACE
from apps.services.selection import selects as _selects
from controller.config import OBJECT_HEADER, Document
from controller.endpoints import DEFAULT_NAMESPACE, Endpoint, labels_of
from vnf.waypoint.model import AuthzRule, Condition, FilterPatch, Operation, Source

LOG = logging.getLogger("osken_suite.services")
KINDS = ("AuthorizationPolicy", "PeerAuthentication")
STRICTNESS = ("DISABLE", "PERMISSIVE", "STRICT")  # weakest first
DEFAULT_MTLS = "PERMISSIVE"

_STRINGS = {"type": "array", "items": {"type": "string"}}
_PORTS = {"type": "array", "items": {"type": "string", "pattern": "^[0-9]{1,5}$"}}
_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}},
}
# Fields Istio has that this waypoint does not judge: named, refused.
_UNSUPPORTED = {
    "requestPrincipals": "JWT request principals",
    "notRequestPrincipals": "JWT request principals",
    "remoteIpBlocks": "X-Forwarded-For addresses",
    "notRemoteIpBlocks": "X-Forwarded-For addresses",
    "hosts": "the request's host",
    "notHosts": "the request's host",
    "targetRef": "policy attachment by targetRef",
    "targetRefs": "policy attachment by targetRef",
    "provider": "an external authorizer (CUSTOM)",
}
_SOURCE_FIELDS = ("principals", "notPrincipals", "namespaces", "notNamespaces")
_IP_FIELDS = ("ipBlocks", "notIpBlocks")
_WHEN_KEYS = ("source.ip", "source.namespace", "source.principal", "destination.port")
_UNSUPPORTED_SCHEMA = {k: {} for k in _UNSUPPORTED}

AUTHZ_SCHEMA = {
    "type": "object",
    "required": ["metadata"],
    "properties": {
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "selector": _SELECTOR,
                "action": {"enum": ["ALLOW", "DENY", "AUDIT", "CUSTOM"]},
                "rules": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "from": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["source"],
                                    "properties": {
                                        "source": {
                                            "type": "object",
                                            "additionalProperties": False,
                                            "minProperties": 1,
                                            "properties": {
                                                **{k: _STRINGS for k in _SOURCE_FIELDS},
                                                **{k: _STRINGS for k in _IP_FIELDS},
                                                **_UNSUPPORTED_SCHEMA,
                                            },
                                        }
                                    },
                                },
                            },
                            "to": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["operation"],
                                    "properties": {
                                        "operation": {
                                            "type": "object",
                                            "additionalProperties": False,
                                            "minProperties": 1,
                                            "properties": {
                                                "methods": _STRINGS,
                                                "notMethods": _STRINGS,
                                                "paths": _STRINGS,
                                                "notPaths": _STRINGS,
                                                "ports": _PORTS,
                                                "notPorts": _PORTS,
                                                **_UNSUPPORTED_SCHEMA,
                                            },
                                        }
                                    },
                                },
                            },
                            "when": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["key"],
                                    "properties": {
                                        "key": {"type": "string"},
                                        "values": _STRINGS,
                                        "notValues": _STRINGS,
                                    },
                                },
                            },
                        },
                    },
                },
                **_UNSUPPORTED_SCHEMA,
            },
        },
    },
}
PEER_AUTH_SCHEMA = {
    "type": "object",
    "required": ["metadata"],
    "properties": {
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "selector": _SELECTOR,
                "mtls": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"mode": {"enum": ["UNSET", *STRICTNESS]}},
                },
                "portLevelMtls": {
                    "type": "object",
                    "propertyNames": {"pattern": "^[0-9]{1,5}$"},
                    "additionalProperties": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {"mode": {"enum": ["UNSET", *STRICTNESS]}},
                    },
                },
                **_UNSUPPORTED_SCHEMA,
            },
        },
    },
}


@dataclass(frozen=True)
class _Op:
    """An operation and the ports it is for (empty: any), before a service's port decides."""

    operation: Operation
    ports: frozenset[int]
    not_ports: frozenset[int]


@dataclass(frozen=True)
class _Rule:
    index: int
    sources: tuple[Source, ...] | None
    operations: tuple[_Op, ...] | None
    when: tuple[Condition, ...]
    dest_ports: frozenset[int]  # when destination.port values (empty: any)
    not_dest_ports: frozenset[int]


@dataclass(frozen=True)
class AuthorizationPolicy:
    name: str
    namespace: str
    selector: tuple[tuple[str, str], ...] | None
    action: str  # "ALLOW" or "DENY"
    rules: tuple[_Rule, ...]
    doc: Document

    @property
    def ident(self) -> str:
        return f"AuthorizationPolicy {self.namespace}/{self.name}"

    def selects(self, e: Endpoint) -> bool:
        return _selects(self.namespace, self.selector, e)

    def rules_for(self, ports: frozenset[int]) -> tuple[AuthzRule, ...]:
        """The rules that can match at a listener whose destination ports are `ports` (the
        service's and its backends'), with the ports decided: a rule or operation for other
        ports is left out."""
        out = []
        for r in self.rules:
            if not _ports_match(ports, r.dest_ports, r.not_dest_ports):
                continue
            ops = None
            if r.operations is not None:
                ops = tuple(
                    o.operation for o in r.operations if _ports_match(ports, o.ports, o.not_ports)
                )
                if not ops:
                    continue
            name = f"{self.namespace}.{self.name}[{r.index}]"
            out.append(AuthzRule(name, r.sources, ops, r.when))
        return tuple(out)


@dataclass(frozen=True)
class PeerAuthentication:
    name: str
    namespace: str
    selector: tuple[tuple[str, str], ...] | None
    mode: str | None  # None: UNSET (inherit)
    port_modes: dict[int, str]
    doc: Document

    def selects(self, e: Endpoint) -> bool:
        return _selects(self.namespace, self.selector, e)


SecurityDoc = AuthorizationPolicy | PeerAuthentication | EnvoyFilter


def _ports_match(ports: frozenset[int], wanted: frozenset[int], unwanted: frozenset[int]) -> bool:
    return (not wanted or bool(ports & wanted)) and not (ports and ports <= unwanted)


def _refuse_unsupported(doc: Document, where: tuple, item: dict) -> None:
    for key in sorted(set(item) & set(_UNSUPPORTED)):
        raise doc.error(
            where + (key,), f"not supported: this waypoint cannot judge {_UNSUPPORTED[key]}"
        )


def _nets(doc: Document, where: tuple, values) -> tuple[ipaddress.IPv4Network, ...]:
    out = []
    for i, text in enumerate(values or ()):
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise doc.error(where + (i,), f"{text!r} is not an IP address or CIDR") from None
        if net.version != 4:
            raise doc.error(where + (i,), f"{text}: the waypoint is IPv4 only")
        out.append(net)
    return tuple(out)


def _strings(doc: Document, where: tuple, values) -> tuple[str, ...]:
    """Istio strings: exact, `prefix*`, `*suffix` or `*`; a `*` elsewhere is refused."""
    for i, v in enumerate(values or ()):
        if "*" in v[1:-1] or v == "**":
            raise doc.error(where + (i,), f"{v!r}: `*` goes only at the start or the end")
    return tuple(values or ())


def _port_set(doc: Document, where: tuple, values) -> frozenset[int]:
    out = set()
    for i, text in enumerate(values or ()):
        if not 1 <= int(text) <= 65535:
            raise doc.error(where + (i,), f"{text} is not a port number (1-65535)")
        out.add(int(text))
    return frozenset(out)


def _source(doc: Document, where: tuple, spec: dict) -> Source:
    _refuse_unsupported(doc, where, spec)
    return Source(
        *(_strings(doc, where + (k,), spec.get(k)) for k in _SOURCE_FIELDS),
        _nets(doc, where + ("ipBlocks",), spec.get("ipBlocks")),
        _nets(doc, where + ("notIpBlocks",), spec.get("notIpBlocks")),
    )


def _operation(doc: Document, where: tuple, spec: dict) -> _Op:
    _refuse_unsupported(doc, where, spec)
    op = Operation(
        *(
            _strings(doc, where + (k,), spec.get(k))
            for k in ("methods", "notMethods", "paths", "notPaths")
        )
    )
    return _Op(
        op,
        _port_set(doc, where + ("ports",), spec.get("ports")),
        _port_set(doc, where + ("notPorts",), spec.get("notPorts")),
    )


def _condition(doc: Document, where: tuple, spec: dict) -> Condition:
    key = spec["key"]
    header = key.startswith("request.headers[") and key.endswith("]") and len(key) > 17
    if key not in _WHEN_KEYS and not header:
        raise doc.error(
            where + ("key",),
            f"{key!r}: this waypoint judges {', '.join(_WHEN_KEYS)} and request.headers[<name>]",
        )
    if not spec.get("values") and not spec.get("notValues"):
        raise doc.error(where, "a condition needs values or notValues")
    if key == "source.ip":
        _nets(doc, where + ("values",), spec.get("values"))
        _nets(doc, where + ("notValues",), spec.get("notValues"))
    elif key == "destination.port":
        _port_set(doc, where + ("values",), spec.get("values"))
        _port_set(doc, where + ("notValues",), spec.get("notValues"))
    values = _strings(doc, where + ("values",), spec.get("values"))
    not_values = _strings(doc, where + ("notValues",), spec.get("notValues"))
    return Condition(key, values, not_values)


def _rule(doc: Document, where: tuple, index: int, spec: dict) -> _Rule:
    sources = [
        _source(doc, where + ("from", i, "source"), f["source"])
        for i, f in enumerate(spec.get("from") or [])
    ]
    ops = [
        _operation(doc, where + ("to", i, "operation"), t["operation"])
        for i, t in enumerate(spec.get("to") or [])
    ]
    when, ports, not_ports = [], frozenset(), frozenset()
    for i, c in enumerate(spec.get("when") or []):
        cond = _condition(doc, where + ("when", i), c)
        if cond.key == "destination.port":  # decided per service, like operation ports
            ports |= {int(v) for v in cond.values}
            not_ports |= {int(v) for v in cond.not_values}
        else:
            when.append(cond)
    return _Rule(
        index,
        tuple(sources) or None,
        tuple(ops) or None,
        tuple(when),
        frozenset(ports),
        frozenset(not_ports),
    )


def _selector(spec: dict):
    selector = spec.get("selector")
    return None if selector is None else labels_of(selector.get("matchLabels"))


def _authorization(doc: Document, namespace: str, name: str, spec: dict) -> AuthorizationPolicy:
    action = spec.get("action", "ALLOW")
    if action not in ("ALLOW", "DENY"):
        raise doc.error(
            ("spec", "action"), f"not supported: action {action} (this waypoint does ALLOW, DENY)"
        )
    rules = tuple(
        _rule(doc, ("spec", "rules", i), i, r) for i, r in enumerate(spec.get("rules") or [])
    )
    return AuthorizationPolicy(name, namespace, _selector(spec), action, rules, doc)


def _peer_authentication(doc: Document, namespace: str, name: str, spec: dict):
    mode = (spec.get("mtls") or {}).get("mode", "UNSET")
    ports = {}
    for port, value in (spec.get("portLevelMtls") or {}).items():
        if spec.get("selector") is None:
            raise doc.error(
                ("spec", "portLevelMtls"), "portLevelMtls needs a workload selector (Istio)"
            )
        if value.get("mode", "UNSET") != "UNSET":
            ports[int(port)] = value["mode"]
    return PeerAuthentication(
        name, namespace, _selector(spec), None if mode == "UNSET" else mode, ports, doc
    )


def parse_security(doc: Document) -> list[SecurityDoc]:
    """One YAML document as an AuthorizationPolicy, PeerAuthentication or EnvoyFilter
    (envoyfilter.py); [] for other kinds (the caller decides what those are). Raises
    ConfigError, located, for a malformed or unsupported one."""
    data = doc.data
    if not isinstance(data, dict):
        return []
    doc.validate(OBJECT_HEADER)
    api, kind = str(data.get("apiVersion", "")), data.get("kind")
    if api.startswith(ISTIO_GROUP) and kind == ENVOY_FILTER:
        return [parse_envoy_filter(doc)]
    if not api.startswith(SECURITY_GROUP) or kind not in KINDS:
        return []
    doc.validate(AUTHZ_SCHEMA if kind == "AuthorizationPolicy" else PEER_AUTH_SCHEMA)
    spec = data.get("spec") or {}
    _refuse_unsupported(doc, ("spec",), spec)
    namespace = data["metadata"].get("namespace") or DEFAULT_NAMESPACE
    name = data["metadata"]["name"]
    if kind == "AuthorizationPolicy":
        return [_authorization(doc, namespace, name, spec)]
    return [_peer_authentication(doc, namespace, name, spec)]


def mtls_mode(e: Endpoint, port: int, peers: list[PeerAuthentication]) -> str:
    """The mTLS mode of workload `e` on `port`: the first workload policy that selects it
    (its port's mode first), then its namespace's, then the mesh's, else PERMISSIVE."""
    for p in peers:
        if p.selector is not None and p.selects(e):
            mode = p.port_modes.get(port, p.mode)
            if mode is not None:
                return mode
    for namespace in (e.namespace, ROOT_NAMESPACE):
        for p in peers:
            if p.selector is None and p.namespace == namespace and p.mode is not None:
                return p.mode
    return DEFAULT_MTLS


def strictest(modes) -> str:
    """The strictest of some mTLS modes (DISABLE < PERMISSIVE < STRICT)."""
    return max(modes, key=STRICTNESS.index, default=DEFAULT_MTLS)


@dataclass(frozen=True)
class ServiceSecurity:
    """What the security documents ask of one service: its listener's rules and mTLS mode,
    and the policies they came from."""

    deny: tuple[AuthzRule, ...]
    allow: tuple[AuthzRule, ...] | None
    mtls: str
    policies: tuple[AuthorizationPolicy | EnvoyFilter, ...]
    patches: tuple[FilterPatch, ...] = ()  # EnvoyFilter patches to its HTTP filters

    @property
    def needs_waypoint(self) -> bool:
        """Only a waypoint can enforce it: a policy or filter patch applies, or mTLS is
        STRICT."""
        return bool(self.policies) or self.mtls == "STRICT"


def for_service(
    backends: list[tuple[Endpoint, int]], port: int, docs: list[SecurityDoc]
) -> ServiceSecurity:
    """The security of a service on `port` whose backends are `backends` ((endpoint, target
    port) pairs): the policies for any backend, their rules for these ports, the strictest
    mTLS mode of the backends, and the EnvoyFilter patches for them."""
    policies = tuple(
        d
        for d in docs
        if isinstance(d, AuthorizationPolicy) and any(d.selects(e) for e, _ in backends)
    )
    ports = frozenset({port} | {p for _, p in backends})
    deny = tuple(r for p in policies if p.action == "DENY" for r in p.rules_for(ports))
    allowing = [p for p in policies if p.action == "ALLOW"]
    allow = tuple(r for p in allowing for r in p.rules_for(ports)) if allowing else None
    peers = [d for d in docs if isinstance(d, PeerAuthentication)]
    mtls = strictest(mtls_mode(e, p, peers) for e, p in backends) if backends else DEFAULT_MTLS
    filters = [d for d in docs if isinstance(d, EnvoyFilter) and d.patches]
    patching, patches = patches_for(backends, port, filters)
    return ServiceSecurity(deny, allow, mtls, policies + patching, patches)


def warn_unenforced(docs: list[SecurityDoc], enforced: set[int], waypoint: bool) -> None:
    """Say by name which AuthorizationPolicies (and EnvoyFilters) no waypointed service
    enforces (`enforced`: ids of those that one does): pod-to-pod traffic outside a service
    VIP is not judged."""
    for d in docs:
        applicable = isinstance(d, AuthorizationPolicy) or (
            isinstance(d, EnvoyFilter) and d.patches  # else each patch was named as refused
        )
        if applicable and id(d) not in enforced:
            why = (
                "it selects no backend of a service"
                if waypoint
                else "the config has no mesh.waypoint to enforce it"
            )
            LOG.warning(
                "%s: %s is not enforced: %s (only traffic to a service VIP goes through the "
                "waypoint)",
                d.doc.located(("metadata", "name")),
                d.ident,
                why,
            )
