"""The controller core: plain Python that turns events into OpenFlow messages.

The os-ken shim calls one method per event with `now`, and sends what it returns: a dict of
dpid -> list of messages. Inside, apps state desired flows; the core diffs them against what each
switch holds and sends only the difference, fenced by barriers.

A switch's life: connected -> syncing (we read its ports, flows, groups, meters) -> settling (links
being discovered; its old flows keep forwarding untouched) -> ready (reconciled, then kept in sync).
Settling is what lets a restarted controller repair a running network instead of wiping it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller.app import PacketIn, SuiteApp
from controller.config import Config, ConfigError
from controller.desired import DesiredState
from controller.discovery import LLDP_ETHERTYPE, LLDP_MAC, Discovery, lldp_frame
from controller.flows import (
    Flow,
    Group,
    Meter,
    apply,
    flow,
    goto,
    output,
    packet_out,
    to_controller,
    write_metadata,
)
from controller.metrics import Metrics
from controller.pipeline import FROM_FABRIC, PIPELINE, Pipeline
from controller.reconcile import (
    apply_plan,
    bundled,
    diff_flows,
    diff_numbered,
    messages,
    number_of,
)
from controller.switch import (
    SYNC_PARTS,
    FlowStat,
    PortInfo,
    SwitchConn,
    flow_stats_request,
    parse_eth,
    table_requests,
)
from controller.topology import Topology

LOG = logging.getLogger("osken_suite.core")

Outbox = dict[int, list]
CORE_COOKIE = 0x01 << 56
# Classify, in order: LLDP to the controller; a port to another switch: mark it FROM_FABRIC and
# carry on, tagged or not (the chains' VLAN transport); a VLAN-tagged frame from any other port:
# drop, before any app's entry (docs/security.md, "Hosts and VLAN tags").
LLDP_PRIORITY = 65000
FABRIC_PRIORITY = 64000
EDGE_TAG_PRIORITY = 63000
RESYNC_DELAY = 1.0
PACKET_IN_RATE, PACKET_IN_BURST = 1000, 200  # per switch, packets/s: a flood cannot drown us
FIRST_XID = 0x8000_0000  # our requests' xids; os-ken numbers its own from 1


class Core:
    def __init__(
        self,
        pipeline: Pipeline = PIPELINE,
        metrics: Metrics | None = None,
        probation: float = 1.0,
        lldp_interval: float = 5.0,
    ) -> None:
        self.pipeline = pipeline
        self.metrics = metrics or Metrics()
        self.topology = Topology()
        self.discovery = Discovery(self.topology, probation=probation, interval=lldp_interval)
        self.desired = DesiredState()
        self.apps: list[SuiteApp] = []
        self.conns: dict[int, SwitchConn] = {}
        self.config = Config()
        self._out: Outbox = defaultdict(list)
        self._topology_version = self.topology.version
        self._last_connect = float("-inf")
        self._xid = FIRST_XID
        self._atomic = False  # set while a config is applied: changes go in bundles
        self.packet_in_limit = (PACKET_IN_RATE, PACKET_IN_BURST)
        self._stats_waiters: dict[int, SuiteApp] = {}

    @property
    def settle_time(self) -> float:
        return self.discovery.probation + 0.2

    # --- apps and config -------------------------------------------------------------------------

    def add_app(self, app_cls: type[SuiteApp]) -> SuiteApp:
        for app in self.apps:
            if type(app) is app_cls:
                return app
        app = app_cls(self)
        self.apps.append(app)
        LOG.debug("app %s loaded", app.name)
        return app

    def check_config(self, config: Config, warn: bool = True) -> None:
        """Every app checks its section before anything changes (raises ConfigError)."""
        self._check_discovery(config)
        for app in self.apps:
            if app.config_section:
                app.check_config(config.section(app.config_section), config)
        used = (
            {a.config_section for a in self.apps}
            | {s for a in self.apps for s in a.also_reads}
            | {
                "discovery",
                "controller",
                "namespaces",
                "endpoints",
            }
        )
        for section in config.data:
            if warn and section not in used:
                LOG.warning("%s: section %r is not used by any loaded app", config.path, section)

    @staticmethod
    def _check_discovery(config: Config) -> None:
        section = config.section("discovery") or {}
        if section.get("lldp_interval", 5.0) <= section.get("probation", 1.0):
            raise config.error(("discovery", "lldp_interval"), "must be longer than probation")

    def configure(self, config: Config, now: float) -> Outbox:
        """Check the whole config, then apply it; on error the running config stays in force.

        The resulting changes go to each switch atomically: in a bundle where it takes them.
        """
        self.check_config(config)
        self.config = config
        section = config.section("discovery") or {}
        self.discovery.probation = float(section.get("probation", self.discovery.probation))
        self.discovery.interval = float(section.get("lldp_interval", self.discovery.interval))
        limits = config.section("controller") or {}
        self.packet_in_limit = (
            limits.get("packet_in_rate", PACKET_IN_RATE),
            limits.get("packet_in_burst", PACKET_IN_BURST),
        )
        self._limit_packet_ins(self.topology.switches())
        for app in self.apps:
            if app.config_section:
                app.configure(config.section(app.config_section), now)
        self._atomic = True
        try:
            return self._finish(now)
        finally:
            self._atomic = False

    def reload(self, config_loader, now: float) -> Outbox:
        """SIGHUP or a changed file: load, check everything, apply atomically or not at all."""
        try:
            config = config_loader()
            out = self.configure(config, now)
        except ConfigError as exc:
            self.metrics.config_reloads.labels("rejected").inc()
            LOG.error("config reload rejected, the running config stays in force: %s", exc)
            return {}
        self.metrics.config_reloads.labels("applied").inc()
        LOG.info("config reloaded from %s", config.path)
        return out

    # --- switch lifecycle ----------------------------------------------------------------------

    def switch_connected(self, dpid: int, now: float) -> Outbox:
        """A switch finished the handshake: read its ports and tables before touching them."""
        conn = SwitchConn(dpid, packet_ins=self.metrics.packet_ins.labels(f"{dpid:016x}"))
        self.conns[dpid] = conn
        self._last_connect = now
        LOG.info("switch %016x connected; reading its tables", dpid)
        self._read(conn, SYNC_PARTS)
        return self._drain()

    def _new_xid(self) -> int:
        self._xid = self._xid + 1 if self._xid < 0xFFFF_FF00 else FIRST_XID
        return self._xid

    def _read(self, conn: SwitchConn, parts: tuple[str, ...]) -> None:
        xids = {part: self._new_xid() for part in parts}
        conn.sync_xids.update({x: part for part, x in xids.items()})
        conn.pending.update(parts)
        self._out[conn.dpid].extend(table_requests(xids, parts))

    def request_flow_stats(
        self, app: SuiteApp, dpid: int, table: int, cookie: int = 0, cookie_mask: int = 0
    ) -> None:
        """For apps: ask for flow counters; the reply comes to `app.on_flow_stats`."""
        if dpid not in self.conns:
            return
        msg = flow_stats_request(table, cookie, cookie_mask)
        msg.set_xid(self._new_xid())
        self._stats_waiters[msg.xid] = app
        self._out[dpid].append(msg)

    def switch_disconnected(self, dpid: int, now: float) -> Outbox:
        """Forget the connection, not the switch: with fail-mode secure its flows keep working."""
        if self.conns.pop(dpid, None) is not None:
            LOG.warning(
                "switch %016x disconnected; its links stay until a port says otherwise", dpid
            )
        self.discovery.forget_switch(dpid)
        self.metrics.switches.set(sum(c.phase == "ready" for c in self.conns.values()))
        return self._finish(now)

    def ports_reply(
        self, dpid: int, xid: int, ports: Iterable[PortInfo], more: bool, now: float
    ) -> Outbox:
        conn = self.conns.get(dpid)
        if conn is None or conn.sync_xids.get(xid) != "ports":
            return {}
        conn.ports.update({p.port_no: p for p in ports if p.port_no <= ofp.OFPP_MAX})
        return self._part_done(conn, xid, more, now)

    def flows_reply(
        self, dpid: int, xid: int, stats: Iterable[FlowStat], more: bool, now: float
    ) -> Outbox:
        conn = self.conns.get(dpid)
        if conn is None:
            return {}
        if conn.sync_xids.get(xid) == "flows":
            conn.flows.update((s.flow.key, s.flow) for s in stats)
            return self._part_done(conn, xid, more, now)
        app = self._stats_waiters.get(xid)
        if app is None:
            return {}
        if not more:
            del self._stats_waiters[xid]
        app.on_flow_stats(dpid, list(stats), more, now)
        return self._finish(now)

    def groups_reply(
        self, dpid: int, xid: int, groups: Iterable[Group], more: bool, now: float
    ) -> Outbox:
        return self._numbered_reply(dpid, xid, "groups", groups, more, now)

    def meters_reply(
        self, dpid: int, xid: int, meters: Iterable[Meter], more: bool, now: float
    ) -> Outbox:
        return self._numbered_reply(dpid, xid, "meters", meters, more, now)

    def _numbered_reply(self, dpid, xid, part, objects, more, now) -> Outbox:
        conn = self.conns.get(dpid)
        if conn is None or conn.sync_xids.get(xid) != part:
            return {}
        conn.numbered[part[:-1]].update((number_of(obj), obj) for obj in objects)
        return self._part_done(conn, xid, more, now)

    def _part_done(self, conn: SwitchConn, xid: int, more: bool, now: float) -> Outbox:
        if not more:
            conn.pending.discard(conn.sync_xids.pop(xid))
            if not conn.pending:
                if conn.phase == "syncing":
                    self._synced(conn, now)
                else:
                    self._reconcile(conn, "resync")
        return self._finish(now)

    def _synced(self, conn: SwitchConn, now: float) -> None:
        dpid = conn.dpid
        conn.phase, conn.synced_at = "settling", now
        self.topology.add_switch(dpid, {p.port_no: p.live for p in conn.ports.values()})
        for port in conn.ports.values():
            if port.live:
                self.discovery.port_up(dpid, port.port_no, now)
        self.desired.put(("core", "pipeline", dpid), {dpid: self._core_flows(dpid)})
        self._limit_packet_ins([dpid])
        LOG.info(
            "switch %016x: %d ports, %d flows, %d groups, %d meters on the switch; settling",
            dpid,
            len(conn.ports),
            len(conn.flows),
            len(conn.groups),
            len(conn.meters),
        )
        for app in self.apps:
            app.on_switch_synced(dpid, list(conn.flows.values()), now)
        # Without the LLDP trap and table-miss entries discovery cannot work: add what is missing,
        # touch nothing else until the switch is ready.
        keys = [f.key for f in self._core_flows(dpid)]
        plan = diff_flows(conn.flows, self.desired.flows[dpid], keys)
        self._send_plan(conn, plan)
        self._probe(conn, conn.ports.values())

    def _limit_packet_ins(self, dpids: Iterable[int]) -> None:
        """OpenFlow's controller meter caps packet-ins per switch; data traffic is untouched."""
        rate, burst = self.packet_in_limit
        meter = [Meter(ofp.OFPM_CONTROLLER, "pktps", rate, burst)] if rate else []
        for dpid in dpids:
            self.desired.put_meters(("core", "packet-in", dpid), {dpid: meter})

    def _core_flows(self, dpid: int) -> list[Flow]:
        classify = self.pipeline.table("classify")
        trap = flow(
            classify,
            LLDP_PRIORITY,
            {"eth_type": LLDP_ETHERTYPE, "eth_dst": LLDP_MAC},
            apply(to_controller()),
            cookie=CORE_COOKIE,
        )
        tagged = flow(
            classify,
            EDGE_TAG_PRIORITY,
            {"vlan_vid": (ofp.OFPVID_PRESENT, ofp.OFPVID_PRESENT)},
            cookie=CORE_COOKIE,
        )
        misses = [
            Flow(f.table, f.priority, f.match, f.instructions, CORE_COOKIE)
            for f in self.pipeline.miss_flows()
        ]
        return [trap, tagged] + misses

    def _probe(self, conn: SwitchConn, ports: Iterable[PortInfo]) -> None:
        """Send an LLDP frame out of each live port, so neighbours report the link to us."""
        for port in ports:
            if port.live:
                frame = lldp_frame(conn.dpid, port.port_no, port.hw_addr)
                self._out[conn.dpid].append(packet_out(frame, [output(port.port_no)]))

    def _reconcile(self, conn: SwitchConn, why: str) -> None:
        """Full diff of everything we want against everything the switch holds."""
        dpid = conn.dpid
        self.desired.take_dirty(dpid)
        plan = diff_flows(conn.flows, self.desired.flows[dpid])
        for kind, installed in conn.numbered.items():
            diff_numbered(kind, installed, self.desired.numbered[kind][dpid], plan=plan)
        self._send_plan(conn, plan)
        self.metrics.reconciles.labels(f"{dpid:016x}").inc()
        LOG.info("switch %016x reconciled (%s): %s", dpid, why, plan.summary())

    def _send_plan(self, conn: SwitchConn, plan) -> None:
        if not plan:
            return
        if self._atomic and conn.bundles:
            msgs = bundled(plan, self._new_xid())
            if len(conn.bundle_xids) > 100_000:
                conn.bundle_xids.clear()  # errors come back within moments, not bundles later
            for msg in msgs:  # numbered by us, so an error about the bundle can be told apart
                if isinstance(msg, (parser.ONFBundleCtrlMsg, parser.ONFBundleAddMsg)):
                    msg.set_xid(self._new_xid())
                    conn.bundle_xids.add(msg.xid)
        else:
            msgs = messages(plan)
        self._out[conn.dpid].extend(msgs)
        apply_plan(conn.flows, conn.numbered, plan)

    # --- events from switches ------------------------------------------------------------------

    def port_status(self, dpid: int, reason: int, port: PortInfo, now: float) -> Outbox:
        conn = self.conns.get(dpid)
        if conn is None or port.port_no > ofp.OFPP_MAX:
            return {}
        was = conn.ports.get(port.port_no)
        if reason == ofp.OFPPR_DELETE:
            conn.ports.pop(port.port_no, None)
            self.topology.remove_port(dpid, port.port_no)
            self.discovery.port_down(dpid, port.port_no)
            LOG.info("switch %016x port %d deleted", dpid, port.port_no)
            return self._finish(now)
        conn.ports[port.port_no] = port
        if port.live and not (was and was.live):
            LOG.info("switch %016x port %d (%s) up", dpid, port.port_no, port.name)
            self.topology.set_port(dpid, port.port_no, True)
            self.discovery.port_up(dpid, port.port_no, now)
            self._probe(conn, [port])
        elif not port.live and (was is None or was.live):
            LOG.info("switch %016x port %d (%s) down", dpid, port.port_no, port.name)
            self.topology.set_port(dpid, port.port_no, False)
            self.discovery.port_down(dpid, port.port_no)
        return self._finish(now)

    def packet_in(
        self, dpid: int, in_port: int, data: bytes, table_id: int, cookie: int, now: float
    ) -> Outbox:
        conn = self.conns.get(dpid)
        if conn is None:
            return {}
        conn.packet_ins.inc()
        eth_dst, eth_src, eth_type = parse_eth(data)
        if eth_type == LLDP_ETHERTYPE:
            if self.discovery.heard(dpid, in_port, data, now):
                LOG.info("link found: switch %016x port %d", dpid, in_port)
            return self._finish(now)
        pkt = PacketIn(dpid, in_port, table_id, cookie, data, eth_dst, eth_src, eth_type)
        for app in self.apps:
            app.on_packet_in(pkt, now)
        return self._finish(now)

    def flow_removed(self, dpid: int, removed: Flow, reason: int, now: float) -> Outbox:
        conn = self.conns.get(dpid)
        if conn is None:
            return {}
        if conn.flows.get(removed.key) is not None:
            del conn.flows[removed.key]
        for app in self.apps:
            app.on_flow_removed(dpid, removed, reason, now)
        return self._finish(now)

    def error(self, dpid: int, err_type: int, code: int, now: float, xid: int = 0) -> Outbox:
        """A switch refused something: count it, log it, and re-read its tables to repair."""
        self.metrics.errors.labels(f"{dpid:016x}", str(err_type), str(code)).inc()
        conn = self.conns.get(dpid)
        if conn is not None and conn.bundles and xid in conn.bundle_xids:
            conn.bundles = False
            LOG.warning(
                "switch %016x refused a bundle (error type=%d code=%d): changes to it "
                "go as ordered updates from now on",
                dpid,
                err_type,
                code,
            )
        LOG.error(
            "switch %016x sent error type=%d code=%d; will re-read its tables", dpid, err_type, code
        )
        if conn is not None and conn.resync_at is None:
            conn.resync_at = now + RESYNC_DELAY
        return {}

    def tick(self, now: float) -> Outbox:
        """Periodic work: probes, probation, link ageing, settling, resyncs, app timers."""
        if self.discovery.due(now):
            for conn in self.conns.values():
                if conn.phase != "syncing":
                    self._probe(conn, conn.ports.values())
        self.discovery.expire(now, set(self.conns))
        settling = [c for c in self.conns.values() if c.phase == "settling"]
        if (
            settling
            and now - self._last_connect >= self.settle_time
            and all(now - c.synced_at >= self.settle_time for c in settling)
        ):
            for conn in settling:
                conn.phase = "ready"
            self._notify_topology(now)
            for conn in settling:
                for app in self.apps:
                    app.on_switch_ready(conn.dpid, now)
            for conn in settling:
                self._reconcile(conn, "connect")
        for conn in self.conns.values():
            if conn.resync_at is not None and now >= conn.resync_at and conn.phase == "ready":
                conn.resync_at = None
                conn.flows = {}
                conn.numbered = {kind: {} for kind in conn.numbered}
                self._read(conn, ("flows", "groups", "meters"))
        for app in self.apps:
            app.tick(now)
        self._update_gauges()
        return self._finish(now)

    # --- output --------------------------------------------------------------------------------

    def send(self, dpid: int, msgs: list) -> None:
        """For apps: queue messages that are not flows (packet-outs)."""
        self._out[dpid].extend(msgs)

    def _notify_topology(self, now: float) -> None:
        if self.topology.version != self._topology_version:
            self._topology_version = self.topology.version
            self._mark_fabric_ports()
            for app in self.apps:
                app.on_topology_change(now)

    def _mark_fabric_ports(self) -> None:
        """Packets from another switch carry FROM_FABRIC, so ingress-only stages can skip them;
        these entries outrank the edge tag drop, so the chains' tagged frames cross switches."""
        classify = self.pipeline.table("classify")
        mark = (write_metadata(FROM_FABRIC, FROM_FABRIC), goto(classify + 1))
        self.desired.put(
            ("core", "fabric"),
            {
                dpid: [
                    flow(classify, FABRIC_PRIORITY, {"in_port": port}, *mark, cookie=CORE_COOKIE)
                    for port in sorted(self.topology.isl_ports(dpid))
                ]
                for dpid in self.topology.switches()
            },
        )

    def _finish(self, now: float) -> Outbox:
        self._notify_topology(now)
        self._flush()
        return self._drain()

    def _flush(self) -> None:
        """Send the difference for every key that changed on a ready switch."""
        for dpid in self.desired.dirty_switches():
            conn = self.conns.get(dpid)
            if conn is None or conn.phase != "ready" or conn.pending:
                continue
            flow_keys, numbered = self.desired.take_dirty(dpid)
            plan = diff_flows(conn.flows, self.desired.flows[dpid], flow_keys)
            for kind, numbers in numbered.items():
                diff_numbered(
                    kind, conn.numbered[kind], self.desired.numbered[kind][dpid], numbers, plan
                )
            self._send_plan(conn, plan)

    def _drain(self) -> Outbox:
        out, self._out = self._out, defaultdict(list)
        for dpid, msgs in out.items():
            self.metrics.count_sent(dpid, msgs)
        return dict(out)

    def _update_gauges(self) -> None:
        m = self.metrics
        m.switches.set(sum(c.phase == "ready" for c in self.conns.values()))
        m.links.set(len(self.topology.links))
        m.hosts.set(len(self.topology.hosts()))
        for dpid, conn in self.conns.items():
            m.ports.labels(f"{dpid:016x}").set(sum(p.live for p in conn.ports.values()))
            counts: dict[int, int] = defaultdict(int)
            for f in conn.flows.values():
                counts[f.table] += 1
            m.set_flow_counts(dpid, counts, self.pipeline.n_tables)

    def shutdown(self) -> None:
        for app in self.apps:
            try:
                app.shutdown()
            except Exception:  # stopping must not fail half-way because of one app
                LOG.exception("app %s failed to shut down cleanly", app.name)

    # --- introspection, for tests and the report -----------------------------------------------

    def ready(self, dpid: int) -> bool:
        conn = self.conns.get(dpid)
        return conn is not None and conn.phase == "ready"
