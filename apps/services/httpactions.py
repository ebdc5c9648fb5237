"""HTTP actions of a route rule, for the Envoy waypoint: Istio VirtualService `http` fields and
Gateway API HTTPRoute filters, read unmodified.

A rule with actions needs a waypoint (a switch cannot do them): without one it is rejected by
name, as a rule with request conditions is (routing.reject_l7). What Envoy does is read:

- Istio: `timeout`, `retries` (attempts, perTryTimeout, retryOn with Envoy's names or status
  codes), `fault` (delay.fixedDelay, abort.httpStatus, each with `percentage.value`),
  `mirror` with `mirrorPercentage` and `mirrors`, `headers.request` / `headers.response`
  (set, add, remove), `rewrite` (uri: the matched prefix, authority).
- Gateway API: the rule's `timeouts.request`, filters RequestHeaderModifier,
  ResponseHeaderModifier, RequestMirror (percent or fraction) and URLRewrite (hostname,
  ReplaceFullPath, ReplacePrefixMatch).

Refused by name (warning, file and line; the rule takes no traffic): Istio `redirect`,
`directResponse`, `delegate`, `corsPolicy`, a gRPC abort, `uriRegexRewrite`, the deprecated
`mirror_percent`; Gateway API RequestRedirect, CORS, ExtensionRef, `timeouts.backendRequest`.

Sources: Istio networking/v1 VirtualService reference (HTTPRoute, HTTPRetry,
HTTPFaultInjection, HTTPRewrite, Headers); Gateway API v1 HTTPRoute reference (HTTPRouteFilter,
HTTPRouteTimeouts).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from controller.config import Document
from controller.durations import located_seconds
from vnf.waypoint.model import Actions, Fault, HeaderEdits, Retries

# Envoy's retry conditions (x-envoy-retry-on and x-envoy-retry-grpc-on: router filter docs),
# the names Istio's retryOn validation accepts besides status codes. Envoy takes any word and
# ignores what it does not know, so a misspelled one would mean no retries at all.
RETRY_ON = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "envoy-ratelimited",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "http3-post-connect-failure",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    }
)
ISTIO_ACTIONS = ("timeout", "retries", "fault", "mirror", "mirrorPercentage", "mirrors")
ISTIO_ACTIONS += ("headers", "rewrite")
ISTIO_REFUSED = {
    "redirect": "a redirect",
    "directResponse": "a direct response",
    "delegate": "delegation to another VirtualService",
    "corsPolicy": "a CORS policy",
    "mirror_percent": "mirror_percent (deprecated: mirrorPercentage)",
    "mirrorPercent": "mirrorPercent (deprecated: mirrorPercentage)",
}
GATEWAY_FILTERS = (
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "RequestMirror",
    "URLRewrite",
)


class Refused(Exception):
    """An action the waypoint cannot do: `where` (under the rule) and what it is."""

    def __init__(self, where: tuple, what: str) -> None:
        super().__init__(what)
        self.where, self.what = where, what


@dataclass(frozen=True)
class Mirror:
    """A mirror target: a host (short or full), its subset and port, and the percent copied."""

    host: str
    subset: str | None
    port: int | None
    percent: float
    where: tuple


@dataclass(frozen=True)
class RuleActions:
    """A rule's actions: all but the mirrors as the waypoint's `Actions`, the mirrors to be
    resolved to backends; `where` names the first action (for messages)."""

    actions: Actions
    mirrors: tuple[Mirror, ...]
    where: tuple


def _percent(value: dict | None, where: tuple) -> float:
    """Istio's Percent (`{value: 0..100}`); 100 when absent."""
    if value is None:
        return 100.0
    number = value.get("value", 0) if isinstance(value, dict) else value
    if not isinstance(number, int | float) or not 0 <= number <= 100:
        raise Refused(where, f"a percentage of {number!r} (0 to 100)")
    return float(number)


def _retries(doc: Document, where: tuple, spec: dict) -> Retries | None:
    attempts = spec.get("attempts", 0)
    if not attempts:
        return None
    names, codes = [], []
    for word in str(spec.get("retryOn", "")).split(","):
        word = word.strip()
        if word.isascii() and word.isdigit() and 100 <= int(word) <= 599:
            codes.append(int(word))
        elif word in RETRY_ON:
            names.append(word)
        elif word:
            raise doc.error(
                where + ("retryOn",),
                f"{word!r} is neither an HTTP status code (100-599) nor one of "
                f"{', '.join(sorted(RETRY_ON))}",
            )
    per_try = spec.get("perTryTimeout")
    return Retries(
        attempts,
        None if per_try is None else located_seconds(doc, where + ("perTryTimeout",), per_try),
        tuple(names),
        tuple(codes),
    )


def _fault(doc: Document, where: tuple, spec: dict) -> Fault:
    delay, abort = spec.get("delay") or {}, spec.get("abort") or {}
    if "grpcStatus" in abort or "http2Error" in abort:
        raise Refused(where + ("abort",), "a gRPC or HTTP/2 abort")
    if delay and "fixedDelay" not in delay:
        raise Refused(where + ("delay",), "a delay other than fixedDelay")
    pct = delay.get("percentage")
    if pct is None and "percent" in delay:
        pct = {"value": delay["percent"]}
    return Fault(
        None
        if not delay
        else located_seconds(doc, where + ("delay", "fixedDelay"), delay["fixedDelay"]),
        _percent(pct, where + ("delay", "percentage")),
        abort.get("httpStatus"),
        _percent(abort.get("percentage"), where + ("abort", "percentage")),
    )


def _edits(spec: dict | None) -> HeaderEdits | None:
    if not spec:
        return None

    def pairs(value) -> tuple[tuple[str, str], ...]:
        if isinstance(value, list):  # Gateway API: [{name, value}]
            return tuple((str(h["name"]).lower(), str(h["value"])) for h in value)
        return tuple((str(k).lower(), str(v)) for k, v in (value or {}).items())

    return HeaderEdits(
        pairs(spec.get("set")),
        pairs(spec.get("add")),
        tuple(str(n).lower() for n in spec.get("remove") or ()),
    )


def _istio_mirror(spec: dict, percent: float, where: tuple) -> Mirror:
    port = (spec.get("port") or {}).get("number")
    return Mirror(str(spec["host"]), spec.get("subset"), port, percent, where)


def istio_actions(doc: Document, rule: dict, at: tuple) -> RuleActions | None:
    """The actions of Istio HTTP rule `rule` (at `at`), None without any.

    Raises:
        Refused: an action the waypoint cannot do.
        ConfigError: a duration that is not one, located.
    """
    for key, what in ISTIO_REFUSED.items():
        if key in rule:
            raise Refused(at + (key,), what)
    present = [k for k in ISTIO_ACTIONS if k in rule]
    if not present:
        return None
    mirrors = []
    if rule.get("mirror"):
        pct = _percent(rule.get("mirrorPercentage"), at + ("mirrorPercentage",))
        mirrors.append(_istio_mirror(rule["mirror"], pct, at + ("mirror",)))
    for j, m in enumerate(rule.get("mirrors") or []):
        where = at + ("mirrors", j)
        pct = _percent(m.get("percentage"), where + ("percentage",))
        mirrors.append(_istio_mirror(m["destination"], pct, where))
    rewrite = rule.get("rewrite") or {}
    if "uriRegexRewrite" in rewrite:
        raise Refused(at + ("rewrite", "uriRegexRewrite"), "a regex rewrite")
    headers = rule.get("headers") or {}
    timeout = rule.get("timeout")
    actions = Actions(
        timeout=None if timeout is None else located_seconds(doc, at + ("timeout",), timeout),
        retries=_retries(doc, at + ("retries",), rule.get("retries") or {}),
        fault=_fault(doc, at + ("fault",), rule["fault"]) if rule.get("fault") else None,
        request_headers=_edits(headers.get("request")),
        response_headers=_edits(headers.get("response")),
        prefix_rewrite=rewrite.get("uri"),
        authority_rewrite=rewrite.get("authority"),
    )
    return RuleActions(actions, tuple(mirrors), at + (present[0],))


def _gateway_percent(spec: dict, where: tuple) -> float:
    if "fraction" in spec:
        f = spec["fraction"]
        return float(Fraction(f["numerator"], f.get("denominator", 100)) * 100)
    return _percent({"value": spec.get("percent", 100)}, where)


def gateway_actions(doc: Document, rule: dict, at: tuple) -> RuleActions | None:
    """The actions of Gateway API HTTPRoute rule `rule` (at `at`): its filters and
    `timeouts.request`; None without any.

    Raises:
        Refused: a filter or timeout the waypoint cannot do.
        ConfigError: a duration that is not one, located.
    """
    timeouts = rule.get("timeouts") or {}
    if "backendRequest" in timeouts:
        raise Refused(at + ("timeouts", "backendRequest"), "a per-backend-request timeout")
    filters = rule.get("filters") or []
    if not filters and "request" not in timeouts:
        return None
    fields: dict = {}
    mirrors = []
    for j, f in enumerate(filters):
        where = at + ("filters", j)
        kind = f.get("type")
        if kind not in GATEWAY_FILTERS:
            raise Refused(where + ("type",), f"an HTTP filter of type {kind}")
        if kind == "RequestHeaderModifier":
            fields["request_headers"] = _edits(f.get("requestHeaderModifier"))
        elif kind == "ResponseHeaderModifier":
            fields["response_headers"] = _edits(f.get("responseHeaderModifier"))
        elif kind == "RequestMirror":
            spec = f.get("requestMirror") or {}
            ref = spec.get("backendRef") or {}
            pct = _gateway_percent(spec, where + ("requestMirror", "percent"))
            mirrors.append(Mirror(str(ref["name"]), None, ref.get("port"), pct, where))
        else:
            fields.update(_url_rewrite(f.get("urlRewrite") or {}, where + ("urlRewrite",)))
    if "request" in timeouts:
        fields["timeout"] = located_seconds(doc, at + ("timeouts", "request"), timeouts["request"])
    first = at + ("filters", 0) if filters else at + ("timeouts",)
    return RuleActions(Actions(**fields), tuple(mirrors), first)


def _url_rewrite(spec: dict, where: tuple) -> dict:
    out: dict = {}
    if "hostname" in spec:
        out["authority_rewrite"] = spec["hostname"]
    path = spec.get("path")
    if path:
        kind = path.get("type")
        if kind == "ReplaceFullPath":
            out["path_rewrite"] = path["replaceFullPath"]
        elif kind == "ReplacePrefixMatch":
            out["prefix_rewrite"] = path["replacePrefixMatch"]
        else:
            raise Refused(where + ("path", "type"), f"a path rewrite of type {kind}")
    return out
