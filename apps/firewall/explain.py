"""Which part of the firewall's config made one of its flows: for a trace (controller/trace).

A rule's flows carry its priority in the cookie's low bits (compile.py), so the flow names
its rule at once; the rule's `origin` names its file and place, and the document read at the
last load gives the line and the text as written (Document.source). Blocked sources, the
default and the conntrack plumbing are named as such; a verdict the XDP fast path also takes
names the interfaces where it drops before the switch sees the packet.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from apps.firewall.compile import (
    BLOCKED_ID,
    CT_ESTABLISHED,
    CT_INVALID,
    CT_PRIORITY,
    CT_RELATED,
    DEFAULT_PRIORITY,
    ND_PRIORITY,
)
from apps.firewall.fastpath import FastPath
from apps.firewall.rules import FirewallRule, FirewallSettings
from controller.config import Document
from controller.flows import Flow
from controller.pipeline import MISS_PRIORITY

_PLUMBING = {
    CT_PRIORITY: "stateful: untracked IP goes through conntrack (zone 7)",
    CT_INVALID: "stateful: invalid connection state",
    CT_ESTABLISHED: "stateful: an established connection passes",
    CT_RELATED: "stateful: a related packet (ICMP error) passes",
    ND_PRIORITY: "default deny: IPv6 neighbour discovery still passes",
}


def where(sources: dict[str, Document], path: str, place: tuple) -> dict[str, Any]:
    """{"file", "line", "text"} of `place` in the document read from `path` (line None and
    text "" when that document is not at hand)."""
    doc = sources.get(path)
    line, text = doc.source(place) if doc is not None else (None, "")
    return {"file": path, "line": line, "text": text}


def explain_flow(
    settings: FirewallSettings,
    rules: list[tuple[Any, int, FirewallRule]],
    fastpath: FastPath,
    f: Flow,
) -> dict[str, Any] | None:
    """What made firewall flow `f`: {"kind": "rule" | "blocked_ips" | "default" |
    "conntrack", "action", "file", "line", "text", ...}; None for a flow that is not the
    firewall's (or the core's miss flow in the firewall's table: default allow). `rules` is
    the app's (key, priority, rule) list, in order. "decides": true marks a verdict the
    config gave (a rule, blocked_ips, the default), as opposed to conntrack plumbing."""
    rule_id = f.cookie & 0xFFFF
    config = next(iter(settings.sources), "")
    if rule_id == BLOCKED_ID:
        return _blocked(settings, fastpath, f, config)
    for index, (_, prio, rule) in enumerate(rules, start=1):
        if prio == rule_id and f.priority == prio:
            path, place = rule.origin or ("", ())
            out = {
                "kind": "rule",
                "index": index,
                "action": rule.action,
                "decides": True,
                "description": rule.describe(),
                **where(settings.sources, path, place),
            }
            return {**out, **_xdp(fastpath, prio)}
    if f.priority == DEFAULT_PRIORITY or f.priority == MISS_PRIORITY:
        action = "deny" if f.priority == DEFAULT_PRIORITY else "allow"
        return {"kind": "default", "action": action, "decides": True, **_default(settings, config)}
    if f.priority in _PLUMBING:
        return {
            "kind": "conntrack" if f.priority != ND_PRIORITY else "default",
            "action": "deny" if f.priority == CT_INVALID else "allow",
            "file": config,
            "line": None,
            "text": _PLUMBING[f.priority],
        }
    return None


def _default(settings: FirewallSettings, config: str) -> dict[str, Any]:
    found = where(settings.sources, config, ("firewall", "default"))
    if found["line"] is None:  # the default came from the rules_file, or is the default
        for path in list(settings.sources)[1:]:
            found = where(settings.sources, path, ("default",))
    return found


def _blocked(settings: FirewallSettings, fastpath: FastPath, f: Flow, config: str) -> dict:
    match = f.match_dict()
    value = match.get("ipv4_src") or match.get("ipv6_src")
    address = value[0] if isinstance(value, tuple) else value
    for i, net in enumerate(settings.blocked):
        if address is not None and ipaddress.ip_address(address) == net.network_address:
            place = ("firewall", "blocked_ips", i)
            return {
                "kind": "blocked_ips",
                "action": "deny",
                "source": str(net),
                **where(settings.sources, config, place),
                **_xdp(fastpath, BLOCKED_ID),
            }
    return {"kind": "blocked_ips", "action": "deny", "file": config, "line": None, "text": ""}


def _xdp(fastpath: FastPath, rule_id: int) -> dict[str, Any]:
    """{"xdp": [interfaces]} where the XDP fast path drops what this rule denies."""
    prog = fastpath.prog
    if prog is None or not any(e.rule == rule_id for e in prog.entries.values()):
        return {}
    return {"xdp": sorted(prog.attached)}
