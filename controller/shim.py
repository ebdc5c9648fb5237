"""The thin os-ken layer: turn os-ken events into Core calls and send back what the core returns.

`CoreApp` is an os-ken context shared by every suite app, so however many apps are loaded there is
one core, one topology and one connection per switch. os-ken sees one app of the suite,
`controller.host.SuiteHost`, which declares the context; osken-manager hands the context the
plain-Python `SuiteApp` classes it loads (`CoreApp.setup`). An app file holds only its SuiteApp.

Failure policy: no exception leaves a handler. Under os-ken's native hub, `hub.TaskExit` is
`Exception` itself, so any exception a handler raised ended the app's event loop for good,
silently (the process stayed up, its port still accepted connections, and nothing was handled
again). Every handler here is `guarded`: an exception is logged, counted
(`osken_app_errors_total{app="core",hook=...}`) and the loop goes on. `GET /livez` on the metrics
port answers 503 when the loop has not turned for `LIVENESS_TIMEOUT` seconds.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass

from os_ken.base import app_manager
from os_ken.controller import event, ofp_event
from os_ken.controller.handler import DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_3 as ofp

from controller.app import SuiteApp
from controller.config import Config, ConfigError, load_config
from controller.core import ApplyError, Core
from controller.flows import flow_from_stats, group_from_desc, meter_from_config
from controller.metrics import Metrics
from controller.replica import EventOwnership, EventSharedConfig
from controller.switch import FlowStat, GroupStat, PortInfo
from controller.web import Web

LOG = logging.getLogger("osken_suite.shim")
TICK_SECONDS = 0.5
CONFIG_POLL_SECONDS = 1.0
CONFIG_SETTLE_SECONDS = 2.0  # a changed file reloads once it has stayed unchanged this long
LIVENESS_TIMEOUT = 5.0  # seconds without a tick handled: the event loop is not turning


CONTEXT = "suite"  # the name of CoreApp among os-ken's contexts


@dataclass(frozen=True)
class RuntimeOptions:
    """What osken-manager checked before os-ken starts the apps: the config, and where to
    serve /metrics (port 0: nowhere)."""

    config: Config | None = None
    prometheus_port: int = 0
    prometheus_host: str = "127.0.0.1"
    cluster: str = ""  # etcd client URLs (--cluster); "": a single controller
    replica_id: str = ""


class EventTick(event.EventBase):
    """Periodic work, posted into the core's own event loop so no state is touched concurrently."""


class EventReload(event.EventBase):
    """SIGHUP: reread the config."""


class EventCall(event.EventBase):
    """Work from another thread (the HTTP server's), run in the core's event loop; its result
    (or exception) goes back through `box`."""

    def __init__(self, fn: Callable, box: queue.Queue) -> None:
        super().__init__()
        self.fn, self.box = fn, box


def port_info(p) -> PortInfo:
    """The PortInfo of an os-ken OFPPort (OpenFlow 1.3.5 7.2.1): name decoded, and live
    unless the port is configured down (OFPPC_PORT_DOWN) or its link is down (OFPPS_LINK_DOWN).
    """
    name = p.name.decode(errors="replace") if isinstance(p.name, bytes) else str(p.name)
    live = not (p.config & ofp.OFPPC_PORT_DOWN) and not (p.state & ofp.OFPPS_LINK_DOWN)
    return PortInfo(p.port_no, name.rstrip("\x00"), p.hw_addr, live)


def wire_bytes(dpid: int, msgs: list, report: Callable[[Exception], None]) -> bytes:
    """The messages serialised back to back. A message that cannot be encoded (a value the
    encoder cannot send) is left out alone and `report`ed (ValueError naming the switch and the
    message): the rest of the batch still goes."""
    out = []
    for msg in msgs:
        try:
            msg.serialize()
        except Exception as exc:
            what = f"{type(msg).__name__} xid {msg.xid}"  # str(msg) could fail the same way
            report(ValueError(f"switch {dpid:016x}: not sent, cannot be encoded: {what}: {exc}"))
            continue
        out.append(msg.buf)
    return b"".join(out)


def guarded(handler: Callable) -> Callable:
    """Wrap an event handler so that no exception leaves it (see the module's failure policy)."""

    @functools.wraps(handler)
    def run(self: CoreApp, ev) -> None:
        try:
            handler(self, ev)
        except Exception as exc:
            try:
                self.core.report_failure("core", handler.__name__.lstrip("_"), exc)
            except Exception:  # reporting failed too (out of memory): still keep the loop
                os.write(2, f"osken-manager: {handler.__name__} failed: {exc!r}\n".encode())

    return run


class CoreApp(app_manager.OSKenApp):
    """The os-ken context that holds the one Core and turns os-ken events into its calls."""

    OFP_VERSIONS = [ofp.OFP_VERSION]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.metrics = Metrics()
        self.core = Core(metrics=self.metrics)
        self.datapaths: dict[int, object] = {}
        self._config_stamps: dict[str, tuple[int, int]] = {}
        self._changed: tuple[dict, float] | None = None  # what the files became, seen when
        self._next_config_poll = 0.0
        self._last_turn = time.monotonic()  # when the event loop last handled a tick
        self.metrics.route("/livez", self.liveness)
        Web(self.core, self.call_in_loop).mount(self.metrics)  # /api/v1/trace ...
        self.options = RuntimeOptions()
        self.cluster = None  # controller.replica.ClusterLink with --cluster
        self._first_config: Config | None = None  # what start applies: with --cluster, etcd's

    def setup(self, options: RuntimeOptions, apps: list[type[SuiteApp]]) -> None:
        """Before os-ken starts it: the checked options, and the suite apps to host, in order
        (a class loaded twice is loaded once).

        With --cluster, the config to start with is the cluster's (controller/sharedconfig.py):
        raises StoreUnavailable when etcd does not answer, ConfigError when the local config
        cannot be shared or etcd's does not check here."""
        self.options = options
        for app_cls in apps:
            self.core.add_app(app_cls)
        self._first_config = options.config
        if options.cluster:
            from controller.replica import ClusterLink

            self.cluster = ClusterLink(options.cluster, options.replica_id, self.metrics, self.core)
            self.core.discovery.key = self.cluster.lldp_key  # every replica checks every probe
            self.core.is_master = self.cluster.gate.is_master
            self._first_config = self.cluster.shared.join(options.config or Config())

    def start(self):
        """os-ken's start of the app: serve /metrics, apply the config, start ticking.

        A config that fails to apply (osken-manager checked it, so a bug) is logged, and the
        controller runs without it. Returns the app's event thread.
        """
        thread = super().start()
        if self.options.prometheus_port:
            self.metrics.serve(self.options.prometheus_port, self.options.prometheus_host)
        try:
            self._send(self.core.configure(self._first_config or Config(), time.time()))
        except (ConfigError, ApplyError) as exc:  # checked by osken-manager already: a bug
            LOG.error("the config could not be applied; running without it: %s", exc)
        self._config_stamps = self._watched()
        gc.freeze()
        hub.spawn(self._ticker)
        if self.cluster:
            self.cluster.start(lambda ev: self.send_event(self.name, ev))
        return thread

    def liveness(self) -> tuple[int, str]:
        """(HTTP status, text) for /livez: 200 while the event loop turns, else 503."""
        idle = time.monotonic() - self._last_turn
        if idle > LIVENESS_TIMEOUT:
            return 503, f"event loop stalled: no tick handled for {idle:.1f} s\n"
        return 200, f"ok: last tick handled {idle:.1f} s ago\n"

    def call_in_loop(self, fn: Callable, timeout: float = LIVENESS_TIMEOUT):
        """Run `fn()` in the core's event loop and return what it returns (or raise what it
        raised); for threads that must read the core. Raises queue.Empty after `timeout`
        seconds without an answer."""
        box: queue.Queue = queue.Queue(maxsize=1)
        self.send_event(self.name, EventCall(fn, box))
        ok, value = box.get(timeout=timeout)
        if not ok:
            raise value
        return value

    @set_ev_cls(EventCall)
    def _on_call(self, ev) -> None:
        try:
            ev.box.put((True, ev.fn()))
        except Exception as exc:  # the caller raises it in its own thread
            ev.box.put((False, exc))

    def request_reload(self) -> None:
        """Safe from a signal handler: the reload runs in the core's event loop."""
        self.send_event(self.name, EventReload())

    def _ticker(self) -> None:
        while True:
            hub.sleep(TICK_SECONDS)
            self.send_event(self.name, EventTick())

    def _send(self, outbox: dict[int, list]) -> None:
        if self.cluster:  # writes reach only the switches this replica masters
            outbox = self.cluster.gate.gate(outbox)
        for dpid, msgs in outbox.items():
            dp = self.datapaths.get(dpid)
            if dp is None or not msgs:
                continue
            for msg in msgs:
                if msg.xid is None:  # the core numbers its own requests, to route replies
                    dp.set_xid(msg)
            # One write per switch per event: far cheaper than a queue hand-off per message.
            dp.send(
                wire_bytes(dpid, msgs, lambda exc: self.core.report_failure("core", "encode", exc))
            )

    # --- config --------------------------------------------------------------------------------

    def _watched(self) -> dict[str, tuple[int, int]]:
        """(modification time, size) of every file the config depends on ((-1, -1): missing).

        With --cluster, the local files (the running config is etcd's, materialized)."""
        if self.cluster:
            configs = [self.options.config, self.cluster.shared.local]
        else:  # a rejected one's files too, so fixing a file it added reloads it
            configs = [self.core.config, self.options.config, self.core.candidate]
        paths = set()
        for config in configs:
            if config is not None:
                paths.update(config.files())
        out = {}
        for path in sorted(paths):
            try:
                st = os.stat(path)
                out[path] = (st.st_mtime_ns, st.st_size)
            except OSError:
                out[path] = (-1, -1)
        return out

    def _reload(self, why: str) -> None:
        """Reload now (see Core.reload); the files as read become the ones watched."""
        started = self.options.config
        path = started.path if started else None
        if not self.cluster:
            path = self.core.config.path or path
        if not path:
            LOG.info("%s: no --config given, nothing to reload", why)
            return
        if self.cluster:  # published; every replica applies it once read back from etcd
            LOG.info("%s: checking %s to publish it", why, path)
            self.cluster.shared.publish(lambda: load_config(path), why)
        else:
            LOG.info("%s: reloading %s", why, path)
            self._send(self.core.reload(lambda: load_config(path), time.time()))
        self._config_stamps = self._watched()
        # What a config builds lives until the next one: keep the collector from rescanning it.
        gc.freeze()

    @set_ev_cls(EventReload)
    @guarded
    def _on_reload(self, ev) -> None:
        self._reload("SIGHUP")

    @set_ev_cls(EventTick)
    @guarded
    def _on_tick(self, ev) -> None:
        self._last_turn = time.monotonic()
        now = time.time()
        self._send(self.core.tick(now))
        if self.cluster:
            self.cluster.shared.retry()
        if now >= self._next_config_poll and self._config_stamps:
            self._next_config_poll = now + CONFIG_POLL_SECONDS
            self._poll_config(now)

    def _poll_config(self, now: float) -> None:
        """Reload once the files have changed and then stayed as they are for
        CONFIG_SETTLE_SECONDS: a file still being written (`cat new > lab.yaml`, an editor's
        in-place save, a slow copy) is never read half-written. SIGHUP reloads at once."""
        seen = self._watched()
        if seen == self._config_stamps:
            self._changed = None
        elif self._changed is None or self._changed[0] != seen:
            self._changed = (seen, now)
        elif now - self._changed[1] >= CONFIG_SETTLE_SECONDS:
            self._changed = None
            self._reload("config file changed")

    # --- OpenFlow events -----------------------------------------------------------------------

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    @guarded
    def _on_state(self, ev) -> None:
        dp = ev.datapath
        if dp.id is None:
            return
        if ev.state == MAIN_DISPATCHER:
            self.datapaths[dp.id] = dp
            if self.cluster:
                self._send(self.cluster.gate.connected(dp.id))
            self._send(self.core.switch_connected(dp.id, time.time()))
        elif self.datapaths.get(dp.id) is dp:
            del self.datapaths[dp.id]
            if self.cluster:
                self.cluster.gate.disconnected(dp.id)
            self._send(self.core.switch_disconnected(dp.id, time.time()))

    @staticmethod
    def _more(msg) -> bool:
        return bool(msg.flags & ofp.OFPMPF_REPLY_MORE)

    @set_ev_cls(ofp_event.EventOFPPortDescStatsReply, MAIN_DISPATCHER)
    @guarded
    def _on_ports(self, ev) -> None:
        msg = ev.msg
        ports = [port_info(p) for p in msg.body]
        self._send(
            self.core.ports_reply(msg.datapath.id, msg.xid, ports, self._more(msg), time.time())
        )

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    @guarded
    def _on_flows(self, ev) -> None:
        msg = ev.msg
        stats = [FlowStat(None, s.packet_count, s.byte_count, raw=s) for s in msg.body]
        self._send(
            self.core.flows_reply(msg.datapath.id, msg.xid, stats, self._more(msg), time.time())
        )

    @set_ev_cls(ofp_event.EventOFPPortStatsReply, MAIN_DISPATCHER)
    @guarded
    def _on_port_stats(self, ev) -> None:
        msg = ev.msg
        counters = [(s.port_no, s.rx_bytes, s.tx_bytes) for s in msg.body]
        self._send(
            self.core.port_stats_reply(
                msg.datapath.id, msg.xid, counters, self._more(msg), time.time()
            )
        )

    @set_ev_cls(ofp_event.EventOFPGroupStatsReply, MAIN_DISPATCHER)
    @guarded
    def _on_group_stats(self, ev) -> None:
        msg = ev.msg
        stats = [GroupStat.of(s) for s in msg.body]
        self._send(
            self.core.group_stats_reply(
                msg.datapath.id, msg.xid, stats, self._more(msg), time.time()
            )
        )

    @set_ev_cls(ofp_event.EventOFPGroupDescStatsReply, MAIN_DISPATCHER)
    @guarded
    def _on_groups(self, ev) -> None:
        msg = ev.msg
        groups = [group_from_desc(d) for d in msg.body]
        self._send(
            self.core.groups_reply(msg.datapath.id, msg.xid, groups, self._more(msg), time.time())
        )

    @set_ev_cls(ofp_event.EventOFPMeterConfigStatsReply, MAIN_DISPATCHER)
    @guarded
    def _on_meters(self, ev) -> None:
        msg = ev.msg
        meters = [meter_from_config(c) for c in msg.body]
        self._send(
            self.core.meters_reply(msg.datapath.id, msg.xid, meters, self._more(msg), time.time())
        )

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    @guarded
    def _on_port_status(self, ev) -> None:
        msg = ev.msg
        self._send(
            self.core.port_status(msg.datapath.id, msg.reason, port_info(msg.desc), time.time())
        )

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    @guarded
    def _on_packet_in(self, ev) -> None:
        msg = ev.msg
        self._send(
            self.core.packet_in(
                msg.datapath.id,
                msg.match["in_port"],
                msg.data,
                msg.table_id,
                msg.cookie,
                time.time(),
                msg.match.get("metadata", 0),
            )
        )

    @set_ev_cls(ofp_event.EventOFPFlowRemoved, MAIN_DISPATCHER)
    @guarded
    def _on_flow_removed(self, ev) -> None:
        msg = ev.msg
        self._send(
            self.core.flow_removed(msg.datapath.id, flow_from_stats(msg), msg.reason, time.time())
        )

    @set_ev_cls(ofp_event.EventOFPErrorMsg, MAIN_DISPATCHER)
    @guarded
    def _on_error(self, ev) -> None:
        msg = ev.msg
        if self.cluster and self.cluster.gate.error(msg.datapath.id, msg.type, msg.code):
            self.metrics.errors.labels(
                f"{msg.datapath.id:016x}", str(msg.type), str(msg.code)
            ).inc()
            return  # about our role: demoted (controller/roles.py), nothing to repair
        self._send(self.core.error(msg.datapath.id, msg.type, msg.code, time.time(), msg.xid))

    # --- replicas (--cluster, controller/replica.py) -------------------------------------------

    @set_ev_cls(EventOwnership)
    @guarded
    def _on_ownership(self, ev) -> None:
        self._send(self.cluster.gate.ownership(ev.owners))
        self.cluster.update_gauges()

    @set_ev_cls(EventSharedConfig)
    @guarded
    def _on_shared_config(self, ev) -> None:
        self._send(self.cluster.shared.observe(ev.value, ev.revision, time.time()))
        gc.freeze()

    @set_ev_cls(ofp_event.EventOFPRoleReply, MAIN_DISPATCHER)
    @guarded
    def _on_role_reply(self, ev) -> None:
        msg = ev.msg
        if self.cluster is None:
            return
        held, promoted = self.cluster.gate.role_reply(
            msg.datapath.id, msg.role, msg.generation_id, msg.xid
        )
        self._send(held)
        if promoted:  # what we wrote as a slave was dropped: read the switch, repair the rest
            self._send(self.core.resync(msg.datapath.id, time.time()))
        self.cluster.update_gauges()
