"""CiliumNetworkPolicy L7 rules as an Envoy RBAC filter, after Istio's (rbac.py).

A listener with Cilium L7 rules (`Listener.l7_allow`) gets one ALLOW filter: a request passes
when it comes from a source of some rule (its client address; any for a rule without peers)
and matches one of that rule's HTTP rules (any request for an L4-only rule on the port), as
Cilium's own proxy judges it: `method`, `path` (the path without the query) and `host` are
regular expressions matched against the whole value; a header "Name: value" must have that
value, a bare "Name" must be present. What no rule allows gets 403.

Sources: Cilium's API reference (PortRuleHTTP), Envoy's (extensions.filters.http.rbac.v3.RBAC,
config.rbac.v3.Permission, Principal).
"""

from __future__ import annotations

from vnf.waypoint.model import HttpRule, L7Allow, Listener

# rbac.py's Envoy matcher builders: one way to write an address, an AND, an OR
from vnf.waypoint.rbac import _ANY as ANY
from vnf.waypoint.rbac import RBAC
from vnf.waypoint.rbac import _and as all_of
from vnf.waypoint.rbac import _ip as remote_ip
from vnf.waypoint.rbac import _or as any_of

NAME = "envoy.filters.http.rbac.cilium"


def _regex_header(name: str, regex: str) -> dict:
    return {"header": {"name": name, "string_match": {"safe_regex": {"regex": regex}}}}


def _http(rule: HttpRule) -> dict:
    parts = [_regex_header(":method", rule.method)] if rule.method else []
    if rule.path:
        parts.append({"url_path": {"path": {"safe_regex": {"regex": rule.path}}}})
    if rule.host:
        parts.append(_regex_header(":authority", rule.host))
    for name, value in rule.headers:
        if value is None:
            parts.append({"header": {"name": name, "present_match": True}})
        else:
            parts.append({"header": {"name": name, "string_match": {"exact": value}}})
    return all_of("rules", parts)


def policy(rule: L7Allow) -> dict:
    """One rule as an Envoy RBAC Policy."""
    ids = [any_of("ids", [remote_ip(n) for n in rule.sources])] if rule.sources else []
    if rule.sources == ():
        ids = [{"not_id": ANY}]  # no client at all
    permissions = [any_of("rules", [_http(h) for h in rule.http])] if rule.http else []
    return {"permissions": [all_of("rules", permissions)], "principals": [all_of("ids", ids)]}


def filters(x: Listener) -> list[dict]:
    """The Cilium L7 filter of listener `x`, if any rule applies to it."""
    if x.l7_allow is None:
        return []
    rules = {"action": "ALLOW", "policies": {r.name: policy(r) for r in x.l7_allow}}
    config = {"@type": RBAC, "rules": rules, "rules_stat_prefix": "cilium."}
    return [{"name": NAME, "typed_config": config}]
