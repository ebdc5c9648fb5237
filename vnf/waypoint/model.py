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
"""

from __future__ import annotations

from dataclasses import dataclass

MATCH_KINDS = ("exact", "prefix", "regex")


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
class Listener:
    name: str  # the service's
    vip: str
    port: int
    routes: tuple[Route, ...]


@dataclass(frozen=True)
class Plan:
    """Everything one waypoint serves: a listener per service, and the clusters they use."""

    listeners: tuple[Listener, ...] = ()
    clusters: tuple[Cluster, ...] = ()

    @property
    def vips(self) -> tuple[str, ...]:
        """The addresses the waypoint must accept as its own, sorted, once each."""
        return tuple(sorted({x.vip for x in self.listeners}))
