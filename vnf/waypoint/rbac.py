"""Istio authorization as Envoy's RBAC HTTP filters, the way Istio compiles it.

A listener gets a DENY filter (when it has DENY rules) and then an ALLOW filter (when an ALLOW
policy applies), before the router: Envoy runs them in that order, so a request is denied if a
DENY rule matches, else allowed only if an ALLOW rule matches (Istio's evaluation order). An
ALLOW filter with no policies denies everything, as an ALLOW policy that allows nothing must.

One Istio rule is one Envoy policy: its principals are the rule's sources (ORed, each an AND
of its fields) ANDed with the `when` conditions about the source; its permissions are the
operations (ORed) ANDed with the conditions about the request. Istio strings map to Envoy's
StringMatcher: `a*` prefix, `*a` suffix, `*` anything present, else exact; a principal is
matched as the SPIFFE URI SAN of the client's certificate (`spiffe://` + principal), a
namespace as `/ns/<namespace>/` inside it.

Sources: Envoy's API (extensions.filters.http.rbac.v3.RBAC, config.rbac.v3.Policy, Principal,
Permission), Istio's AuthorizationPolicy reference ("Value matching", "Authorization Policy
Conditions") and its builder (pilot/pkg/security/authz/builder).
"""

from __future__ import annotations

import ipaddress
import re

from vnf.waypoint.model import AuthzRule, Condition, Listener, Operation, Source

RBAC = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
SPIFFE = "spiffe://"
# The names of the filters `filters` makes, DENY's first (an EnvoyFilter may not touch them).
FILTER_NAMES = ("envoy.filters.http.rbac.deny", "envoy.filters.http.rbac.allow")
_ANY = {"any": True}


def string_match(value: str, prefix: str = "") -> dict:
    """An Istio value as Envoy's StringMatcher, `prefix` put before it (never before `*`).

    >>> string_match("/api/v1/*")
    {'prefix': '/api/v1/'}
    >>> string_match("*.html")
    {'suffix': '.html'}
    >>> string_match("*")
    {'safe_regex': {'regex': '.+'}}
    """
    if value == "*":
        return {"safe_regex": {"regex": ".+"}}
    if value.endswith("*"):
        return {"prefix": prefix + value[:-1]}
    if value.startswith("*"):
        return {"suffix": value[1:]}
    return {"exact": prefix + value}


def _namespace_regex(value: str) -> str:
    if value == "*":
        return r".*/ns/[^/]+/.*"
    if value.endswith("*"):
        return f".*/ns/{re.escape(value[:-1])}[^/]*/.*"
    if value.startswith("*"):
        return f".*/ns/[^/]*{re.escape(value[1:])}/.*"
    return f".*/ns/{re.escape(value)}/.*"


def _principal(value: str) -> dict:
    return {"authenticated": {"principal_name": string_match(value, SPIFFE)}}


def _namespace(value: str) -> dict:
    regex = _namespace_regex(value)
    return {"authenticated": {"principal_name": {"safe_regex": {"regex": regex}}}}


def _ip(net) -> dict:
    return {
        "direct_remote_ip": {
            "address_prefix": str(net.network_address),
            "prefix_len": net.prefixlen,
        }
    }


def _or(kind: str, items: list[dict]) -> dict:
    return items[0] if len(items) == 1 else {f"or_{kind}": {kind: items}}


def _and(kind: str, items: list[dict]) -> dict:
    if not items:
        return _ANY
    return items[0] if len(items) == 1 else {f"and_{kind}": {kind: items}}


def _field(kind: str, make, values, not_values) -> list[dict]:
    """A field's values ORed, and its not-values ORed under a not: what the field requires."""
    out = [_or(kind, [make(v) for v in values])] if values else []
    if not_values:
        negated = "not_id" if kind == "ids" else "not_rule"
        out.append({negated: _or(kind, [make(v) for v in not_values])})
    return out


def _source(s: Source) -> dict:
    parts = _field("ids", _principal, s.principals, s.not_principals)
    parts += _field("ids", _namespace, s.namespaces, s.not_namespaces)
    parts += _field("ids", _ip, s.ip_blocks, s.not_ip_blocks)
    return _and("ids", parts)


def _method(value: str) -> dict:
    return {"header": {"name": ":method", "string_match": string_match(value)}}


def _path(value: str) -> dict:
    return {"url_path": {"path": string_match(value)}}


def _operation(o: Operation) -> dict:
    parts = _field("rules", _method, o.methods, o.not_methods)
    parts += _field("rules", _path, o.paths, o.not_paths)
    return _and("rules", parts)


def _header_condition(name: str):
    return lambda v: {"header": {"name": name, "string_match": string_match(v)}}


_SOURCE_KEYS = {
    "source.ip": lambda v: _ip(ipaddress.ip_network(v, strict=False)),
    "source.namespace": _namespace,
    "source.principal": _principal,
}


def _condition(c: Condition) -> tuple[str, list[dict]]:
    if c.key in _SOURCE_KEYS:
        return "ids", _field("ids", _SOURCE_KEYS[c.key], c.values, c.not_values)
    header = c.key.removeprefix("request.headers[").removesuffix("]").lower()
    return "rules", _field("rules", _header_condition(header), c.values, c.not_values)


def policy(rule: AuthzRule) -> dict:
    """One Istio rule as an Envoy RBAC Policy (permissions and principals)."""
    ids = [_or("ids", [_source(s) for s in rule.sources])] if rule.sources else []
    rules = [_or("rules", [_operation(o) for o in rule.operations])] if rule.operations else []
    for c in rule.when:
        kind, parts = _condition(c)
        (ids if kind == "ids" else rules).extend(parts)
    return {"permissions": [_and("rules", rules)], "principals": [_and("ids", ids)]}


def _filter(action: str, rules: tuple[AuthzRule, ...], stat: str) -> dict:
    return {
        "name": f"envoy.filters.http.rbac.{action.lower()}",
        "typed_config": {
            "@type": RBAC,
            "rules": {"action": action, "policies": {r.name: policy(r) for r in rules}},
            "rules_stat_prefix": stat,
        },
    }


def filters(x: Listener) -> list[dict]:
    """The RBAC HTTP filters of listener `x`, in the order Envoy must run them (DENY, ALLOW)."""
    out = [_filter("DENY", x.deny, "deny.")] if x.deny else []
    if x.allow is not None:
        out.append(_filter("ALLOW", x.allow, "allow."))
    return out
