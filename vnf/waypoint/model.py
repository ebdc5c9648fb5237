"""What a waypoint enforces, as plain values: the control plane's model of one Envoy's config.

The services app fills it from the users' Istio and Gateway API documents; `vnf.waypoint.envoy`
turns it into Envoy's own resources. Nothing here knows YAML files or switches.

- A `Listener` per waypointed service: the service's VIP and port, and its HTTP routes in the
  order Envoy tries them (first match wins).
- A `Route`: one match block (`HttpMatch`, ANDed conditions; None matches every request) and
  the cluster it sends to.
- A `Cluster`: weighted endpoints. Envoy's weighted round-robin over one cluster's endpoints is
  deterministic (earliest deadline first), so a split is exact per request, unlike
  `weighted_clusters`, which draws at random per request.
- Authorization (Istio's AuthorizationPolicy, normalised): a listener's DENY rules and ALLOW
  rules (`AuthzRule`); a request is denied if a DENY rule matches, else allowed if no ALLOW
  policy applies or an ALLOW rule matches, else denied (Istio's order, CUSTOM aside).
- Peer authentication: a listener's mTLS mode, and the waypoint's certificate (`Tls`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

MATCH_KINDS = ("exact", "prefix", "regex")
MTLS_MODES = ("STRICT", "PERMISSIVE", "DISABLE")


@dataclass(frozen=True)
class StringMatch:
    """Istio's StringMatch: `kind` "exact", "prefix" or "regex" (RE2, whole value)."""

    kind: str
    value: str

    def __post_init__(self) -> None:
        if self.kind not in MATCH_KINDS:
            raise ValueError(f"a string match is one of {MATCH_KINDS}, not {self.kind!r}")


@dataclass(frozen=True)
class HttpMatch:
    """One match block's request conditions, all ANDed.

    `path` is matched against the path (no query string), `ignore_case` applies to it alone
    (Istio's ignoreUriCase); `headers` are (lower-case name, match) pairs, `without_headers`
    the same but must not match; `query` (name, match) pairs on query parameters. `method`,
    `authority` and `scheme` match the pseudo-headers. `where` is where the block is in its
    document (for messages).
    """

    path: StringMatch | None = None
    ignore_case: bool = False
    method: StringMatch | None = None
    authority: StringMatch | None = None
    scheme: StringMatch | None = None
    headers: tuple[tuple[str, StringMatch], ...] = ()
    without_headers: tuple[tuple[str, StringMatch], ...] = ()
    query: tuple[tuple[str, StringMatch], ...] = ()
    where: tuple = ()

    def specificity(self) -> tuple:
        """Gateway API's precedence among matches, most specific first when sorted: an exact
        path, then the longest path prefix, then a method, then more headers, then more
        query parameters (HTTPRouteRule docs, "Precedence")."""
        path = self.path or StringMatch("prefix", "/")
        return (
            path.kind != "exact",
            -len(path.value) if path.kind == "prefix" else 0,
            self.method is None,
            -len(self.headers),
            -len(self.query),
        )


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int
    weight: int  # >= 1: Envoy's load_balancing_weight


@dataclass(frozen=True)
class Cluster:
    name: str
    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True)
class Route:
    match: HttpMatch | None  # None: every request
    cluster: str
    origin: str  # file:line of the rule, for messages and stats


@dataclass(frozen=True)
class Source:
    """One `from.source` of an Istio rule: each field's values ORed, the fields ANDed; an
    empty field does not constrain. Principals and namespaces are Istio strings (with its `*`
    prefix or suffix); `ip_blocks` are the connection's source address."""

    principals: tuple[str, ...] = ()
    not_principals: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    not_namespaces: tuple[str, ...] = ()
    ip_blocks: tuple[ipaddress.IPv4Network, ...] = ()
    not_ip_blocks: tuple[ipaddress.IPv4Network, ...] = ()


@dataclass(frozen=True)
class Operation:
    """One `to.operation`, its ports already judged against the listener's: methods and paths
    (Istio strings: exact, `prefix*`, `*suffix` or `*`), each ORed, the two ANDed."""

    methods: tuple[str, ...] = ()
    not_methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    not_paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class Condition:
    """One `when` condition: `key` is source.ip, source.namespace, source.principal or
    request.headers[<name>]; it holds if a value matches and no not-value does."""

    key: str
    values: tuple[str, ...] = ()
    not_values: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuthzRule:
    """One rule of an AuthorizationPolicy: matches if a source matches (None: any), an
    operation matches (None: any) and every condition holds. `name` names it in Envoy
    (`<namespace>.<policy>[<index>]`)."""

    name: str
    sources: tuple[Source, ...] | None = None
    operations: tuple[Operation, ...] | None = None
    when: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class Listener:
    """A service's listener. `deny`: DENY rules; `allow`: ALLOW rules, None when no ALLOW
    policy applies (an empty tuple: an ALLOW policy applies and allows nothing). `mtls`: the
    peer authentication mode its backends ask for."""

    name: str  # the service's
    vip: str
    port: int
    routes: tuple[Route, ...]
    deny: tuple[AuthzRule, ...] = ()
    allow: tuple[AuthzRule, ...] | None = None
    mtls: str = "DISABLE"

    def __post_init__(self) -> None:
        if self.mtls not in MTLS_MODES:
            raise ValueError(f"an mTLS mode is one of {MTLS_MODES}, not {self.mtls!r}")


@dataclass(frozen=True)
class Tls:
    """The waypoint's certificate and key, and the CA its clients' certificates must chain to
    (PEM texts)."""

    cert: str
    key: str
    ca: str


@dataclass(frozen=True)
class Plan:
    """Everything one waypoint serves: a listener per service, and the clusters they use."""

    listeners: tuple[Listener, ...] = ()
    clusters: tuple[Cluster, ...] = ()
    tls: Tls | None = None  # needed by listeners whose mtls is not DISABLE

    @property
    def vips(self) -> tuple[str, ...]:
        """The addresses the waypoint must accept as its own, sorted, once each."""
        return tuple(sorted({x.vip for x in self.listeners}))
