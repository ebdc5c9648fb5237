"""What a waypoint enforces, as plain values: the control plane's model of one Envoy's config.

The services app fills it from the users' Istio and Gateway API documents; `vnf.waypoint.envoy`
turns it into Envoy's own resources. Nothing here knows YAML files or switches.

- A `Listener` per waypointed service: the service's VIP and port, and its HTTP routes in the
  order Envoy tries them (first match wins).
- A `Route`: one match block (`HttpMatch`, ANDed conditions; None matches every request) and
  the cluster it sends to.
- A `Cluster`: weighted endpoints. Envoy's weighted round-robin over one cluster's endpoints is
  deterministic (earliest deadline first), so a split is exact per request, unlike
  `weighted_clusters`, which draws at random per request: a route uses those only when its
  backends fall under different traffic policies (a cluster has one set of limits). Its
  `Limits` and `Ejection` are a DestinationRule's trafficPolicy in Envoy's terms.
- Authorization (Istio's AuthorizationPolicy, normalised): a listener's DENY rules and ALLOW
  rules (`AuthzRule`); a request is denied if a DENY rule matches, else allowed if no ALLOW
  policy applies or an ALLOW rule matches, else denied (Istio's order, CUSTOM aside).
- Peer authentication: a listener's mTLS mode, and the waypoint's certificate (`Tls`).
- EnvoyFilter patches to a listener's HTTP filter chain (`FilterPatch`), applied in order.
- CiliumNetworkPolicy L7 rules for a listener (`L7Allow`): a request must match one of them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import re2

MATCH_KINDS = ("exact", "prefix", "regex")
# As Envoy 1.40 compiles safe_regex: the pattern's UTF-8 bytes read as Latin-1 (measured with
# `envoy --mode validate`: it refuses \x{100} and takes (?:\pL{1000}), which UTF-8 RE2 would not).
_RE2_ENVOY = re2.Options()
_RE2_ENVOY.log_errors = False  # the error is raised, located, to the user; not logged by RE2
_RE2_ENVOY.encoding = re2.Options.Encoding.LATIN1
MTLS_MODES = ("STRICT", "PERMISSIVE", "DISABLE")
# Istio's EnvoyFilter patch operations on an HTTP filter chain.
PATCH_OPERATIONS = ("ADD", "INSERT_FIRST", "INSERT_BEFORE", "INSERT_AFTER", "REPLACE", "REMOVE")


@dataclass(frozen=True)
class StringMatch:
    """Istio's StringMatch: `kind` "exact", "prefix" or "regex" (RE2, whole value)."""

    kind: str
    value: str

    def __post_init__(self) -> None:
        if self.kind not in MATCH_KINDS:
            raise ValueError(f"a string match is one of {MATCH_KINDS}, not {self.kind!r}")
        if self.kind == "regex":
            check_regex(self.value)


def check_regex(pattern: str) -> None:
    """Raise ValueError naming what is wrong if `pattern` is not a regular expression Envoy's
    `safe_regex` takes: RE2 syntax (github.com/google/re2/wiki/Syntax: no lookaround, no
    backreferences, repetition counts up to 1,000, no code point past 0xFF), not empty (the
    proto's min_len), compiled with google-re2 in the encoding Envoy uses (Latin-1).
    """
    reason = _re2_refusal(pattern)
    if reason is not None:
        raise ValueError(f"{pattern!r} is not an RE2 regular expression ({reason})")


def _re2_refusal(pattern: str) -> str | None:
    """Why Envoy would refuse `pattern` as a safe_regex, or None if it takes it."""
    if not pattern:
        return "empty: Envoy's RegexMatcher needs at least one character"
    try:
        re2.compile(pattern.encode("utf-8"), _RE2_ENVOY)
    except UnicodeEncodeError:
        return "a lone surrogate is not UTF-8 text"
    except re2.error as exc:
        return exc.args[0].decode(errors="replace") if exc.args else "invalid"
    return None


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
class Limits:
    """A cluster's circuit breakers and connection settings, in Envoy's terms (None: Envoy's
    default). Counts are for the whole cluster, per Envoy (config.cluster.v3.CircuitBreakers.
    Thresholds); durations in seconds."""

    max_connections: int | None = None
    max_pending_requests: int | None = None
    max_requests: int | None = None
    max_retries: int | None = None
    max_requests_per_connection: int | None = None
    connect_timeout: float | None = None
    idle_timeout: float | None = None


@dataclass(frozen=True)
class Ejection:
    """A cluster's outlier detection, in Envoy's terms (config.cluster.v3.OutlierDetection).
    A count of 0 turns its kind of ejection off; None leaves it to Envoy's default (on for
    5xx, off for the others). Durations in seconds; `min_health_percent` is the cluster's
    healthy panic threshold (0: never panic, Istio's default)."""

    consecutive_5xx: int | None = None
    consecutive_gateway_failure: int | None = None
    consecutive_local_origin_failure: int | None = None
    split_external_local_origin_errors: bool = False
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_percent: int = 10
    min_health_percent: int = 0


@dataclass(frozen=True)
class Cluster:
    name: str
    endpoints: tuple[Endpoint, ...]
    limits: Limits | None = None
    ejection: Ejection | None = None


@dataclass(frozen=True)
class Retries:
    """Istio's HTTPRetry: `attempts` retries, each within `per_try_timeout` seconds (None: the
    route's), on the conditions `retry_on` (Envoy's x-envoy-retry-on names) and status codes."""

    attempts: int
    per_try_timeout: float | None = None
    retry_on: tuple[str, ...] = ()
    status_codes: tuple[int, ...] = ()


@dataclass(frozen=True)
class Fault:
    """Istio's HTTPFaultInjection: a fixed `delay` (seconds) for `delay_percent` of requests,
    an answer `abort_status` without asking a backend for `abort_percent` of them."""

    delay: float | None = None
    delay_percent: float = 100.0
    abort_status: int | None = None
    abort_percent: float = 100.0


@dataclass(frozen=True)
class HeaderEdits:
    """Headers to set (replacing), add (appending) and remove, names lower-case."""

    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class Actions:
    """What a route does besides choosing a backend (Istio HTTPRoute fields, Gateway API
    filters): a `timeout` (seconds), `retries`, an injected `fault`, `mirrors` ((cluster,
    percent of requests) copies sent, answers dropped), header edits, and rewrites of the
    path (`prefix_rewrite`: the matched prefix; `path_rewrite`: the whole path) and authority."""

    timeout: float | None = None
    retries: Retries | None = None
    fault: Fault | None = None
    mirrors: tuple[tuple[str, float], ...] = ()
    request_headers: HeaderEdits | None = None
    response_headers: HeaderEdits | None = None
    prefix_rewrite: str | None = None
    path_rewrite: str | None = None
    authority_rewrite: str | None = None


@dataclass(frozen=True)
class Route:
    """`cluster` takes every request; `weighted` (cluster, weight) pairs, when set, split them
    at random per request instead (Envoy's weighted_clusters)."""

    match: HttpMatch | None  # None: every request
    cluster: str
    origin: str  # file:line of the rule, for messages and stats
    weighted: tuple[tuple[str, int], ...] = ()
    actions: Actions | None = None


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
class FilterPatch:
    """One EnvoyFilter `HTTP_FILTER` patch, as Istio applies it to an HTTP filter chain:
    `operation` (PATCH_OPERATIONS) relative to the filter named `sub_filter` (None: the chain's
    start or end), with `value` (an HTTP filter as JSON text; "" for REMOVE). `origin` names
    it (file:line)."""

    operation: str
    sub_filter: str | None
    value: str
    origin: str

    def __post_init__(self) -> None:
        if self.operation not in PATCH_OPERATIONS:
            raise ValueError(f"a patch operation is one of {PATCH_OPERATIONS}")


@dataclass(frozen=True)
class HttpRule:
    """Cilium's PortRuleHTTP: `method`, `path` and `host` are regular expressions the whole
    value must match (None: any); `headers` (lower-case name, value or None for presence)."""

    method: str | None = None
    path: str | None = None
    host: str | None = None
    headers: tuple[tuple[str, str | None], ...] = ()


@dataclass(frozen=True)
class L7Allow:
    """One CiliumNetworkPolicy ingress rule for a port: requests from `sources` (None: any
    client) matching one of `http` (None: any request: an L4-only rule) are allowed. `name`
    names it (`<namespace>.<policy>[<rule>]`)."""

    name: str
    sources: tuple[ipaddress.IPv4Network, ...] | None
    http: tuple[HttpRule, ...] | None


@dataclass(frozen=True)
class Listener:
    """A service's listener. `deny`: DENY rules; `allow`: ALLOW rules, None when no ALLOW
    policy applies (an empty tuple: an ALLOW policy applies and allows nothing). `mtls`: the
    peer authentication mode its backends ask for. `patches`: EnvoyFilter patches to its HTTP
    filters."""

    name: str  # the service's
    vip: str
    port: int
    routes: tuple[Route, ...]
    deny: tuple[AuthzRule, ...] = ()
    allow: tuple[AuthzRule, ...] | None = None
    mtls: str = "DISABLE"
    patches: tuple[FilterPatch, ...] = ()  # to its HTTP filter chain, in order
    l7_allow: tuple[L7Allow, ...] | None = None  # Cilium L7 rules (None: none apply)

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
