"""The interface every suite app implements: plain Python, driven by the core, no os-ken inside.

An app reads the topology, states the flows it wants through `self.desired`, and reacts to events.
Every hook gets `now` from the caller and never reads the clock, so tests control time.

A config is taken in two steps: `parse_config` turns the app's section into a settings value
(everything that can be wrong with the input is found here, and nothing in the app changes);
`configure` applies a value that parsing returned. The core parses every app's section before it
applies any, so a reload is all or nothing. An exception escaping any hook is caught by the core,
logged and counted (`osken_app_errors_total{app,hook}`); the other apps still get the event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from controller.flows import Flow

if TYPE_CHECKING:
    from controller.config import Config
    from controller.core import Core


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


class SuiteApp:
    """Base class: override the hooks you need. `config_section` names the config key you read."""

    name = "app"
    config_section: str | None = None
    also_reads: tuple[str, ...] = ()  # other config sections it reads through `config`
    cookie: int = 0  # high byte of every flow cookie this app installs; identifies its flows

    def __init__(self, core: Core) -> None:
        self.core = core
        self.topology = core.topology
        self.desired = core.desired

    def parse_config(self, section: Any, config: Config) -> Any:
        """This app's settings, as a value, from its section (None when the config has none).

        Runs before anything is applied, and again for `osken-manager --check`: it must not
        change the app, the core or the switches. `config` is the whole config, for sections
        named in `also_reads` and for located errors (`config.error(where, message)`).

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
        """A switch connected and reported its tables: recover any state they hold."""

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

    def shutdown(self) -> None:
        """The controller is stopping: undo what lives outside OpenFlow (e.g. XDP programs)."""

    def tick(self, now: float) -> None:
        """Called about every half second."""
