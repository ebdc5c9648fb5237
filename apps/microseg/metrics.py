"""Per-rule counters for microsegmentation, as the firewall has: packets and bytes per policy
and rule index, from the switches' flow counters (OpenFlow 1.3.5 7.3.5.2).

Each policy flow is named by the app's `Explainer`: a rule's flows count for the first policy
and rule that make them (config order, then rule order), an identity's default deny for the
first policy that isolates it (rule "default"). Summed over every switch.
"""

from __future__ import annotations

from typing import Any

from controller.metrics import Metrics

STATS_INTERVAL = 5.0  # seconds between counter polls
LABELS = ("policy", "direction", "rule", "action")


def rule_labels(named: dict[str, Any] | None) -> tuple[str, str, str, str] | None:
    """(policy "namespace/name", direction, rule index or "default", action) of what the
    Explainer named; None for flows that are no policy's rule (bindings, plumbing)."""
    if not named:
        return None
    if "policy" in named:
        return named["policy"], named["direction"], str(named["rule"]), named["action"]
    if named.get("kind") == "default deny" and named.get("policies"):
        policy = named["policies"][0].split(" ", 1)[1]  # "NetworkPolicy ns/name"
        return policy, named["direction"], "default", "deny"
    return None


class RuleCounters:
    """`osken_microseg_rule_packets` and `osken_microseg_rule_bytes` (gauges, labels policy,
    direction, rule, action), from each switch's last complete counter reply."""

    def __init__(self, metrics: Metrics) -> None:
        self.packets = metrics.gauge(
            "osken_microseg_rule_packets", "Packets matched per policy rule", LABELS
        )
        self.bytes = metrics.gauge(
            "osken_microseg_rule_bytes", "Bytes matched per policy rule", LABELS
        )
        self.counts: dict[int, dict[tuple, tuple[int, int]]] = {}  # dpid -> labels -> p, b
        self._parts: dict[int, dict[tuple, tuple[int, int]]] = {}

    def add(self, dpid: int, stats: list, more: bool, name) -> None:
        """One part of switch `dpid`'s flow stats reply; `name(flow)` is the Explainer's.
        The gauges move once the reply is complete."""
        parts = self._parts.setdefault(dpid, {})
        for s in stats:
            labels = rule_labels(name(s.flow))
            if labels is not None:
                p, b = parts.get(labels, (0, 0))
                parts[labels] = (p + s.packets, b + s.bytes)
        if not more:
            self.counts[dpid] = self._parts.pop(dpid)
            self.publish()

    def forget(self, live: set[int]) -> None:
        """Drop the counts of switches not in `live` (gone, or a new config's rules)."""
        for dpid in set(self.counts) - live:
            del self.counts[dpid]

    def publish(self) -> None:
        """Set the gauges to the sums over every switch."""
        totals: dict[tuple, tuple[int, int]] = {}
        for per_switch in self.counts.values():
            for labels, (p, b) in per_switch.items():
                q, c = totals.get(labels, (0, 0))
                totals[labels] = (q + p, c + b)
        self.packets.clear()
        self.bytes.clear()
        for labels, (p, b) in totals.items():
            self.packets.labels(*labels).set(p)
            self.bytes.labels(*labels).set(b)
