"""The interface every suite app implements: plain Python, driven by the core, no os-ken inside.

An app is one `SuiteApp` subclass in its own file, and that is all the file needs: its name, the
config sections it reads with their JSON Schemas, and the apps it requires are class data
(`name`, `config_section`, `config_schemas`, `requires`); its behaviour is the hooks below.
`osken-manager path/to/app.py` (or `package.module`) loads it, and the apps it requires first,
into the one shared core (controller/host.py); the pipeline declares its table.

An app reads the core through a `CoreView` (`self.core`): the pipeline, the topology, the
desired state, metrics, each switch's ports, and two requests (packet-outs, flow counters). It
states the flows it wants through `self.desired`, and reacts to events. Every hook gets `now`
from the caller and never reads the clock, so tests control time.

A config is taken in two steps: `parse_config` turns the app's section into a settings value
(everything that can be wrong with the input is found here, and nothing in the app changes);
`configure` applies a value that parsing returned. The core parses every app's section before it
applies any, so a reload is all or nothing. An exception escaping any hook is caught by the core,
logged and counted (`osken_app_errors_total{app,hook}`); the other apps still get the event.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType, ModuleType
from typing import Any, ClassVar

from controller.config import Config
from controller.desired import DesiredState
from controller.flows import Flow
from controller.metrics import Metrics
from controller.pipeline import Pipeline, PipelineViolation
from controller.switch import PortInfo, SwitchConn
from controller.topology import Topology


@dataclass(frozen=True)
class PacketIn:
    """A packet the switch sent us, with the few fields every app wants already parsed."""

    dpid: int
    in_port: int
    table_id: int
    cookie: int
    data: bytes
    eth_dst: str
    eth_src: str
    eth_type: int


class AppDesired:
    """The desired state as one app writes it: `put`, `put_groups` and `put_meters` take only
    what carries the app's own numbers (`Pipeline.check_author`: its cookie byte, group and
    meter ids), so no app can state flows the core would judge, log and count as another's.
    Anything else is handed to `refuse(dpid, violation)` (which raises in tests, logs and
    counts in production) and left out. Everything else reads through to the DesiredState.
    """

    def __init__(
        self,
        desired: DesiredState,
        app: str,
        pipeline: Pipeline,
        refuse: Callable[[int, PipelineViolation], None],
    ) -> None:
        self._desired, self._app, self._pipeline, self._refuse = desired, app, pipeline, refuse

    def __getattr__(self, name: str) -> Any:
        return getattr(self._desired, name)

    def _own(self, by_dpid: Mapping[int, Iterable]) -> dict[int, list]:
        mine: dict[int, list] = {}
        for dpid, items in by_dpid.items():
            kept = mine[dpid] = []
            for item in items:
                try:
                    self._pipeline.check_author(self._app, item)
                except PipelineViolation as exc:
                    self._refuse(dpid, exc)
                else:
                    kept.append(item)
        return mine

    def put(self, owner: Hashable, flows_by_dpid: Mapping[int, Iterable[Flow]]) -> None:
        """DesiredState.put of the flows with this app's cookie."""
        self._desired.put(owner, self._own(flows_by_dpid))

    def put_groups(self, owner: Hashable, groups_by_dpid: Mapping[int, Iterable]) -> None:
        """DesiredState.put_groups of the groups with this app's ids."""
        self._desired.put_groups(owner, self._own(groups_by_dpid))

    def put_meters(self, owner: Hashable, meters_by_dpid: Mapping[int, Iterable]) -> None:
        """DesiredState.put_meters of the meters with this app's ids."""
        self._desired.put_meters(owner, self._own(meters_by_dpid))


class CoreView:
    """What an app sees of the core: read-only state, and the few requests it may make.

    Apps get one as `self.core` (and its `topology` and `desired` as attributes of their own).
    They never hold the core itself: switch connections, sync phases, xids and installed flows
    are the core's business.

    Attributes:
        pipeline: the tables and their stages (`pipeline.table("firewall")` is a table id).
        topology: switches, links, ports and hosts (controller/topology.py); read, do not edit,
            except for hosts an app has learned.
        desired: where an app states the flows, groups and meters it wants, under its owner key
            (controller/desired.py).
        metrics: the Prometheus registry, to make an app's own counters and gauges.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        topology: Topology,
        desired: DesiredState,
        metrics: Metrics,
        conns: Mapping[int, SwitchConn],
        send: Callable[[int, list], None],
        request_flow_stats: Callable[[SuiteApp, int, int, int, int], None],
        is_master: Callable[[int], bool] = lambda dpid: True,
        loaded: Callable[[str], bool] = lambda app: False,
        request_group_stats: Callable[[SuiteApp, int], None] = lambda app, dpid: None,
        settings_of: Callable[[str], Any] = lambda app: None,
    ) -> None:
        self.pipeline = pipeline
        self.topology = topology
        self.desired = desired
        self.metrics = metrics
        self._conns = conns
        self._send = send
        self._request_flow_stats = request_flow_stats
        self._is_master = is_master
        self._loaded = loaded
        self._request_group_stats = request_group_stats
        self._settings_of = settings_of

    def loaded(self, app: str) -> bool:
        """Whether the app named `app` (its `name`, e.g. "services") runs in this controller."""
        return self._loaded(app)

    def settings_of(self, app: str) -> Any:
        """The parsed settings of the app named `app` in the config being applied (while apps'
        `configure` runs, so what one app reads of another is of the same config), else in
        force; None when it is not loaded. Read-only."""
        return self._settings_of(app)

    def connected(self) -> list[int]:
        """The dpids of every connected switch, in any phase, ascending."""
        return sorted(self._conns)

    def ready(self, dpid: int) -> bool:
        """Whether switch `dpid` is connected, synced and settled (its flows are kept in sync)."""
        conn = self._conns.get(dpid)
        return conn is not None and conn.phase == "ready"

    def is_master(self, dpid: int) -> bool:
        """Whether this controller writes to switch `dpid`: always when it runs alone; as one of
        several replicas (--cluster, docs/ha.md), only while the switch has confirmed it as
        master. Side effects outside OpenFlow (an XDP program on the switch's ports) follow it."""
        return self._is_master(dpid)

    def ports(self, dpid: int) -> Mapping[int, PortInfo]:
        """Port number -> PortInfo (name, hardware address, live) of switch `dpid`, as the
        switch last reported them; empty for a switch that is not connected. Read-only."""
        conn = self._conns.get(dpid)
        return MappingProxyType(conn.ports) if conn is not None else MappingProxyType({})

    def send(self, dpid: int, msgs: list) -> None:
        """Queue messages that are not flows (packet-outs, a conntrack flush) for switch `dpid`;
        they go out when the current event is handled. Flows go through `desired`."""
        self._send(dpid, msgs)

    def request_flow_stats(
        self, app: SuiteApp, dpid: int, table: int, cookie: int = 0, cookie_mask: int = 0
    ) -> None:
        """Ask switch `dpid` for the counters of `table`'s flows whose cookie matches
        (`cookie`/`cookie_mask`, OpenFlow 1.3 ofp_flow_stats_request); the reply arrives, maybe
        in parts, at `app.on_flow_stats`. Nothing happens for a switch that is not connected."""
        self._request_flow_stats(app, dpid, table, cookie, cookie_mask)

    def request_group_stats(self, app: SuiteApp, dpid: int) -> None:
        """Ask switch `dpid` for the counters of all its groups, per bucket (OpenFlow 1.3
        OFPMP_GROUP); the reply arrives, maybe in parts, at `app.on_group_stats` as
        controller.switch.GroupStat entries. Nothing happens for a switch not connected."""
        self._request_group_stats(app, dpid)


def defined_in(cls: type, module: ModuleType) -> bool:
    """True if `module` defines `cls`: in the module itself or, for a package (an app such as
    `apps.firewall`), in one of its submodules. Classes a module merely imports do not count."""
    name = module.__name__
    inside = hasattr(module, "__path__") and cls.__module__.startswith(name + ".")
    return cls.__module__ == name or inside


class SuiteApp:
    """Base class: override the hooks you need. `config_section` names the config key you read."""

    name = "app"
    config_section: str | None = None
    # Every config section it reads (its own and any other it reads through `config`) -> the
    # section's JSON Schema (controller/config.py's Validator: Draft 2020-12, ints are ints).
    # The core checks them before `parse_config` runs; the core's own sections
    # (controller/sections.py) are checked for every app and need no entry.
    config_schemas: ClassVar[Mapping[str, dict]] = MappingProxyType({})
    # Apps this one needs loaded too, as module names: osken-manager loads them first.
    requires: ClassVar[tuple[str, ...]] = ()
    cookie: int = 0  # high byte of every flow cookie this app installs; identifies its flows

    def __init__(self, core: CoreView) -> None:
        self.core = core
        self.topology = core.topology
        self.desired = core.desired

    def parse_config(self, section: Any, config: Config) -> Any:
        """This app's settings, as a value, from its section (None when the config has none).

        Runs before anything is applied, and again for `osken-manager --check`: it must not
        change the app, the core or the switches. `config` is the whole config, for sections
        in `config_schemas` and for located errors (`config.error(where, message)`).

        Raises:
            ConfigError: the section is not usable; the message names file, line and field.
        """
        return section

    def configure(self, settings: Any, now: float) -> None:
        """Apply what `parse_config` returned (at start and on every reload); `now` in seconds.

        Apply only: whatever the input can get wrong belongs in `parse_config`. If this raises
        anyway, the core rolls the desired state back and re-applies the previous settings.
        """

    def on_switch_synced(self, dpid: int, installed: list[Flow], now: float) -> None:
        """A switch connected and reported its tables: recover any state they hold. Also
        called on a ready switch, when this replica has just become its master (Core.resync),
        before the repair's diff: state the old master wrote is taken back, not deleted."""

    def on_switch_ready(self, dpid: int, now: float) -> None:
        """A switch finished settling; what is desired for it now is reconciled right after."""

    def on_topology_change(self, now: float) -> None:
        """Links, ports or the flood tree moved: recompute what depends on them."""

    def on_packet_in(self, pkt: PacketIn, now: float) -> None:
        """A packet-in not claimed by the core (LLDP is the core's)."""

    def on_flow_removed(self, dpid: int, flow: Flow, reason: int, now: float) -> None:
        """A flow of ours timed out or was deleted by the switch."""

    def on_flow_stats(self, dpid: int, stats: list, more: bool, now: float) -> None:
        """Counters asked for with core.request_flow_stats (`more`: further parts follow)."""

    def on_group_stats(self, dpid: int, stats: list, more: bool, now: float) -> None:
        """Group counters (controller.switch.GroupStat) asked for with
        core.request_group_stats (`more`: further parts follow)."""

    def predict(self, dpid: int, flow: Flow, packet: dict[str, Any]) -> dict[str, Any] | None:
        """For a trace (controller/trace): what this app would do with `packet` (OXM fields and
        in_port) had `flow`, one of its flows on switch `dpid`, sent it to the controller:
        {"actions": the packet-out's actions (controller.flows canonical), "picked": what it
        decided, as JSON-ready data}; None when it would not send the packet on. It must
        change nothing: the next real packet-in gets the same answer."""
        return None

    def explain(self, dpid: int, flow: Flow) -> dict[str, Any] | None:
        """For a trace (controller/trace): what in this app's config made `flow`, one of its
        flows on switch `dpid`, as JSON-ready data (a rule: {"file", "line", "text"}; a
        policy: its namespace/name and rule index; ...). None: nothing to name. Runs in the
        core's event loop, reads only, and must not change the app."""
        return None

    def describe(self) -> dict[str, list]:
        """What this app adds to the topology page and GET /api/v1/topology: JSON-ready
        lists by kind ("services", "vnfs", "waypoints", ...), merged with other apps' lists
        of the same kind. Runs in the core's event loop, reads only."""
        return {}

    def shutdown(self) -> None:
        """The controller is stopping: undo what lives outside OpenFlow (e.g. XDP programs)."""

    def tick(self, now: float) -> None:
        """Called about every half second."""
