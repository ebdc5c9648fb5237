"""The controller core: plain Python that turns events into OpenFlow messages.

The os-ken shim calls one method per event with `now`, and sends what it returns: a dict of
dpid -> list of messages. Inside, apps state desired flows; the core diffs them against what each
switch holds and sends only the difference, fenced by barriers.

A switch's life: connected -> syncing (we read its ports, flows, groups, meters) -> settling (links
being discovered; its old flows keep forwarding untouched) -> ready (reconciled, then kept in sync).
Settling is what lets a restarted controller repair a running network instead of wiping it.
"""

from __future__ import annotations

import copy
import logging
import math
import re
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller.app import AppDesired, CoreView, PacketIn, SuiteApp
from controller.config import Config, ConfigError, SectionChecker
from controller.desired import DesiredState
from controller.discovery import Discovery
from controller.flowlog import (
    FlowLog,
    FlowLogSettings,
    allowed_flows,
    deciding_flows,
    log_meters,
    parse_flow_log,
)
from controller.flows import (
    Flow,
    Group,
    Meter,
    apply,
    flow,
    output,
    packet_out,
    to_controller,
    write_metadata,
)
from controller.lldp import LLDP_ETHERTYPE, LLDP_MAC
from controller.metrics import Metrics
from controller.neighbours import Neighbours
from controller.packets import header_fields, parse_eth
from controller.pipeline import FROM_FABRIC, PIPELINE, REGISTRY, Pipeline, PipelineViolation
from controller.portload import PortLoad, port_stats_request
from controller.reconcile import (
    Plan,
    apply_plan,
    bundled,
    diff_flows,
    diff_numbered,
    messages,
    number_of,
)
from controller.sections import CORE_SCHEMAS, SUITE_SECTIONS
from controller.switch import (
    SYNC_PARTS,
    FlowStat,
    GroupStat,
    PortInfo,
    SwitchConn,
    flow_stats_request,
    group_stats_request,
    table_requests,
)
from controller.topology import Topology

LOG = logging.getLogger("osken_suite.core")

Outbox = dict[int, list]
CORE_COOKIE = REGISTRY.cookie("core")
# Classify, in order: LLDP to the controller; a port to another switch: mark it FROM_FABRIC and
# carry on, tagged or not (the chains' VLAN transport); a VLAN-tagged frame from any other port:
# drop, before any app's entry (docs/security.md, "Hosts and VLAN tags").
LLDP_PRIORITY = 65000
FABRIC_PRIORITY = 64000
EDGE_TAG_PRIORITY = 63000
RESYNC_DELAY = 1.0
DEFAULT_PROBATION, DEFAULT_LLDP_INTERVAL = 1.0, 5.0  # seconds
PACKET_IN_RATE, PACKET_IN_BURST = 1000, 200  # per switch, packets/s: a flood cannot drown us
FIRST_XID = 0x8000_0000  # our requests' xids; os-ken numbers its own from 1


@dataclass(frozen=True)
class Settings:
    """A whole config, parsed (`Core.parse`): what `Core.apply` puts in force.

    `probation` and `lldp_interval` are in seconds, `packet_in_limit` is (packets/s, burst);
    `apps` maps each app's name to what its `parse_config` returned; `flow_log` is the
    `flow_log` section (controller/flowlog.py).
    """

    config: Config
    probation: float
    lldp_interval: float
    packet_in_limit: tuple[int, int]
    apps: dict[str, Any]
    flow_log: FlowLogSettings = FlowLogSettings()


class ApplyError(Exception):
    """An app (or the core, app="core") raised while a parsed config was being applied."""

    def __init__(self, app: str, exc: Exception) -> None:
        self.app, self.exc = app, exc
        super().__init__(f"app {app} failed to apply it ({type(exc).__name__}: {exc})")


def _groups_named(f: Flow) -> set[int]:
    """The group ids a flow's apply and write actions send packets to."""
    return {
        a[1]
        for ins in f.instructions
        if ins[0] in ("apply", "write")
        for a in ins[1]
        if a[0] == "group"
    }


class Core:
    """The controller core: events in, OpenFlow messages out, no I/O of its own.

    Every event method takes `now` (seconds since the epoch, time.time()) and returns an Outbox
    (dpid to the messages to send to that switch, in order).

    Parameters
    ----------
    pipeline : Pipeline
        The table layout apps' stages are placed in.
    metrics : Metrics, optional
        Where counters and gauges go; a fresh registry by default.
    probation : float
        Seconds a new port waits for LLDP before it counts as an edge port.
    lldp_interval : float
        Seconds between LLDP probe rounds.
    lldp_key : bytes, optional
        Key that signs discovery's probes; random per run unless replicas share one.
    """

    def __init__(
        self,
        pipeline: Pipeline = PIPELINE,
        metrics: Metrics | None = None,
        probation: float = DEFAULT_PROBATION,
        lldp_interval: float = DEFAULT_LLDP_INTERVAL,
        lldp_key: bytes | None = None,
        strict_pipeline: bool = False,
    ) -> None:
        """`lldp_key` signs discovery's probes: random per run unless replicas share one.
        `strict_pipeline` (tests): a flow that breaks its table's contract raises
        PipelineViolation instead of being logged, counted and left unsent."""
        self.pipeline = pipeline
        self.strict_pipeline = strict_pipeline
        self.metrics = metrics or Metrics()
        self.topology = Topology()
        self.discovery = Discovery(
            self.topology,
            probation=probation,
            interval=lldp_interval,
            key=lldp_key,
            metrics=self.metrics,
        )
        self.desired = DesiredState()
        self.neighbours = Neighbours()  # IP -> MAC heard in packet-ins, for traces
        self.flow_log = FlowLog(self.metrics)  # denied connections (controller/flowlog.py)
        self.port_load = PortLoad()  # each port's bits per second (controller/portload.py)
        self._port_xids: set[int] = set()
        self.apps: list[SuiteApp] = []
        self.conns: dict[int, SwitchConn] = {}
        self.config = Config()
        self.candidate: Config | None = None  # the config a reload last read, applied or not
        self.settings = Settings(
            self.config, probation, lldp_interval, (PACKET_IN_RATE, PACKET_IN_BURST), {}
        )
        self._failures: dict[tuple[str, str, str, str], int] = {}
        self._violations: dict[tuple[str, str, str], int] = {}  # (app, stage, breach kind)
        self._out: Outbox = defaultdict(list)
        self._topology_version = self.topology.version
        self._last_connect = float("-inf")
        self._xid = FIRST_XID
        self._atomic = False  # set while a config is applied: changes go in bundles
        self._applying: Settings | None = None  # the settings apps are configured with now
        self.packet_in_limit = (PACKET_IN_RATE, PACKET_IN_BURST)
        self._stats_waiters: dict[int, SuiteApp] = {}
        self._sections = SectionChecker()  # remembers the list items it found valid
        # Whether this controller writes to a switch: always alone; a replica (controller/roles.py)
        # only to the switches that confirmed it as master.
        self.is_master: Callable[[int], bool] = lambda dpid: True
        self.view = CoreView(
            self.pipeline,
            self.topology,
            self.desired,
            self.metrics,
            self.conns,
            self.send,
            self.request_flow_stats,
            lambda dpid: self.is_master(dpid),
            lambda name: any(a.name == name for a in self.apps),
            self.request_group_stats,
            lambda name: (self._applying or self.settings).apps.get(name),
        )

    @property
    def settle_time(self) -> float:
        """Seconds without a new switch or sync before settling switches become ready."""
        return self.discovery.probation + 0.2

    # --- apps and config -------------------------------------------------------------------------

    def add_app(self, app_cls: type[SuiteApp]) -> SuiteApp:
        """Load an app (once: loading its class again returns the loaded one).

        Raises:
            ValueError: it declares a schema for a section that the core or a loaded app
                declares differently (two owners for one section).
        """
        for app in self.apps:
            if type(app) is app_cls:
                return app
        owners = self.schemas()
        for section, schema in app_cls.config_schemas.items():
            if section in owners and owners[section] is not schema:
                raise ValueError(
                    f"app {app_cls.name} declares config section {section!r}, "
                    "which has another owner"
                )
        view = copy.copy(self.view)
        view.desired = AppDesired(self.desired, app_cls.name, self.pipeline, self._refuse)
        app = app_cls(view)
        self.apps.append(app)
        # What it runs with until a config is applied: its settings for an empty config.
        apps = {**self.settings.apps, app.name: app.parse_config(None, Config())}
        self.settings = replace(self.settings, apps=apps)
        LOG.debug("app %s loaded", app.name)
        return app

    def parse(self, config: Config, warn: bool = True) -> Settings:
        """The whole config as a value, every app's section parsed; nothing changes yet.

        Raises:
            ConfigError: the first problem found, naming file, line and field. An app that
                fails with any other exception while parsing is a bug: its traceback is
                logged, `osken_app_errors_total{app,hook="parse_config"}` counts it, and it
                is raised as a ConfigError naming the file and the app's section.
        """
        self._check_sections(config, warn)
        self._check_discovery(config)
        discovery = config.section("discovery") or {}
        limits = config.section("controller") or {}
        parsed: dict[str, Any] = {}
        for app in self.apps:
            section = config.section(app.config_section) if app.config_section else None
            try:
                parsed[app.name] = app.parse_config(section, config)
            except ConfigError:
                raise
            except Exception as exc:
                self.report_failure(app, "parse_config", exc)
                raise config.error(
                    (app.config_section or app.name,),
                    f"{app.name} could not read this ({type(exc).__name__}: {exc}); this is a "
                    "bug in the controller, the log has its traceback",
                ) from None
        return Settings(
            config=config,
            probation=float(discovery.get("probation", DEFAULT_PROBATION)),
            lldp_interval=float(discovery.get("lldp_interval", DEFAULT_LLDP_INTERVAL)),
            packet_in_limit=(
                limits.get("packet_in_rate", PACKET_IN_RATE),
                limits.get("packet_in_burst", PACKET_IN_BURST),
            ),
            apps=parsed,
            flow_log=parse_flow_log(config),
        )

    def schemas(self) -> dict[str, Mapping]:
        """Section -> JSON Schema, for the core's sections and every loaded app's."""
        out = dict(CORE_SCHEMAS)
        for app in self.apps:
            out.update(app.config_schemas)
        return out

    def _check_sections(self, config: Config, warn: bool) -> None:
        """Every section is the core's or a loaded app's (checked against its schema), or a
        suite app's that is not loaded (a warning naming it); anything else is unknown.

        Raises:
            ConfigError: an unknown section, or one its schema refuses; located.
        """
        schemas = self.schemas()
        read = set(schemas) | {a.config_section for a in self.apps if a.config_section}
        for section in config.data:
            if section in read:
                continue
            if section not in SUITE_SECTIONS:
                raise config.error((section,), "unknown key")
            if warn:
                LOG.warning(
                    "%s: section %r is read by %s, which is not loaded: not checked, no effect",
                    config.path,
                    section,
                    SUITE_SECTIONS[section],
                )
        self._sections.check(config, schemas)

    @staticmethod
    def _check_discovery(config: Config) -> None:
        section = config.section("discovery") or {}
        if section.get("lldp_interval", DEFAULT_LLDP_INTERVAL) <= section.get(
            "probation", DEFAULT_PROBATION
        ):
            raise config.error(("discovery", "lldp_interval"), "must be longer than probation")

    def configure(self, config: Config, now: float) -> Outbox:
        """Parse the whole config, then apply it (see `apply`).

        Raises:
            ConfigError: the config is not usable; nothing changed.
            ApplyError: applying failed and was rolled back; nothing changed.
        """
        return self.apply(self.parse(config), now)

    def apply(self, settings: Settings, now: float) -> Outbox:
        """Put a parsed config in force: all of it, or (if an app fails) none of it.

        Every app's `configure` runs inside one desired-state transaction. If one raises, the
        desired state is rolled back, every app is given its previous settings again, and
        nothing is sent. Otherwise the difference goes to each switch atomically: in a bundle
        where it takes them. Returns the messages to send, per dpid.

        Raises:
            ApplyError: an app failed while applying (a bug: its traceback is logged and it is
                counted in `osken_app_errors_total`); the running config stays in force.
        """
        previous = self.settings
        queued = {dpid: len(msgs) for dpid, msgs in self._out.items()}
        try:
            self._applying = settings
            with self.desired.transaction():
                self._apply_core(settings)
                for app in self.apps:
                    self._configure_app(app, settings.apps[app.name], now)
        except ApplyError:
            for dpid in list(self._out):  # packet-outs the failed apply queued
                del self._out[dpid][queued.get(dpid, 0) :]
            self._applying = previous
            self._apply_core(previous)
            for app in self.apps:
                try:
                    self._configure_app(app, previous.apps[app.name], now)
                except ApplyError:
                    LOG.error("app %s could not take its previous settings back", app.name)
            raise
        finally:
            self._applying = None
        self.settings = settings
        self.config = settings.config
        self._atomic = True
        try:
            return self._finish(now)
        finally:
            self._atomic = False

    def _apply_core(self, settings: Settings) -> None:
        try:
            self.discovery.probation = settings.probation
            self.discovery.interval = settings.lldp_interval
            self.packet_in_limit = settings.packet_in_limit
            self.flow_log.configure(settings.flow_log)
            self._limit_packet_ins(self.topology.switches())
        except Exception as exc:
            self.report_failure("core", "configure", exc)
            raise ApplyError("core", exc) from exc

    def _configure_app(self, app: SuiteApp, settings: Any, now: float) -> None:
        try:
            app.configure(settings, now)
        except Exception as exc:
            self.report_failure(app, "configure", exc)
            raise ApplyError(app.name, exc) from exc

    def reload(self, config_loader: Callable[[], Config], now: float) -> Outbox:
        """SIGHUP or a changed file: load, parse everything, apply atomically or not at all.

        Never raises: a rejected config is logged (file, line, field) and counted in
        `osken_config_reloads_total{result="rejected"}`; the running config stays in force.
        """
        try:
            config = self.candidate = config_loader()
            out = self.apply(self.parse(config), now)
        except (ConfigError, ApplyError) as exc:
            self.metrics.config_reloads.labels("rejected").inc()
            LOG.error("config reload rejected, the running config stays in force: %s", exc)
            return {}
        except Exception as exc:  # a bug in reading the config: still nothing changes
            self.report_failure("core", "reload", exc)
            self.metrics.config_reloads.labels("rejected").inc()
            LOG.error("config reload rejected, the running config stays in force: %r", exc)
            return {}
        self.metrics.config_reloads.labels("applied").inc()
        LOG.info("config reloaded from %s", config.path)
        return out

    # --- failure isolation ---------------------------------------------------------------------

    def report_failure(self, app: SuiteApp | str, hook: str, exc: Exception) -> None:
        """An exception caught in `app`'s (or the core's, app="core") `hook`: count it in
        `osken_app_errors_total{app,hook}` and log it: with its traceback the first time, then
        one line at the 10th, 100th... time, so a failure per packet cannot flood the log."""
        name = app if isinstance(app, str) else app.name
        self.metrics.app_errors.labels(name, hook).inc()
        frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
        where = f"{frame[0].filename}:{frame[0].lineno}" if frame else "?"
        key = (name, hook, type(exc).__name__, where)
        count = self._failures[key] = self._failures.get(key, 0) + 1
        if count == 1:
            LOG.error(
                "app %s failed in %s; it goes on with the next event", name, hook, exc_info=exc
            )
        elif math.log10(count).is_integer():  # the 10th, 100th, ... time: a line, no flood
            LOG.error(
                "app %s has failed in %s %d times: %s: %s at %s",
                name,
                hook,
                count,
                type(exc).__name__,
                exc,
                where,
            )

    def _each(self, hook: str, *args) -> None:
        """Call `hook` on every app in turn; one app's failure hides the event from no other."""
        for app in self.apps:
            try:
                getattr(app, hook)(*args)
            except Exception as exc:
                self.report_failure(app, hook, exc)

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
        self._ask(app, dpid, flow_stats_request(table, cookie, cookie_mask))

    def request_group_stats(self, app: SuiteApp, dpid: int) -> None:
        """For apps: ask for every group's counters; the reply comes to `app.on_group_stats`."""
        self._ask(app, dpid, group_stats_request())

    def _ask(self, app: SuiteApp, dpid: int, msg) -> None:
        """Send an app's stats request to a connected switch; its reply is routed by xid."""
        if dpid not in self.conns:
            return
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
        self.port_load.forget(dpid)
        self._repair_taken_over()  # no longer waiting for this switch's re-read
        self.metrics.switches.set(sum(c.phase == "ready" for c in self.conns.values()))
        return self._finish(now)

    def resync(self, dpid: int, now: float) -> Outbox:
        """Re-read a switch and repair it with one full diff: no flow-mods if it holds what is
        wanted. For a replica that has just become the switch's master (controller/roles.py):
        what it wrote before was not applied. Before the diff, apps get what the switch holds
        (`on_switch_synced`, as after a restart): what the old master learned and this replica
        did not hear (it was settling, or joined later) is taken back, not deleted. A switch
        not yet ready is read from the start."""
        conn = self.conns.get(dpid)
        if conn is None:
            return {}
        if conn.phase != "ready":
            return self.switch_connected(dpid, now)
        conn.resync_at = None
        conn.takeover = True
        conn.flows = {}
        conn.numbered = {kind: {} for kind in conn.numbered}
        self._read(conn, ("flows", "groups", "meters"))
        return self._drain()

    def ports_reply(
        self, dpid: int, xid: int, ports: Iterable[PortInfo], more: bool, now: float
    ) -> Outbox:
        """A port description reply (OFPMP_PORT_DESC, OpenFlow 1.3.5 7.3.5.7) during sync.

        Reserved ports (above OFPP_MAX) are left out; `more` is OFPMPF_REPLY_MORE. Replies to an xid
        we did not ask for are ignored.
        """
        conn = self.conns.get(dpid)
        if conn is None or conn.sync_xids.get(xid) != "ports":
            return {}
        conn.ports.update({p.port_no: p for p in ports if p.port_no <= ofp.OFPP_MAX})
        return self._part_done(conn, xid, more, now)

    def flows_reply(
        self, dpid: int, xid: int, stats: Iterable[FlowStat], more: bool, now: float
    ) -> Outbox:
        """A flow stats reply (OpenFlow 1.3.5 7.3.5.2): a sync's read of the tables, or an
        app's request_flow_stats, routed by `xid`; an app's errors are counted, not raised.
        """
        conn = self.conns.get(dpid)
        if conn is None:
            return {}
        if conn.sync_xids.get(xid) == "flows":
            conn.flows.update((s.flow.key, s.flow) for s in stats)
            return self._part_done(conn, xid, more, now)
        return self._to_app("on_flow_stats", dpid, xid, stats, more, now)

    def group_stats_reply(
        self, dpid: int, xid: int, stats: Iterable[GroupStat], more: bool, now: float
    ) -> Outbox:
        """A group stats reply (OpenFlow 1.3.5 7.3.5.9) to an app's request_group_stats,
        routed by `xid`; an app's errors are counted, not raised."""
        if dpid not in self.conns:
            return {}
        return self._to_app("on_group_stats", dpid, xid, stats, more, now)

    def _to_app(self, hook: str, dpid: int, xid: int, stats: Iterable, more: bool, now: float):
        """Hand a stats reply to the app that asked for it (by `xid`), at its `hook`."""
        app = self._stats_waiters.get(xid)
        if app is None:
            return {}
        if not more:
            del self._stats_waiters[xid]
        try:
            getattr(app, hook)(dpid, list(stats), more, now)
        except Exception as exc:
            self.report_failure(app, hook, exc)
        return self._finish(now)

    def groups_reply(
        self, dpid: int, xid: int, groups: Iterable[Group], more: bool, now: float
    ) -> Outbox:
        """A group description reply (OpenFlow 1.3.5 7.3.5.10) during sync."""
        return self._numbered_reply(dpid, xid, "groups", groups, more, now)

    def meters_reply(
        self, dpid: int, xid: int, meters: Iterable[Meter], more: bool, now: float
    ) -> Outbox:
        """A meter config reply (OpenFlow 1.3.5 7.3.5.14) during sync."""
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
                elif conn.takeover:
                    self._taken_over(conn, now)
                else:
                    self._reconcile(conn, "resync")
        return self._finish(now)

    def _taken_over(self, conn: SwitchConn, now: float) -> None:
        """A new master's re-read is in: apps take back what the switch holds. The repairs
        wait until every switch being taken over has been read, so that what one switch holds
        for a host learned on another (its forwarding entry) is not deleted first."""
        conn.takeover = False
        conn.repair_due = True
        self._each("on_switch_synced", conn.dpid, list(conn.flows.values()), now)
        self._repair_taken_over()

    def _repair_taken_over(self) -> None:
        """Repair the switches read for a new master, once no such read is in flight."""
        if any(c.takeover for c in self.conns.values()):
            return
        for c in self.conns.values():
            if c.repair_due:
                c.repair_due = False
                self._reconcile(c, "resync")

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
        self._each("on_switch_synced", dpid, list(conn.flows.values()), now)
        # Without the LLDP trap and table-miss entries discovery cannot work: add what is missing,
        # touch nothing else until the switch is ready.
        keys = [f.key for f in self._core_flows(dpid)]
        plan = diff_flows(conn.flows, self.desired.flows[dpid], keys)
        self._send_plan(conn, plan)
        self._probe(conn, conn.ports.values(), now)

    def _limit_packet_ins(self, dpids: Iterable[int]) -> None:
        """OpenFlow's controller meter caps packet-ins per switch; data traffic is untouched.
        The flow log's meter caps its packet-ins below that: the logged deny flows' and the
        copies of allowed new connections (the flow_log stage's flows, `allowed_flows`)."""
        rate, burst = self.packet_in_limit
        meter = [Meter(ofp.OFPM_CONTROLLER, "pktps", rate, burst)] if rate else []
        logged = log_meters(self.flow_log.settings)
        allowed = allowed_flows(self.flow_log.settings, CORE_COOKIE)
        for dpid in dpids:
            self.desired.put_meters(("core", "packet-in", dpid), {dpid: meter})
            self.desired.put_meters(("core", "flow-log", dpid), {dpid: logged})
            self.desired.put(("core", "flow-log", dpid), {dpid: allowed})

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

    def _probe(self, conn: SwitchConn, ports: Iterable[PortInfo], now: float) -> None:
        """Send a signed LLDP frame out of each live port, so neighbours report the link to us."""
        for port in ports:
            if port.live:
                frame = self.discovery.probe(conn.dpid, port.port_no, port.hw_addr, now)
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

    def _send_plan(self, conn: SwitchConn, plan: Plan) -> None:
        self._refuse_violations(conn.dpid, plan)
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

    def _refuse_violations(self, dpid: int, plan: Plan) -> None:
        """Take out of `plan` every flow or group that breaks its table's contract
        (Pipeline.check, Pipeline.check_group):
        it is logged and counted in `osken_pipeline_violations_total{app,table}`, and never
        sent, so what the switch holds for its key stays. Raises PipelineViolation instead
        when `strict_pipeline` is set."""
        pipeline = self.pipeline
        checked: list = [(pipeline.check, plan.flow_adds), (pipeline.check, plan.flow_mods)]
        checked += [
            (pipeline.check_group, plan.adds["group"]),
            (pipeline.check_group, plan.mods["group"]),
        ]
        groups: set[int] = set()  # refused here: a flow naming one would fail on the switch
        for check, flows in reversed(checked):  # groups first
            refused = []
            for f in flows:
                try:
                    check(f)
                    named = groups & _groups_named(f) if isinstance(f, Flow) else set()
                    if named:
                        breach = f"names group {min(named):#x}, which was refused"
                        stage = pipeline.stage(f.table).name
                        raise PipelineViolation(f, stage, pipeline.app_of(f), breach)
                except PipelineViolation as exc:
                    self._refuse(dpid, exc)
                    refused.append(id(f))
                    if isinstance(f, Group):
                        groups.add(f.group_id)
            if refused:
                flows[:] = [f for f in flows if id(f) not in refused]

    def _refuse(self, dpid: int, exc: PipelineViolation) -> None:
        """A flow, group or meter for switch `dpid` is refused: raise in tests
        (`strict_pipeline`), else log and count it (`_report_violation`)."""
        if self.strict_pipeline:
            raise exc
        self._report_violation(dpid, exc)

    def _report_violation(self, dpid: int, exc: PipelineViolation) -> None:
        """Count a refused flow or group in `osken_pipeline_violations_total{app,table}` and
        log it: the first of its app, stage and kind of breach (numbers aside) in full, then
        one line at the 10th, 100th... like it, so an app refused per host or per switch
        cannot flood the log."""
        self.metrics.pipeline_violations.labels(exc.app, exc.stage).inc()
        key = (exc.app, exc.stage, re.sub(r"0x[0-9a-f]+|\d+", "N", exc.breach))
        count = self._violations[key] = self._violations.get(key, 0) + 1
        if count == 1 or math.log10(count).is_integer():
            times = f" ({count} such refused so far)" if count > 1 else ""
            LOG.error("switch %016x: not sent, it breaks the pipeline%s: %s", dpid, times, exc)

    # --- events from switches ------------------------------------------------------------------

    def port_status(self, dpid: int, reason: int, port: PortInfo, now: float) -> Outbox:
        """A port was added, changed or deleted (OFPT_PORT_STATUS, OpenFlow 1.3.5 7.4.3).

        A port coming up is probed with LLDP at once; a port going down or deleted takes its links
        and discovery state with it. Reserved ports are ignored.
        """
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
            self._probe(conn, [port], now)
        elif not port.live and (was is None or was.live):
            LOG.info("switch %016x port %d (%s) down", dpid, port.port_no, port.name)
            self.topology.set_port(dpid, port.port_no, False)
            self.discovery.port_down(dpid, port.port_no)
        return self._finish(now)

    def packet_in(
        self,
        dpid: int,
        in_port: int,
        data: bytes,
        table_id: int,
        cookie: int,
        now: float,
        metadata: int = 0,
    ) -> Outbox:
        """A packet sent to the controller (OFPT_PACKET_IN, OpenFlow 1.3.5 7.4.1).

        LLDP goes to discovery; a copy from a logged deny flow to the flow log
        (controller/flowlog.py); any other frame of at least an Ethernet header goes to the
        apps' on_packet_in. `data` is the frame as received on `in_port`; `metadata` the
        pipeline's metadata when the flow sent it (in the packet-in's match).
        """
        conn = self.conns.get(dpid)
        if conn is None:
            return {}
        conn.packet_ins.inc()
        eth_dst, eth_src, eth_type = parse_eth(data)
        if not eth_src:  # shorter than an Ethernet header: nothing any app could read
            return {}
        if eth_type == LLDP_ETHERTYPE:
            if self.discovery.heard(dpid, in_port, data, now):
                LOG.info("link found: switch %016x port %d", dpid, in_port)
            return self._finish(now)
        if in_port in self.topology.edge_ports(dpid):
            self.neighbours.frame(data, eth_src)
        if self.flow_log.on and self._log_denied(
            conn, in_port, data, table_id, cookie, metadata, now
        ):
            return self._finish(now)
        pkt = PacketIn(dpid, in_port, table_id, cookie, data, eth_dst, eth_src, eth_type)
        self._each("on_packet_in", pkt, now)
        return self._finish(now)

    def _log_denied(self, conn, in_port, data, table_id, cookie, metadata, now) -> bool:
        """Write a packet-in from a logged deny flow to the flow log, with the rule its app
        names for that flow, or an allowed new connection's copy (the only packet-ins of the
        flow_log stage; its flows match conntrack state a packet-in need not carry) with the
        rules that let it through; False (nothing done) for a packet-in from any other flow."""
        packet = header_fields(data)
        port = conn.ports.get(in_port)
        name = port.name if port else None
        if table_id == self.pipeline.table("flow_log") and cookie == CORE_COOKIE:
            return self._log_allowed(conn, in_port, name, packet, now)
        found = self.flow_log.flow_for(
            self.desired,
            conn.dpid,
            table_id,
            cookie,
            {**packet, "in_port": in_port, "metadata": metadata},
        )
        if found is None:
            return False
        app = self.pipeline.app_of(found)
        rule = self.explain(app, conn.dpid, found)
        stage = self.pipeline.stage(found.table).name
        self.flow_log.write(now, conn.dpid, in_port, name, packet, found, app, stage, rule)
        return True

    def _log_allowed(self, conn, in_port: int, name: str | None, packet: dict, now: float) -> bool:
        """Log an allowed new connection with the rules that decided it: of the policy flows
        that let it through (`deciding_flows`), those whose app says they decide a verdict
        (SuiteApp.explain's "decides"), in table order; the last is the line's app, stage,
        table and rule (the flow_log stage's, and no rule, when none decided it)."""
        dpid = conn.dpid
        flows = self.desired.flows.get(dpid, {}).values()
        crossed = deciding_flows(
            flows, self.desired.groups.get(dpid, {}), {**packet, "in_port": in_port}
        )
        rules = []
        for f in crossed:
            app = self.pipeline.app_of(f)
            rule = self.explain(app, dpid, f)
            if rule is not None and rule.get("decides"):
                stage = self.pipeline.stage(f.table).name
                rules.append({"app": app, "stage": stage, "table": f.table, "rule": rule})
        table = rules[-1]["table"] if rules else self.pipeline.table("flow_log")
        last = rules[-1] if rules else {"app": "core", "stage": "flow_log", "rule": None}
        self.flow_log.write(
            now,
            dpid,
            in_port,
            name,
            packet,
            Flow(table, 0, (), (), 0),
            last["app"],
            last["stage"],
            last["rule"],
            verdict="allow",
            rules=rules,
        )
        return True

    def explain(self, app_name: str, dpid: int, f: Flow) -> dict[str, Any] | None:
        """What app `app_name` says made its flow `f` on switch `dpid` (SuiteApp.explain);
        None when the app is not loaded, names nothing, or fails (counted as its error)."""
        app = next((a for a in self.apps if a.name == app_name), None)
        if app is None:
            return None
        try:
            return app.explain(dpid, f)
        except Exception as exc:  # an app's bug must not fail the log or a trace
            self.report_failure(app, "explain", exc)
            return None

    def flow_removed(self, dpid: int, removed: Flow, reason: int, now: float) -> Outbox:
        """A flow left a switch (OFPT_FLOW_REMOVED, OpenFlow 1.3.5 7.4.2): forget it, tell apps.

        `reason` is OFPRR_* (idle or hard timeout, delete, group delete, meter delete).
        """
        conn = self.conns.get(dpid)
        if conn is None:
            return {}
        if conn.flows.get(removed.key) is not None:
            del conn.flows[removed.key]
        self._each("on_flow_removed", dpid, removed, reason, now)
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
        """Periodic work, in this order: LLDP probes, link expiry, settling, resyncs, port
        counter polls, app ticks.

        Parameters
        ----------
        now : float
            Seconds since the epoch (time.time()).

        Returns
        -------
        Outbox
            Messages to send, by dpid: what the steps and the apps' ticks changed.
        """
        self._probe_due(now)
        self.discovery.expire(now, set(self.conns))
        self._settle(now)
        self._resync_due(now)
        self._poll_ports(now)
        self._each("tick", now)
        self._update_gauges()
        return self._finish(now)

    def _probe_due(self, now: float) -> None:
        """When a discovery round is due, probe every port of every switch not still syncing."""
        if not self.discovery.due(now):
            return
        for conn in self.conns.values():
            if conn.phase != "syncing":
                self._probe(conn, conn.ports.values(), now)

    def _settle(self, now: float) -> None:
        """Make the settling switches ready together, once no switch has connected and none has
        synced for `settle_time` seconds: topology first, then on_switch_ready, then reconcile."""
        settling = [c for c in self.conns.values() if c.phase == "settling"]
        if not settling or now - self._last_connect < self.settle_time:
            return
        if any(now - c.synced_at < self.settle_time for c in settling):
            return
        for conn in settling:
            conn.phase = "ready"
        self._notify_topology(now)
        for conn in settling:
            self._each("on_switch_ready", conn.dpid, now)
        for conn in settling:
            self._reconcile(conn, "connect")

    def _poll_ports(self, now: float) -> None:
        """Every PortLoad interval, ask each ready switch for its ports' counters."""
        if not self.port_load.due(now):
            return
        self._port_xids.clear()  # an answer not back by now is not waited for
        for conn in self.conns.values():
            if conn.phase == "ready":
                xid = self._new_xid()
                self._port_xids.add(xid)
                self._out[conn.dpid].append(port_stats_request(xid))

    def port_stats_reply(
        self, dpid: int, xid: int, counters: list[tuple[int, int, int]], more: bool, now: float
    ) -> Outbox:
        """A port stats reply (OpenFlow 1.3.5 7.3.5.6) to our poll: (port, rx_bytes,
        tx_bytes) per port, reserved ports included; replies we did not ask for are ignored."""
        if xid in self._port_xids:
            self.port_load.update(dpid, counters, now)
            if not more:
                self._port_xids.discard(xid)
        return {}

    def _resync_due(self, now: float) -> None:
        """Re-read flows, groups and meters of each ready switch whose resync time has come."""
        for conn in self.conns.values():
            if conn.resync_at is not None and now >= conn.resync_at and conn.phase == "ready":
                conn.resync_at = None
                conn.flows = {}
                conn.numbered = {kind: {} for kind in conn.numbered}
                self._read(conn, ("flows", "groups", "meters"))

    # --- output --------------------------------------------------------------------------------

    def send(self, dpid: int, msgs: list) -> None:
        """For apps: queue messages that are not flows (packet-outs)."""
        self._out[dpid].extend(msgs)

    def _notify_topology(self, now: float) -> None:
        """Apps hear of a changed topology once a switch is ready to take what they make of it:
        at a cold start not once per link discovery finds (hundreds on a fat-tree k=8), but
        when `_settle` makes the switches ready, with every link found by then."""
        if not any(c.phase == "ready" for c in self.conns.values()):
            return
        if self.topology.version != self._topology_version:
            self._topology_version = self.topology.version
            self._mark_fabric_ports()
            self._each("on_topology_change", now)

    def _mark_fabric_ports(self) -> None:
        """Packets from another switch carry FROM_FABRIC, so ingress-only stages can skip them;
        these entries outrank the edge tag drop, so the chains' tagged frames cross switches."""
        classify = self.pipeline.table("classify")
        mark = (write_metadata(FROM_FABRIC, FROM_FABRIC), self.pipeline.go_on("classify"))
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
        """The controller is stopping: every app undoes what lives outside OpenFlow."""
        self._each("shutdown")
        self.flow_log.close()

    # --- introspection, for tests and the report -----------------------------------------------

    def ready(self, dpid: int) -> bool:
        """True if switch `dpid` is connected and reconciled (phase "ready")."""
        conn = self.conns.get(dpid)
        return conn is not None and conn.phase == "ready"
