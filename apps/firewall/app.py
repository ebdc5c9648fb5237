"""The IP firewall stage: ordered rules, blocked sources, rate limits, schedules, stateful mode.

Run it with ``osken-manager apps/firewall --config lab.yaml``: it brings the L2 learning app
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
from dataclasses import replace
from types import MappingProxyType

from apps.firewall.compile import BLOCKED_ID, COOKIE, MAX_RULES, FirewallCompiler
from apps.firewall.explain import explain_flow
from apps.firewall.fastpath import FastPath
from apps.firewall.rules import (
    FIREWALL_SCHEMA,
    FirewallRule,
    FirewallSettings,
    RuleCache,
    parse_firewall,
)
from controller.app import SuiteApp
from controller.resources import COOKIE_SHIFT

LOG = logging.getLogger("osken_suite.firewall")
APP_MASK = 0xFF << COOKIE_SHIFT


class Firewall(SuiteApp):
    name = "firewall"
    config_section = "firewall"
    config_schemas = MappingProxyType({"firewall": FIREWALL_SCHEMA})
    requires = ("apps.l2_learning",)  # forwarding comes from the L2 app
    cookie = COOKIE

    def __init__(self, core) -> None:
        super().__init__(core)
        self.table = core.pipeline.table("firewall")
        self.compiler = FirewallCompiler(core.pipeline)
        self.settings = FirewallSettings()
        self.rule_cache = RuleCache()  # rules parsed at earlier loads, for this app's reloads
        self.rules: list[tuple[Hashable, int, FirewallRule]] = []  # (key, priority, rule), in order
        self.active: dict[Hashable, bool] = {}
        self.counts: dict[tuple[int, int], tuple[int, int]] = {}  # (dpid, prio) -> packets, bytes
        self._logged: dict[int, int] = {}  # prio -> denied packets already reported
        self._next_poll = 0.0
        self.fastpath = FastPath()
        self._edges: dict[str, str] = {}  # the edge interfaces (name -> MAC) it was last given
        self._rates_from: dict[int, int] = {}
        self._rates_at = 0.0
        self._switches: list[int] = []
        self._placed: dict[Hashable, tuple] = {}  # rule key -> (priority, active, stateful, ...)
        per_rule = ("rule", "action", "description")
        gauge = core.metrics.gauge
        self.packets = gauge(
            "osken_firewall_rule_packets", "Packets matched per firewall rule", per_rule
        )
        self.xdp_packets = gauge(
            "osken_firewall_rule_xdp_packets",
            "Of those packets, the ones the XDP fast path dropped before the switch",
            per_rule,
        )
        self.bytes = gauge("osken_firewall_rule_bytes", "Bytes matched per firewall rule", per_rule)

    # --- config --------------------------------------------------------------------------------

    def parse_config(self, section, config) -> FirewallSettings:
        settings = parse_firewall(section, config, self.rule_cache)
        if len(settings.rules) > MAX_RULES:
            raise config.error(
                ("firewall",),
                f"{len(settings.rules)} rules (rules_file and rules together); at most "
                f"{MAX_RULES} fit in the firewall table's priority range",
            )
        return settings

    def configure(self, settings: FirewallSettings, now: float) -> None:
        if not self._edit_in_place(settings, now):
            self._replace(settings, now)
        xdp = settings.xdp
        if settings.log and xdp.offload == "all":
            # Logged denies stay in OpenFlow, where the flow log sees them; a rule still goes
            # to XDP once a flood makes it hot (docs/observability.md).
            xdp = replace(xdp, offload="adaptive")
        self.fastpath.configure(xdp)
        self._update_fastpath()
        LOG.info(
            "firewall: %d rules, default %s, %d blocked sources%s",
            len(self.rules),
            settings.default,
            len(settings.blocked),
            ", stateful" if settings.stateful else "",
        )

    def _replace(self, settings: FirewallSettings, now: float) -> None:
        old_owners = {k for k, _, _ in self.rules}
        self.settings = settings
        self.rules = self.compiler.renumber(settings.rules)
        for key in old_owners - {k for k, _, _ in self.rules}:
            self.desired.drop(("fw", "rule", key))
            self.active.pop(key, None)
        self.packets.clear()
        self.bytes.clear()
        self.xdp_packets.clear()
        self._install_all(now)

    def _edit_in_place(self, settings: FirewallSettings, now: float) -> bool:
        """Rules edited where they stand: each new rule takes its predecessor's priority.

        A rule is edited when its text or its place changed (compared by value:
        `FirewallRule.text` is the rule as written); the work is per edited rule, not per rule.
        """
        old = self.settings
        if (len(settings.rules), settings.default, settings.blocked, settings.stateful) != (
            len(old.rules),
            old.default,
            old.blocked,
            old.stateful,
        ) or not self.rules:
            return False
        edited = [
            i
            for i, (a, b) in enumerate(zip(settings.rules, old.rules, strict=True))
            if (a.text, a.origin) != (b.text, b.origin)
        ]
        texts = {k[0] for k, _, _ in self.rules}
        new_texts = [settings.rules[i].text for i in edited]
        if len(edited) > 64 or len(set(new_texts)) < len(new_texts) or texts & set(new_texts):
            return False  # many edits, or a repeated rule: the general path keeps order exact
        logging_changed = settings.log != old.log
        self.settings = settings
        switches = self.topology.switches()
        for i in edited:
            old_key, prio, _ = self.rules[i]
            rule = settings.rules[i]
            key = (rule.text, 1)
            self.desired.drop(("fw", "rule", old_key))
            self.active.pop(old_key, None)
            self._placed.pop(old_key, None)
            del self.compiler.priorities[old_key]
            self.compiler.priorities[key] = prio
            self.rules[i] = (key, prio, rule)
            self._install_rule(key, prio, rule, now, switches)
        if logging_changed:  # only the deny flows change (see _install_rule's `placed`)
            self._install_all(now)
        return True

    # --- desired flows -------------------------------------------------------------------------

    def _install_all(self, now: float) -> None:
        switches = self.topology.switches()
        self._switches = switches
        base = self.compiler.base_flows(self.settings)
        self.desired.put(("fw", "base"), {dpid: base for dpid in switches})
        live = {k for k, _, _ in self.rules}
        self._placed = {k: v for k, v in self._placed.items() if k in live}
        for key, prio, rule in self.rules:
            self._install_rule(key, prio, rule, now, switches)

    def _install_rule(self, key, prio: int, rule: FirewallRule, now: float, switches: list[int]):
        """Put one rule's flows and meter on every switch, unless they are there already."""
        active = rule.schedule is None or rule.schedule.active(now)
        self.active[key] = active
        log = self.settings.log and rule.action == "deny"
        placed = (prio, active, self.settings.stateful, tuple(switches), log)
        if self._placed.get(key) == placed:
            return  # a reload that kept this rule as it was: nothing to compute or send
        self._placed[key] = placed
        stateful = self.settings.stateful
        flows = self.compiler.rule_flows(rule, prio, stateful, log) if active else []
        meters = self.compiler.rule_meter(rule, prio) if active else []
        self.desired.put(("fw", "rule", key), {dpid: flows for dpid in switches})
        self.desired.put_meters(("fw", "rule", key), {dpid: meters for dpid in switches})

    def on_topology_change(self, now: float) -> None:
        if self._switches != self.topology.switches():
            self._install_all(now)
        self._update_fastpath()  # edge ports come and go with the topology

    # --- the XDP fast path ---------------------------------------------------------------------

    def _edge_interfaces(self) -> dict[str, str]:
        """The ports where traffic enters the network (host-facing switch ports) of the switches
        this controller masters (all of them when it runs alone): name -> MAC as reported."""
        names = {}
        for dpid in self.topology.switches():
            if not self.core.is_master(dpid):
                continue
            ports = self.core.ports(dpid)
            names.update(
                (ports[p].name, ports[p].hw_addr)
                for p in self.topology.edge_ports(dpid)
                if p in ports
            )
        return names

    def _update_fastpath(self) -> None:
        rules = [(prio, rule) for _, prio, rule in self.rules]
        self._edges = self._edge_interfaces()
        self.fastpath.update(
            rules,
            self.settings.blocked,
            BLOCKED_ID,
            self.settings.stateful,
            self._edges,
        )

    def _adapt(self, now: float) -> None:
        """Adaptive offload, once per counter poll: rates from OpenFlow's counts since last."""
        totals = {rule: packets for rule, (packets, _) in self.totals().items()}
        seconds = now - self._rates_at if self._rates_at else 0.0
        rates = (
            {rule: (n - self._rates_from.get(rule, n)) / seconds for rule, n in totals.items()}
            if seconds > 0
            else {}
        )
        self._rates_from, self._rates_at = totals, now
        if self.fastpath.adapt(rates, now):
            self._update_fastpath()

    def shutdown(self) -> None:
        self.fastpath.shutdown()

    def explain(self, dpid: int, flow) -> dict | None:
        return explain_flow(self.settings, self.rules, self.fastpath, flow)

    def tick(self, now: float) -> None:
        switches = self.topology.switches()
        for key, prio, rule in self.rules:
            schedule = rule.schedule
            if schedule is not None and schedule.active(now) != self.active.get(key):
                LOG.info(
                    "firewall: rule %s (%s) %s by its schedule",
                    rule.located(),
                    rule.describe(),
                    "starts" if schedule.active(now) else "ends",
                )
                self._install_rule(key, prio, rule, now, switches)
        if self.fastpath.loaded():
            self._update_fastpath()  # the program finished loading: attach and fill it now
        if now >= self._next_poll:
            self._next_poll = now + self.settings.stats_interval
            if self._edge_interfaces() != self._edges:  # a replica gained or lost a switch
                self._update_fastpath()
            self._adapt(now)
            for dpid in switches:
                if self.core.ready(dpid):
                    self.core.request_flow_stats(self, dpid, self.table, COOKIE, APP_MASK)

    # --- counters ------------------------------------------------------------------------------

    def on_flow_stats(self, dpid: int, stats: list, more: bool, now: float) -> None:
        per_prio: dict[int, tuple[int, int]] = {}
        for s in stats:
            rule_id = s.cookie & 0xFFFF
            p, b = per_prio.get(rule_id, (0, 0))
            per_prio[rule_id] = (p + s.packets, b + s.bytes)
        for rule_id, counts in per_prio.items():
            self.counts[(dpid, rule_id)] = counts
        if not more:
            self._publish()

    def totals(self) -> dict[int, tuple[int, int]]:
        """Packets and bytes per rule id (its priority), summed over every switch (OpenFlow)."""
        out: dict[int, tuple[int, int]] = {}
        for (_, rule_id), (p, b) in self.counts.items():
            q, c = out.get(rule_id, (0, 0))
            out[rule_id] = (q + p, c + b)
        return out

    def _publish(self) -> None:
        totals = self.totals()
        xdp = self.fastpath.counters()
        labelled = [
            (str(i), rule.action, rule.describe(), prio)
            for i, (_, prio, rule) in enumerate(self.rules, start=1)
        ]
        labelled.append(("blocked", "deny", "blocked_ips", BLOCKED_ID))
        for label, action, description, rule_id in labelled:
            fast_packets, fast_bytes = xdp.get(rule_id, (0, 0))
            packets, nbytes = totals.get(rule_id, (0, 0))
            packets, nbytes = packets + fast_packets, nbytes + fast_bytes
            self.packets.labels(label, action, description).set(packets)
            self.bytes.labels(label, action, description).set(nbytes)
            self.xdp_packets.labels(label, action, description).set(fast_packets)
            if action == "deny" and packets > self._logged.get(rule_id, 0):
                LOG.info(
                    "firewall: rule %s (%s) denied %d packets (%d in all)",
                    label,
                    description,
                    packets - self._logged.get(rule_id, 0),
                    packets,
                )
            self._logged[rule_id] = packets
