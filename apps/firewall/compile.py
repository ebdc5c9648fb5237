"""Firewall rules to flows in the firewall stage, in a way that keeps edits small.

- Order: every rule gets its own priority, earlier rules higher, so the first match wins even
  when rules overlap or shadow each other; a rule's own flows never overlap one another.
- Ranges: a port range becomes the few masked matches that cover it exactly.
- Stability: priorities survive reloads. Rules that keep their relative order keep their
  priority (the longest such run), new ones are fitted between, so editing one rule changes
  only that rule's flows. The cookie and the meter id carry the priority, which makes them
  stable too.
- Ingress only: rules match packets that did not come from another switch (FROM_FABRIC), so a
  packet is judged once, where it enters, and a rate limit counts it once.

>>> assign_priorities(["a", "new", "b"], {"a": 60000, "b": 59984})["new"]
59992
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Hashable, Sequence

from apps.firewall.rules import FirewallRule, FirewallSettings
from controller.flowlog import deny, log_instructions
from controller.flows import Flow, Meter, apply, conntrack, flow, meter
from controller.matches import (
    CT_EST,
    CT_INV,
    CT_REL,
    CT_TRK,
    ETH_TYPES,
    IP_PROTOCOLS,
    ND_TYPES,
    port_matches,
    prefix_match,
)
from controller.pipeline import FROM_FABRIC, REGISTRY, Pipeline

COOKIE = REGISTRY.cookie("firewall")
RULE_TOP, RULE_BOTTOM, SPACING = 60000, 1000, 16
MAX_RULES = RULE_TOP - RULE_BOTTOM  # each rule needs a priority of its own
CT_PRIORITY = 63000  # send untracked IP packets through conntrack (stateful mode)
CT_INVALID, CT_ESTABLISHED, CT_RELATED = 62002, 62001, 62000
BLOCKED_PRIORITY = 64000  # blocked sources go first, before conntrack and every rule
ND_PRIORITY, DEFAULT_PRIORITY = 20, 10
BLOCKED_ID = 0xFFFF  # cookie low bits of blocked-source flows
CT_ZONE = REGISTRY.value("ct_zone", "firewall")
PROTO = IP_PROTOCOLS


def _longest_decreasing(prios: Sequence[int]) -> set[int]:
    """Indexes of a longest strictly decreasing subsequence (patience sort on negatives)."""
    tails: list[int] = []  # -priority at the end of the best run of each length
    tail_idx: list[int] = []
    parent: list[int] = [-1] * len(prios)
    for i, p in enumerate(prios):
        k = bisect_left(tails, -p)
        if k == len(tails):
            tails.append(-p)
            tail_idx.append(i)
        else:
            tails[k], tail_idx[k] = -p, i
        parent[i] = tail_idx[k - 1] if k else -1
    keep, i = set(), tail_idx[-1] if tail_idx else -1
    while i != -1:
        keep.add(i)
        i = parent[i]
    return keep


def assign_priorities(keys: Sequence[Hashable], old: dict[Hashable, int]) -> dict[Hashable, int]:
    """A priority per key, in order, reusing as many old priorities as the order allows."""
    known = [i for i, k in enumerate(keys) if k in old]
    prios = [old[keys[i]] for i in known]
    if all(a > b for a, b in zip(prios, prios[1:], strict=False)):
        kept = set(known)  # the usual edit: every surviving rule kept its order
    else:
        kept = {known[j] for j in _longest_decreasing(prios)}
    out: dict[Hashable, int] = {}
    upper, pending = RULE_TOP + SPACING, []
    for i, key in enumerate([*keys, None]):
        if i < len(keys) and i not in kept:
            pending.append(key)
            continue
        lower = old[key] if i < len(keys) else RULE_BOTTOM - 1
        if pending:
            step = (upper - lower) / (len(pending) + 1)
            if step < 1:
                return _renumber(keys)
            for j, p in enumerate(pending, start=1):
                out[p] = round(upper - step * j)
            pending = []
        if i < len(keys):
            out[key] = upper = lower
    return out


def _renumber(keys: Sequence[Hashable]) -> dict[Hashable, int]:
    spacing = min(SPACING, MAX_RULES // max(len(keys), 1))
    if spacing < 1:
        raise ValueError(f"{len(keys)} rules do not fit in the firewall's priority range")
    return {k: RULE_TOP - i * spacing for i, k in enumerate(keys)}


def rule_keys(rules: Sequence[FirewallRule]) -> list[tuple[str, int]]:
    """Identity of each rule across reloads: its text, and which repeat of it this is."""
    seen: dict[str, int] = {}
    out = []
    for r in rules:
        seen[r.text] = seen.get(r.text, 0) + 1
        out.append((r.text, seen[r.text]))
    return out


class FirewallCompiler:
    """Rules in, flows and meters per rule out; remembers priorities between reloads."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.table = pipeline.table("firewall")
        self._go_on = pipeline.go_on("firewall")
        self.priorities: dict[Hashable, int] = {}

    def renumber(self, rules: Sequence[FirewallRule]) -> list[tuple[Hashable, int, FirewallRule]]:
        """(key, priority, rule) for each rule, in order, priorities kept where possible."""
        keys = rule_keys(rules)
        self.priorities = assign_priorities(keys, self.priorities)
        return [(k, self.priorities[k], r) for k, r in zip(keys, rules, strict=True)]

    def _ingress(self, family: int) -> dict:
        return {"eth_type": ETH_TYPES[family], "metadata": (0, FROM_FABRIC)}

    def rule_flows(
        self, rule: FirewallRule, prio: int, stateful: bool, log: bool = False
    ) -> list[Flow]:
        """The flows of one rule at its priority: disjoint matches, the rule's verdict (a
        deny that `log`s sends its packets to the flow log: controller/flowlog.py)."""
        go_on = (self._go_on,)
        commit = (apply(conntrack(CT_ZONE, commit=True)),) if stateful else ()
        if rule.action == "deny":
            instructions: tuple = log_instructions() if log else ()
        elif rule.action == "rate_limit":
            instructions = (meter(prio), *commit, *go_on)
        else:
            instructions = (*commit, *go_on)
        flows = []
        for family in rule.families:
            base = self._ingress(family)
            for net, key in ((rule.source, "src"), (rule.destination, "dst")):
                if net is not None:
                    base.update(prefix_match(f"ipv{family}_{key}", net))
            if rule.protocol != "any":
                base["ip_proto"] = PROTO[rule.protocol]
            if rule.icmp_type is not None:
                base[f"icmpv{4 if family == 4 else 6}_type"] = rule.icmp_type
            proto = rule.protocol
            for dst in port_matches(f"{proto}_dst", rule.dst_ports):
                for src in port_matches(f"{proto}_src", rule.src_ports):
                    flows.append(
                        flow(
                            self.table,
                            prio,
                            {**base, **dst, **src},
                            *instructions,
                            cookie=COOKIE | prio,
                        )
                    )
        return flows

    @staticmethod
    def rule_meter(rule: FirewallRule, prio: int) -> list[Meter]:
        if rule.rate_limit is None:
            return []
        rl = rule.rate_limit
        return [Meter(prio, rl.unit, rl.rate, rl.burst)]

    def base_flows(self, settings: FirewallSettings) -> list[Flow]:
        """Blocked sources, the default action, and conntrack plumbing (not tied to a rule)."""
        flows = []
        for net in settings.blocked:
            match = {
                "eth_type": ETH_TYPES[net.version],
                **prefix_match(f"ipv{net.version}_src", net),
            }
            flows.append(
                deny(self.table, BLOCKED_PRIORITY, match, COOKIE | BLOCKED_ID, settings.log)
            )
        if settings.default == "deny":
            go_on = self._go_on
            for family in (4, 6):
                flows.append(
                    deny(self.table, DEFAULT_PRIORITY, self._ingress(family), COOKIE, settings.log)
                )
            for nd in ND_TYPES:
                flows.append(
                    flow(
                        self.table,
                        ND_PRIORITY,
                        {**self._ingress(6), "ip_proto": PROTO["icmpv6"], "icmpv6_type": nd},
                        go_on,
                        cookie=COOKIE,
                    )
                )
        if settings.stateful:
            flows += self._conntrack_flows()
        return flows

    def _conntrack_flows(self) -> list[Flow]:
        go_on = self._go_on
        ingress = {"metadata": (0, FROM_FABRIC)}
        flows = [
            flow(
                self.table,
                CT_PRIORITY,
                {**self._ingress(f), "ct_state": (0, CT_TRK)},
                apply(conntrack(CT_ZONE, self.table)),
                cookie=COOKIE,
            )
            for f in (4, 6)
        ]
        for prio, state, verdict in (
            (CT_INVALID, CT_INV, ()),  # drop
            (CT_ESTABLISHED, CT_EST, (go_on,)),
            (CT_RELATED, CT_REL, (go_on,)),
        ):
            bits = CT_TRK | state
            flows.append(
                flow(
                    self.table, prio, {**ingress, "ct_state": (bits, bits)}, *verdict, cookie=COOKIE
                )
            )
        return flows
