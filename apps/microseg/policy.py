"""NetworkPolicy and CiliumNetworkPolicy documents, read unmodified, checked, made uniform.

Both kinds become `Policy` values with the same parts: which endpoints it selects, which
directions it isolates, and allow (and, for Cilium, deny) rules made of peers and ports. The
differences between the two languages are settled here, once:

- Kubernetes: `protocol` defaults to TCP; `ingress: [{}]` allows everything; a peer
  `podSelector` alone means the policy's namespace; a null field is an absent one; an absent or
  empty `policyTypes` means Ingress, plus Egress when `egress` has rules (the API server's
  SetDefaults_NetworkPolicy); `ipBlock` covers every address in it, endpoints included.
- Cilium: a missing protocol means TCP, UDP and SCTP; an empty rule matches nothing; a rule with
  only `toPorts` matches every peer; `fromEndpoints` stays in the policy's namespace unless the
  selector names `k8s:io.kubernetes.pod.namespace`; a direction with rules (allow or deny) is
  default-deny unless `enableDefaultDeny` says otherwise; deny rules beat every allow; CIDR
  rules (`fromCIDR`, `toCIDRSet`...) select only peers that are not endpoints.

docs/semantics.md lists every such rule with its upstream source and its test.

Every problem is a ConfigError naming the file, the line and the field.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from apps.microseg.model import Selector
from controller.config import LABELS, OBJECT_HEADER, ConfigError, Document
from controller.endpoints import DEFAULT_NAMESPACE
from controller.labelselectors import CILIUM_NAMESPACE_KEY, cilium_key
from controller.matches import IPNetwork
from controller.policydocs import is_mine

LOG = logging.getLogger("osken_suite.microseg")
# IANA_SVC_NAME, as Kubernetes' IsValidPortName: 1-15 characters of a-z, 0-9 and '-', at least
# one letter, no '-' at either end nor two in a row.
_PORT_NAME = re.compile(r"^(?=.{1,15}$)(?=.*[a-z])(?!.*--)[a-z0-9]([a-z0-9-]*[a-z0-9])?$")

# --- schemas: the shape of each kind (unknown fields are errors) -------------------------------

_STRINGS = {"type": "array", "items": {"type": "string"}}
_SELECTOR = {
    "type": ["object", "null"],
    "additionalProperties": False,
    "properties": {
        "matchLabels": LABELS,
        "matchExpressions": {
            "type": ["array", "null"],
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "additionalProperties": False,
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": ["array", "null"], "items": {"type": "string"}},
                },
            },
        },
    },
}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string", "minLength": 1}, "namespace": {"type": "string"}},
}
_K8S_PORT = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "protocol": {"enum": ["TCP", "UDP", "SCTP"]},
        "port": {"type": ["integer", "string"]},
        "endPort": {"type": "integer"},
    },
}
_K8S_PEER = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "podSelector": _SELECTOR,
        "namespaceSelector": _SELECTOR,
        "ipBlock": {
            "type": "object",
            "required": ["cidr"],
            "additionalProperties": False,
            "properties": {"cidr": {"type": "string"}, "except": _STRINGS},
        },
    },
}


def _k8s_rule(peers: str) -> dict:
    return {
        "type": ["object", "null"],
        "additionalProperties": False,
        "properties": {
            peers: {"type": ["array", "null"], "items": _K8S_PEER},
            "ports": {"type": ["array", "null"], "items": _K8S_PORT},
        },
    }


NETWORK_POLICY = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "networking.k8s.io/v1"},
        "kind": {"const": "NetworkPolicy"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "podSelector": _SELECTOR,
                "policyTypes": {
                    "type": ["array", "null"],
                    "maxItems": 2,
                    "items": {"enum": ["Ingress", "Egress"]},
                },
                "ingress": {"type": ["array", "null"], "items": _k8s_rule("from")},
                "egress": {"type": ["array", "null"], "items": _k8s_rule("to")},
            },
        },
        "status": {"type": "object"},
    },
}

_CIDR_SET = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["cidr"],
        "additionalProperties": False,
        "properties": {"cidr": {"type": "string"}, "except": _STRINGS},
    },
}
_TO_PORTS = {
    "type": "array",
    "items": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "ports": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "port": {"type": ["string", "integer"]},
                        "endPort": {"type": "integer"},
                        "protocol": {"enum": ["TCP", "UDP", "SCTP", "ANY"]},
                    },
                },
            },
            "rules": {"type": "object"},  # L7: read, not enforced (logged)
            "serverNames": _STRINGS,
            "originatingTLS": {"type": "object"},
            "terminatingTLS": {"type": "object"},
            "listener": {"type": "object"},
        },
    },
}
UNSUPPORTED_CILIUM = {
    "fromRequires",
    "toRequires",
    "fromGroups",
    "toGroups",
    "fromNodes",
    "toNodes",
    "toFQDNs",
    "toServices",
    "icmps",
    "authentication",
}


def _cilium_rule(direction: str) -> dict:
    side = "from" if direction == "ingress" else "to"
    props = {
        f"{side}Endpoints": {"type": "array", "items": _SELECTOR},
        f"{side}CIDR": _STRINGS,
        f"{side}CIDRSet": _CIDR_SET,
        f"{side}Entities": _STRINGS,
        "toPorts": _TO_PORTS,
    }
    props.update({k: {} for k in UNSUPPORTED_CILIUM})
    return {"type": ["object", "null"], "additionalProperties": False, "properties": props}


_CILIUM_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "required": ["endpointSelector"],
    "properties": {
        "description": {"type": "string"},
        "endpointSelector": _SELECTOR,
        "ingress": {"type": ["array", "null"], "items": _cilium_rule("ingress")},
        "egress": {"type": ["array", "null"], "items": _cilium_rule("egress")},
        "ingressDeny": {"type": ["array", "null"], "items": _cilium_rule("ingress")},
        "egressDeny": {"type": ["array", "null"], "items": _cilium_rule("egress")},
        "enableDefaultDeny": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"ingress": {"type": "boolean"}, "egress": {"type": "boolean"}},
        },
        "labels": {"type": "array"},
        "nodeSelector": {},
    },
}
CILIUM_POLICY = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "cilium.io/v2"},
        "kind": {"const": "CiliumNetworkPolicy"},
        "metadata": _METADATA,
        "spec": _CILIUM_SPEC,
        "specs": {"type": "array", "items": _CILIUM_SPEC},
        "status": {"type": "object"},
    },
}
KINDS = {"NetworkPolicy": NETWORK_POLICY, "CiliumNetworkPolicy": CILIUM_POLICY}
CILIUM_ENTITIES = {"all", "world", "cluster", "none"}

# --- the uniform form ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PortSpec:
    """One port entry: a protocol, and a port number range, a named port, or every port."""

    protocol: str  # "tcp", "udp", "sctp"
    port: int | str | None = None  # None: every port; str: the destination's named port
    end: int | None = None  # inclusive end of a range

    def range(self) -> tuple[int, int] | None:
        if self.port is None:
            return None
        assert isinstance(self.port, int)
        return (self.port, self.end or self.port)


@dataclass(frozen=True)
class Peer:
    """Who is at the other end: endpoints by selector, address blocks, or non-endpoints."""

    kind: str  # "endpoints", "cidr" (any address in nets), "world" (non-endpoints)
    pods: Selector | None = None  # None: every endpoint (of the namespaces below)
    namespaces: Selector | None = None  # with namespace None: None means every namespace
    namespace: str | None = None  # a fixed namespace (the policy's own)
    nets: tuple[IPNetwork, ...] = ()  # cidr minus excepts, disjoint prefixes; "world": within
    cilium: bool = False  # pods selector reads Cilium's label view (namespace as a label)


@dataclass(frozen=True)
class PolicyRule:
    peers: tuple[Peer, ...] | None  # None: every peer
    ports: tuple[PortSpec, ...] | None  # None: every protocol and port
    where: str = ""


@dataclass(frozen=True)
class Policy:
    kind: str
    namespace: str
    name: str
    selector: Selector
    cilium: bool
    isolates: frozenset[str]  # "ingress" and/or "egress"
    ingress: tuple[PolicyRule, ...] = ()
    egress: tuple[PolicyRule, ...] = ()
    ingress_deny: tuple[PolicyRule, ...] = ()
    egress_deny: tuple[PolicyRule, ...] = ()
    where: str = ""

    @property
    def ident(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


# --- parsing ----------------------------------------------------------------------------------


def parse_policy(doc: Document, loaded: Callable[[str], bool] = lambda app: False) -> list[Policy]:
    """One YAML document: a NetworkPolicy or CiliumNetworkPolicy (several `specs` allowed);
    nothing for a kind another suite app enforces (controller/policydocs.py; `loaded(app)`
    says whether that app runs here)."""
    data = doc.data
    if not isinstance(data, dict):
        raise doc.error((), "a policy document must be a mapping")
    doc.validate(OBJECT_HEADER)
    if not is_mine(doc, "microseg", loaded):
        return []
    kind = data["kind"]
    _check_unsupported(doc, data)
    doc.validate(KINDS[kind])
    namespace = data["metadata"].get("namespace") or DEFAULT_NAMESPACE
    name = data["metadata"]["name"]
    if kind == "NetworkPolicy":
        return [_network_policy(doc, namespace, name, data.get("spec") or {})]
    specs = [("spec",)] if "spec" in data else []
    specs += [("specs", i) for i in range(len(data.get("specs") or ()))]
    if not specs:
        raise doc.error(("spec",), "a CiliumNetworkPolicy needs spec or specs")
    out = []
    for path in specs:
        spec = data[path[0]] if len(path) == 1 else data["specs"][path[1]]
        suffix = "" if len(path) == 1 else f"#{path[1]}"
        out.append(_cilium_policy(doc, path, namespace, name + suffix, spec))
    return out


def _check_unsupported(doc: Document, data: dict) -> None:
    """Cilium fields beyond L3/L4 are named as such rather than as unknown."""
    for path, spec in [(("spec",), data.get("spec"))] + [
        (("specs", i), s) for i, s in enumerate(data.get("specs") or [])
    ]:
        if not isinstance(spec, dict) or data.get("kind") != "CiliumNetworkPolicy":
            continue
        for section in ("ingress", "egress", "ingressDeny", "egressDeny"):
            for i, rule in enumerate(spec.get(section) or []):
                for key in sorted(set(rule or {}) & UNSUPPORTED_CILIUM):
                    raise doc.error(
                        path + (section, i, key),
                        "not supported: this app enforces Cilium's L3/L4 rules only",
                    )


def _selector(doc: Document, where: tuple, spec, key_map=None) -> Selector:
    for i, expr in enumerate((spec or {}).get("matchExpressions") or []):
        values = expr.get("values") or []
        if expr["operator"] in ("In", "NotIn") and not values:
            raise doc.error(
                where + ("matchExpressions", i, "values"),
                f"operator {expr['operator']} needs at least one value",
            )
        if expr["operator"] in ("Exists", "DoesNotExist") and values:
            raise doc.error(
                where + ("matchExpressions", i, "values"),
                f"operator {expr['operator']} takes no values",
            )
    return Selector.parse(spec, key_map)


def _nets(doc: Document, where: tuple, cidr: str, excepts) -> tuple[IPNetwork, ...]:
    """cidr minus its excepts, as disjoint prefixes; each except must lie strictly inside."""
    try:
        net = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise doc.error(where + ("cidr",), f"{cidr!r} is not a CIDR") from None
    if getattr(net.network_address, "scope_id", None):
        raise doc.error(where + ("cidr",), f"{cidr!r}: a zone (%...) is a host's, not a CIDR's")
    parts = [net]
    for i, text in enumerate(excepts or []):
        try:
            hole = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise doc.error(where + ("except", i), f"{text!r} is not a CIDR") from None
        if getattr(hole.network_address, "scope_id", None):
            raise doc.error(where + ("except", i), f"{text!r}: a zone (%...) is a host's")
        if hole.version != net.version or not hole.subnet_of(net) or hole == net:
            raise doc.error(where + ("except", i), f"{text} is not strictly inside {net}")
        remaining = []
        for part in parts:
            if hole.subnet_of(part):
                remaining.extend(part.address_exclude(hole))
            elif not part.subnet_of(hole):
                remaining.append(part)
        parts = remaining
    return tuple(sorted(parts, key=lambda n: (n.version, n)))


def _k8s_ports(doc: Document, where: tuple, specs) -> tuple[PortSpec, ...] | None:
    if not specs:
        return None  # absent or empty: every port of every protocol
    out = []
    for i, spec in enumerate(specs):
        at = where + (i,)
        protocol = spec.get("protocol", "TCP").lower()
        port, end = spec.get("port"), spec.get("endPort")
        if isinstance(port, str) and not _PORT_NAME.match(port):
            raise doc.error(
                at + ("port",), f"{port!r} is neither a port number nor a valid port name"
            )
        if isinstance(port, int) and not 1 <= port <= 65535:
            raise doc.error(at + ("port",), f"{port} is not a port number (1-65535)")
        if end is not None:
            if port is None:
                raise doc.error(at + ("endPort",), "endPort needs a port")
            if isinstance(port, str):
                raise doc.error(at + ("endPort",), "endPort cannot go with a named port")
            if not port <= end <= 65535:
                raise doc.error(at + ("endPort",), f"{end} must be between {port} and 65535")
        out.append(PortSpec(protocol, port, end))
    return tuple(out)


def _k8s_peers(doc: Document, where: tuple, specs, namespace: str) -> tuple[Peer, ...] | None:
    if not specs:
        return None  # absent or empty: every peer
    out = []
    for i, spec in enumerate(specs):
        at = where + (i,)
        # A null field is an absent one, as when the API server decodes JSON into Go pointers.
        given = {k: v for k, v in spec.items() if v is not None}
        if "ipBlock" in given:
            if "podSelector" in given or "namespaceSelector" in given:
                raise doc.error(at + ("ipBlock",), "ipBlock cannot go with a selector")
            block = given["ipBlock"]
            out.append(
                Peer("cidr", nets=_nets(doc, at + ("ipBlock",), block["cidr"], block.get("except")))
            )
            continue
        if "podSelector" not in given and "namespaceSelector" not in given:
            raise doc.error(at, "a peer needs podSelector, namespaceSelector or ipBlock")
        pods = (
            _selector(doc, at + ("podSelector",), given["podSelector"])
            if "podSelector" in given
            else None
        )
        if "namespaceSelector" in given:
            namespaces = _selector(doc, at + ("namespaceSelector",), given["namespaceSelector"])
            out.append(Peer("endpoints", pods=pods, namespaces=namespaces))
        else:
            out.append(Peer("endpoints", pods=pods, namespace=namespace))
    return tuple(out)


def _network_policy(doc: Document, namespace: str, name: str, spec: dict) -> Policy:
    types = spec.get("policyTypes")
    if not types:  # SetDefaults_NetworkPolicy: len(PolicyTypes) == 0, len(Egress) != 0
        types = ["Ingress"] + (["Egress"] if spec.get("egress") else [])
    rules = {}
    for direction, peers_key in (("ingress", "from"), ("egress", "to")):
        parsed = []
        for i, rule in enumerate(spec.get(direction) or []):
            rule = rule or {}
            at = ("spec", direction, i)
            parsed.append(
                PolicyRule(
                    _k8s_peers(doc, at + (peers_key,), rule.get(peers_key), namespace),
                    _k8s_ports(doc, at + ("ports",), rule.get("ports")),
                    doc.located(at),
                )
            )
        rules[direction] = tuple(parsed)
    return Policy(
        "NetworkPolicy",
        namespace,
        name,
        _selector(doc, ("spec", "podSelector"), spec.get("podSelector")),
        False,
        frozenset(t.lower() for t in types),
        rules["ingress"],
        rules["egress"],
        where=doc.located(()),
    )


def _cilium_ports(doc: Document, where: tuple, specs) -> tuple[PortSpec, ...] | None:
    if not specs:
        return None
    out = []
    for i, block in enumerate(specs):
        if block.get("rules"):
            LOG.warning(
                "%s: L7 rules are not enforced here; only the L4 part of this toPorts entry "
                "is (for traffic to a service VIP the waypoint enforces HTTP rules)",
                doc.located(where + (i, "rules")),
            )
        for j, spec in enumerate(block.get("ports") or [{}]):
            at = where + (i, "ports", j)
            protocols = (
                ["tcp", "udp", "sctp"]
                if spec.get("protocol", "ANY") == "ANY"
                else [spec["protocol"].lower()]
            )
            port = spec.get("port")
            if isinstance(port, str) and port.isdigit():
                port = int(port)
            if port == 0:
                port = None  # Cilium: port 0 is every port
            if isinstance(port, str) and not _PORT_NAME.match(port):
                raise doc.error(at + ("port",), f"{port!r} is not a port number or name")
            if isinstance(port, int) and not 1 <= port <= 65535:
                raise doc.error(at + ("port",), f"{port} is not a port number (0-65535)")
            end = spec.get("endPort")
            if end is not None and (not isinstance(port, int) or not port <= end <= 65535):
                raise doc.error(at + ("endPort",), "endPort needs a numeric port no greater")
            out += [PortSpec(p, port, end) for p in protocols]
    return tuple(out)


def _cilium_selector_peer(doc: Document, where: tuple, spec, namespace: str) -> Peer:
    sel = _selector(doc, where, spec, cilium_key)
    crosses = CILIUM_NAMESPACE_KEY in sel.label_keys()
    return Peer("endpoints", pods=sel, namespace=None if crosses else namespace, cilium=True)


def _cilium_rule(doc: Document, where: tuple, rule: dict, side: str, namespace: str) -> PolicyRule:
    peers: list[Peer] = []
    l3 = False
    for i, sel in enumerate(rule.get(f"{side}Endpoints") or []):
        l3 = True
        peers.append(_cilium_selector_peer(doc, where + (f"{side}Endpoints", i), sel, namespace))
    # CIDR rules select peers that are not endpoints (Cilium's layer 3 docs: "if the remote
    # peer is not an endpoint"); an endpoint's address inside the CIDR is not selected.
    for i, cidr in enumerate(rule.get(f"{side}CIDR") or []):
        l3 = True
        peers.append(Peer("world", nets=_nets(doc, where + (f"{side}CIDR", i), cidr, None)))
    for i, item in enumerate(rule.get(f"{side}CIDRSet") or []):
        l3 = True
        at = where + (f"{side}CIDRSet", i)
        peers.append(Peer("world", nets=_nets(doc, at, item["cidr"], item.get("except"))))
    for i, entity in enumerate(rule.get(f"{side}Entities") or []):
        l3 = True
        if entity not in CILIUM_ENTITIES:
            raise doc.error(
                where + (f"{side}Entities", i),
                f"entity {entity!r} has no meaning here "
                f"(known: {', '.join(sorted(CILIUM_ENTITIES))})",
            )
        if entity == "all":
            peers += [Peer("endpoints"), Peer("world")]
        elif entity == "cluster":
            peers.append(Peer("endpoints"))
        elif entity == "world":
            peers.append(Peer("world"))
    ports = _cilium_ports(doc, where + ("toPorts",), rule.get("toPorts"))
    if not l3:
        # No L3 part: with ports it is an L4-only rule (every peer); without, it matches nothing.
        return PolicyRule(None if ports else (), ports, doc.located(where))
    return PolicyRule(tuple(peers), ports, doc.located(where))


def _cilium_policy(doc: Document, path: tuple, namespace: str, name: str, spec: dict) -> Policy:
    sections = {}
    for section, side in (
        ("ingress", "from"),
        ("egress", "to"),
        ("ingressDeny", "from"),
        ("egressDeny", "to"),
    ):
        sections[section] = tuple(
            _cilium_rule(doc, path + (section, i), rule or {}, side, namespace)
            for i, rule in enumerate(spec.get(section) or [])
        )
    default_deny = spec.get("enableDefaultDeny") or {}
    isolates = frozenset(
        d
        for d in ("ingress", "egress")
        if default_deny.get(d, bool(sections[d] or sections[d + "Deny"]))
    )
    return Policy(
        "CiliumNetworkPolicy",
        namespace,
        name,
        _selector(doc, path + ("endpointSelector",), spec.get("endpointSelector"), cilium_key),
        True,
        isolates,
        sections["ingress"],
        sections["egress"],
        sections["ingressDeny"],
        sections["egressDeny"],
        where=doc.located(path),
    )


def check_unique(policies: list[Policy]) -> None:
    """Two documents with one kind, namespace and name would be one object in Kubernetes."""
    seen: dict[str, Policy] = {}
    for p in policies:
        if p.ident in seen:
            path, _, line = p.where.rpartition(":")
            raise ConfigError(
                path,
                int(line),
                "metadata.name",
                f"{p.ident} is also defined at {seen[p.ident].where}",
            )
        seen[p.ident] = p
