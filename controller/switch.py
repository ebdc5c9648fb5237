"""What the core knows about one connected switch, and the small values events carry."""

from __future__ import annotations

from dataclasses import dataclass, field

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller.flows import OF13, Flow, FlowKey, flow_from_stats

SYNC_PARTS = ("ports", "flows", "groups", "meters")


@dataclass(frozen=True)
class PortInfo:
    """A switch port as the core keeps it: number, name, MAC as "aa:bb:..:ff", and whether
    it can carry traffic (configured up and link up).
    """

    port_no: int
    name: str
    hw_addr: str
    live: bool


class FlowStat:
    """One entry of a flow stats reply. Counters are read directly; the canonical flow is built
    only when asked for (a table read needs it, a counter poll of 10,000 rules does not)."""

    __slots__ = ("cookie", "packets", "bytes", "_raw", "_flow")

    def __init__(
        self, flow: Flow | None = None, packets: int = 0, nbytes: int = 0, raw=None
    ) -> None:
        self._flow, self._raw = flow, raw
        self.cookie = flow.cookie if flow is not None else raw.cookie
        self.packets, self.bytes = packets, nbytes

    @property
    def flow(self) -> Flow:
        """The canonical Flow of this entry, decoded on first use."""
        if self._flow is None:
            self._flow = flow_from_stats(self._raw)
        return self._flow


@dataclass(frozen=True)
class GroupStat:
    """One entry of a group stats reply (OFPMP_GROUP, OpenFlow 1.3.5 7.3.5.9): the group's
    packet count, how long it has existed (seconds; a group replaced by a modify starts again
    at 0 in Open vSwitch, counters included), and each bucket's packet count in the order the
    group's description lists its buckets."""

    group_id: int
    packets: int
    duration: float
    bucket_packets: tuple[int, ...]

    @classmethod
    def of(cls, s) -> GroupStat:
        """From an os-ken OFPGroupStats entry."""
        return cls(
            s.group_id,
            s.packet_count,
            s.duration_sec + s.duration_nsec / 1e9,
            tuple(b.packet_count for b in s.bucket_stats),
        )


def group_stats_request():
    """An OFPGroupStatsRequest (OpenFlow 1.3.5 7.3.5.9) for every group of a switch."""
    return parser.OFPGroupStatsRequest(OF13, 0, ofp.OFPG_ALL)


@dataclass
class SwitchConn:
    """A connected switch: its phase, what it holds, and the requests we are waiting on."""

    dpid: int
    phase: str = "syncing"  # syncing -> settling -> ready
    pending: set[str] = field(default_factory=lambda: set(SYNC_PARTS))
    ports: dict[int, PortInfo] = field(default_factory=dict)
    flows: dict[FlowKey, Flow] = field(default_factory=dict)
    numbered: dict[str, dict[int, object]] = field(
        default_factory=lambda: {"group": {}, "meter": {}}
    )
    sync_xids: dict[int, str] = field(default_factory=dict)  # xid -> part being read
    bundles: bool = True  # until the switch refuses one
    bundle_xids: set[int] = field(default_factory=set)
    synced_at: float = 0.0
    resync_at: float | None = None
    takeover: bool = False  # a re-read for a new master in flight: apps recover from it first
    repair_due: bool = False  # read for a new master; repaired once every such read is in
    packet_ins: object = None  # this switch's packet-in counter (looked up once, used per packet)

    @property
    def groups(self) -> dict[int, object]:
        """Group id to Group: what the switch holds, as last read or sent."""
        return self.numbered["group"]

    @property
    def meters(self) -> dict[int, object]:
        """Meter id to Meter: what the switch holds, as last read or sent."""
        return self.numbered["meter"]


def table_requests(xids: dict[str, int], parts: tuple[str, ...]) -> list:
    """Multipart requests that read a switch's state, each with the xid we will route by."""
    out = []
    for part in parts:
        if part == "ports":
            msg = parser.OFPPortDescStatsRequest(OF13, 0)
        elif part == "flows":
            msg = flow_stats_request()
        elif part == "groups":
            msg = parser.OFPGroupDescStatsRequest(OF13, 0)
        else:
            msg = parser.OFPMeterConfigStatsRequest(OF13, 0, ofp.OFPM_ALL)
        msg.set_xid(xids[part])
        out.append(msg)
    return out


def flow_stats_request(table: int = ofp.OFPTT_ALL, cookie: int = 0, cookie_mask: int = 0):
    """An OFPFlowStatsRequest (OpenFlow 1.3.5 7.3.5.2) for `table` (all by default) and
    the flows whose cookie matches `cookie` in the bits of `cookie_mask` (all by default).
    """
    return parser.OFPFlowStatsRequest(
        OF13, 0, table, ofp.OFPP_ANY, ofp.OFPG_ANY, cookie, cookie_mask, parser.OFPMatch()
    )
