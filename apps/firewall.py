"""The IP firewall stage: ordered rules, blocked sources, rate limits, schedules, stateful mode.

Run it with ``osken-manager apps/firewall.py --config lab.yaml``: it brings the L2 learning app
along, so that one command gives a working, filtered network. The config's `firewall:` section
and the seed's rules.json are described in docs/firewall.md.

Each rule is its own owner in the desired state, so a reload that edits one rule sends only that
rule's flows, and a schedule that opens or closes touches only its rule. Per-rule packet and byte
counters come from flow stats (cookie = the rule's priority) and go to Prometheus; denied
packets are logged once per stats interval per rule, never per packet.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable

from prometheus_client import Gauge

from apps.fw.compile import BLOCKED_ID, COOKIE, Compiler
from apps.fw.rules import FirewallSettings, Rule, parse_firewall
from controller.app import SuiteApp
from controller.shim import SuiteOSKenApp

LOG = logging.getLogger("osken_suite.firewall")
REQUIRES = ["apps.l2_learning"]  # forwarding comes from the L2 app; osken-manager loads it too
APP_MASK = 0xFF << 56


class Firewall(SuiteApp):
    name = "firewall"
    config_section = "firewall"
    cookie = COOKIE

    def __init__(self, core) -> None:
        super().__init__(core)
        self.table = core.pipeline.table("firewall")
        self.compiler = Compiler(self.table)
        self.settings = FirewallSettings()
        self._checked: FirewallSettings | None = None
        self.rules: list[tuple[Hashable, int]] = []  # (rule key, priority), in order
        self.active: dict[Hashable, bool] = {}
        self.counts: dict[tuple[int, int], tuple[int, int]] = {}  # (dpid, prio) -> packets, bytes
        self._logged: dict[int, int] = {}  # prio -> denied packets already reported
        self._next_poll = 0.0
        self._switches: list[int] = []
        registry = core.metrics.registry
        self.packets = Gauge(
            "osken_firewall_rule_packets",
            "Packets matched per firewall rule",
            ["rule", "action", "description"],
            registry=registry,
        )
        self.bytes = Gauge(
            "osken_firewall_rule_bytes",
            "Bytes matched per firewall rule",
            ["rule", "action", "description"],
            registry=registry,
        )

    # --- config --------------------------------------------------------------------------------

    def check_config(self, section, config) -> None:
        self._checked = parse_firewall(section, config)

    def configure(self, section, now: float) -> None:
        settings = self._checked if self._checked is not None else FirewallSettings()
        old_owners = {k for k, _ in self.rules}
        self.settings = settings
        self.rules = self.compiler.renumber(settings.rules)
        for key in old_owners - {k for k, _ in self.rules}:
            self.desired.drop(("fw", "rule", key))
            self.active.pop(key, None)
        self.packets.clear()
        self.bytes.clear()
        self._install_all(now)
        LOG.info(
            "firewall: %d rules, default %s, %d blocked sources%s",
            len(self.rules),
            settings.default,
            len(settings.blocked),
            ", stateful" if settings.stateful else "",
        )

    # --- desired flows -------------------------------------------------------------------------

    def _install_all(self, now: float) -> None:
        switches = self.topology.switches()
        self._switches = switches
        base = self.compiler.base_flows(self.settings)
        self.desired.put(("fw", "base"), {dpid: base for dpid in switches})
        for key, prio in self.rules:
            self._install_rule(key, prio, now, switches)

    def _install_rule(self, key, prio: int, now: float, switches: list[int]) -> None:
        rule: Rule = key[0]
        active = rule.schedule is None or rule.schedule.active(now)
        self.active[key] = active
        flows = self.compiler.rule_flows(rule, prio, self.settings.stateful) if active else []
        meters = self.compiler.rule_meter(rule, prio) if active else []
        self.desired.put(("fw", "rule", key), {dpid: flows for dpid in switches})
        self.desired.put_meters(("fw", "rule", key), {dpid: meters for dpid in switches})

    def on_topology_change(self, now: float) -> None:
        if self._switches != self.topology.switches():
            self._install_all(now)

    def tick(self, now: float) -> None:
        switches = self.topology.switches()
        for key, prio in self.rules:
            schedule = key[0].schedule
            if schedule is not None and schedule.active(now) != self.active.get(key):
                LOG.info(
                    "firewall: rule %s (%s) %s by its schedule",
                    key[0].origin,
                    key[0].describe(),
                    "starts" if schedule.active(now) else "ends",
                )
                self._install_rule(key, prio, now, switches)
        if now >= self._next_poll:
            self._next_poll = now + self.settings.stats_interval
            for dpid in switches:
                if self.core.ready(dpid):
                    self.core.request_flow_stats(self, dpid, self.table, COOKIE, APP_MASK)

    # --- counters ------------------------------------------------------------------------------

    def on_flow_stats(self, dpid: int, stats: list, more: bool, now: float) -> None:
        per_prio: dict[int, tuple[int, int]] = {}
        for s in stats:
            rule_id = s.flow.cookie & 0xFFFF
            p, b = per_prio.get(rule_id, (0, 0))
            per_prio[rule_id] = (p + s.packets, b + s.bytes)
        for rule_id, counts in per_prio.items():
            self.counts[(dpid, rule_id)] = counts
        if not more:
            self._publish()

    def totals(self) -> dict[int, tuple[int, int]]:
        """Packets and bytes per rule id (its priority), summed over every switch."""
        out: dict[int, tuple[int, int]] = {}
        for (_, rule_id), (p, b) in self.counts.items():
            q, c = out.get(rule_id, (0, 0))
            out[rule_id] = (q + p, c + b)
        return out

    def _publish(self) -> None:
        totals = self.totals()
        labelled = [
            (str(i), key[0].action, key[0].describe(), prio)
            for i, (key, prio) in enumerate(self.rules, start=1)
        ]
        labelled.append(("blocked", "deny", "blocked_ips", BLOCKED_ID))
        for label, action, description, rule_id in labelled:
            packets, nbytes = totals.get(rule_id, (0, 0))
            self.packets.labels(label, action, description).set(packets)
            self.bytes.labels(label, action, description).set(nbytes)
            if action == "deny" and packets > self._logged.get(rule_id, 0):
                LOG.info(
                    "firewall: rule %s (%s) denied %d packets (%d in all)",
                    label,
                    description,
                    packets - self._logged.get(rule_id, 0),
                    packets,
                )
            self._logged[rule_id] = packets


class FirewallApp(SuiteOSKenApp):
    """os-ken entry point: hosts Firewall in the shared controller core."""

    suite_app = Firewall
