"""An in-memory OpenFlow 1.3 switch that reads the controller's bytes with its own eyes.

Every message the controller hands it is serialised as a connection would send it and decoded
from those bytes (tests/ofwire.py: os-ken's parsers and an OXM codec of its own), never through
controller/flows/; its tables, groups and meters are its own model of what it decoded, and the
packets it walks through them (tests/fakenet.py) see only that model. What it reports (flow
stats, group and meter descriptions) goes back as bytes too, read by the controller's decoder
exactly as the os-ken shim reads a real switch's replies: `flows()`, `groups`, `meters`,
`flow_stats()`, `group_descs()` and `meter_configs()` are that read-back view.

What Open vSwitch refuses it refuses, by raising FakeSwitchError:
- a goto to the same or an earlier table, or past the last one; a table that does not exist;
- a flow or bucket using a group or meter that does not exist; adding a group or meter twice
  (deleting a group or meter deletes the flows that use it, as in Open vSwitch);
- a match field without its prerequisite (ipv4_src without eth_type=0x0800, ...); a field
  twice; a masked value with bits outside its mask;
- a ct(nat) in a flow that does not match IPv4 or IPv6 (OFPBAC_MATCH_INCONSISTENT); a nat with
  both src and dst; a set_field of vlan_vid without OFPVID_PRESENT (OFPBAC_BAD_SET_ARGUMENT);
- repeated instructions; a fast-failover bucket that watches nothing.
and, as OpenFlow 1.3 says (6.4), a flow-mod with OFPFF_CHECK_OVERLAP that overlaps a flow of
the same priority in its table (a packet could match both; identical matches included) fails
with an OFPET_FLOW_MOD_FAILED / OFPFMFC_OVERLAP error to the controller, and nothing changes.

Stricter than a switch, because these are always controller bugs, it also raises on:
- a flow added without CHECK_OVERLAP that overlaps one of the same priority in its table and
  has different instructions (which of the two a packet meets is undefined);
- MODIFY_STRICT of a flow that is not there; an empty apply-actions.

Packets are dicts of OXM fields, e.g. {"in_port": 1, "eth_dst": "...", "eth_type": 0x0800}.
VLAN tags follow OpenFlow 1.3 as Open vSwitch implements it: `vlan_vid` is the outermost tag
(OFPVID_PRESENT | VID; absent: untagged, which a vlan_vid match of OFPVID_NONE selects),
`eth_type` the type after every tag, and "_inner_vlans" the tags below the outer one, so a
push_vlan onto a tagged frame keeps its tag underneath and a pop_vlan uncovers it.
Select groups pick a bucket by a hash of the packet's flow fields, in proportion to the weights;
fast-failover groups take the first bucket whose watched port is live.
Open vSwitch's controller(meter_id=M) action sends a copy to the controller and the packet goes
on; meters are not rate-limited here (a real switch's band drops the copies over the rate).

`contract`, when set, is called with each flow as the controller reads it back, on every
flow-mod the switch models (ADD and MODIFY): the one place a pipeline contract plugs in.
"""

from __future__ import annotations

import ipaddress
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller.flows import Flow, Group, Meter, flow_from_stats, group_from_desc, meter_from_config
from controller.flows.nxcontroller import NXActionControllerMeter
from tests.ofwire import (
    NX_VENDOR_ID,
    FlowMod,
    Match,
    Request,
    WireError,
    flow_stats_body,
    group_desc_body,
    group_stats_body,
    meter_config_body,
    multipart_reply,
    parse_msg,
    to_wire,
)

# Open vSwitch's numbers (include/openflow/nicira-ext.h, lib/packets.h), not the controller's.
NXT_CT_FLUSH_ZONE = 29
NX_CT_F_COMMIT, NX_CT_F_FORCE = 1 << 0, 1 << 1
NX_NAT_F_SRC, NX_NAT_F_DST = 1 << 0, 1 << 1
CT_NEW, CT_EST, CT_RPL, CT_TRK = 0x01, 0x02, 0x08, 0x20
CT_SNAT, CT_DNAT = 0x40, 0x80
ALL_ONES = (1 << 128) - 1
IP_TYPES = (0x0800, 0x86DD)
NAT_ADDRESSES_TRIED = 256


class FakeSwitchError(WireError):
    """The controller sent something a careful switch refuses."""


def to_signed64(n: int) -> int:
    """An unsigned difference read as int64_t, as Open vSwitch compares generation ids."""
    n &= (1 << 64) - 1
    return n - (1 << 64) if n >> 63 else n


def _ct_key(pkt: dict) -> tuple:
    """A connection's 5-tuple, whatever the family and transport."""
    v = "ipv4" if "ipv4_src" in pkt else "ipv6"
    proto = {6: "tcp", 17: "udp", 132: "sctp"}.get(pkt.get("ip_proto"), "")
    return (
        pkt.get(f"{v}_src"),
        pkt.get(f"{v}_dst"),
        pkt.get("ip_proto"),
        pkt.get(f"{proto}_src"),
        pkt.get(f"{proto}_dst"),
    )


def _reverse(key: tuple) -> tuple:
    src, dst, proto, sport, dport = key
    return (dst, src, proto, dport, sport)


@dataclass(frozen=True)
class Nat:
    """A nat() as decoded from NXActionNAT: NX_NAT_F_SRC or NX_NAT_F_DST (0: apply what the
    connection has), an address range and a port range (absent maxima equal the minima, as in
    Open vSwitch's decode_NXAST_RAW_NAT)."""

    kind: int
    addr_min: str | None
    addr_max: str | None
    port_min: int | None
    port_max: int | None

    @classmethod
    def of(cls, a) -> Nat:
        lo = a.range_ipv4_min or a.range_ipv6_min or None
        hi = a.range_ipv4_max or a.range_ipv6_max or lo
        pmax = a.range_proto_max if a.range_proto_max is not None else a.range_proto_min
        kind = a.flags & (NX_NAT_F_SRC | NX_NAT_F_DST)
        if kind == NX_NAT_F_SRC | NX_NAT_F_DST:
            raise FakeSwitchError(f"{a}: nat takes src or dst, not both")
        return cls(kind if lo is not None else 0, lo, hi, a.range_proto_min, pmax)

    def addresses(self) -> list[str]:
        lo, hi = ipaddress.ip_address(self.addr_min), ipaddress.ip_address(self.addr_max)
        if hi < lo:
            raise FakeSwitchError(f"nat range {lo}-{hi} is empty")
        n = min(int(hi) - int(lo) + 1, NAT_ADDRESSES_TRIED)
        return [str(lo + i) for i in range(n)]


@dataclass
class Connection:
    """A committed connection as Open vSwitch's conntrack keeps it (lib/conntrack.c): the key
    of its original direction as first seen, the key its replies carry, its mark and the one
    translation it was committed with (NX_NAT_F_SRC or NX_NAT_F_DST). Untranslated, the reply
    key is the original reversed; packets are translated to the reverse of the other
    direction's key."""

    orig: tuple
    reply: tuple
    mark: int = 0
    nat: int = 0


_PREREQS: dict[str, tuple[str, tuple[int, ...]]] = {
    "ipv4_src": ("eth_type", (0x0800,)),
    "ipv4_dst": ("eth_type", (0x0800,)),
    "ipv6_src": ("eth_type", (0x86DD,)),
    "ipv6_dst": ("eth_type", (0x86DD,)),
    "arp_op": ("eth_type", (0x0806,)),
    "arp_spa": ("eth_type", (0x0806,)),
    "arp_tpa": ("eth_type", (0x0806,)),
    "arp_sha": ("eth_type", (0x0806,)),
    "arp_tha": ("eth_type", (0x0806,)),
    "ip_proto": ("eth_type", (0x0800, 0x86DD)),
    "ip_dscp": ("eth_type", (0x0800, 0x86DD)),
    "tcp_src": ("ip_proto", (6,)),
    "tcp_dst": ("ip_proto", (6,)),
    "udp_src": ("ip_proto", (17,)),
    "udp_dst": ("ip_proto", (17,)),
    "sctp_src": ("ip_proto", (132,)),
    "sctp_dst": ("ip_proto", (132,)),
    "icmpv4_type": ("ip_proto", (1,)),
    "icmpv4_code": ("ip_proto", (1,)),
    "icmpv6_type": ("ip_proto", (58,)),
    "icmpv6_code": ("ip_proto", (58,)),
    "tcp_flags": ("ip_proto", (6,)),
}
_SPECIAL_PORTS = {
    ofp.OFPP_CONTROLLER,
    ofp.OFPP_IN_PORT,
    ofp.OFPP_ALL,
    ofp.OFPP_FLOOD,
    ofp.OFPP_LOCAL,
    ofp.OFPP_TABLE,
}
_HASH_FIELDS = (
    "eth_src",
    "eth_dst",
    "ipv4_src",
    "ipv4_dst",
    "ipv6_src",
    "ipv6_dst",
    "ip_proto",
    "tcp_src",
    "tcp_dst",
    "udp_src",
    "udp_dst",
)


@lru_cache(maxsize=65536)
def _text_int(text: str) -> int:
    if text.count(":") == 5 and len(text) == 17:
        return int(text.replace(":", ""), 16)
    return int(ipaddress.ip_address(text))


def to_int(value: Any) -> int:
    """A packet field's value (MAC, IPv4 or IPv6 text, or an int) as an integer."""
    return value if isinstance(value, int) else _text_int(str(value))


def _mask(oxm) -> int:
    return ALL_ONES if oxm.mask is None else oxm.mask


def overlaps(m1: Match, m2: Match) -> bool:
    """Could one packet match both? A field only one of them matches is a wildcard in the
    other, so they differ only where both match a field and their masks share a differing bit
    (Open vSwitch's classifier_rule_overlaps)."""
    for name in m1.keys() & m2.keys():
        a, b = m1[name], m2[name]
        if (a.value ^ b.value) & _mask(a) & _mask(b):
            return False
    return True


def covers(filt: Match, entry: Match) -> bool:
    """Does a non-strict filter select this entry? Each filter field must be at least as wide."""
    for name, f in filt.items():
        e = entry.get(name)
        if e is None or _mask(f) & ~_mask(e) or (e.value ^ f.value) & _mask(f):
            return False
    return True


def packet_matches(match: Match, pkt: dict) -> bool:
    for name, oxm in match.items():
        if name in pkt:
            value = to_int(pkt[name])
        elif name == "vlan_vid":
            value = ofp.OFPVID_NONE
        else:
            return False
        if (value & _mask(oxm)) != oxm.value:
            return False
    return True


def _actions_of(instructions: list) -> list:
    """Every action of apply- and write-actions instructions, nested ones (in ct) not."""
    return [
        a
        for i in instructions
        if isinstance(i, parser.OFPInstructionActions) and i.type != ofp.OFPIT_CLEAR_ACTIONS
        for a in i.actions
    ]


@dataclass(eq=False)
class FlowEntry:
    """One flow entry as the switch decoded it: its own match model and os-ken's instruction
    objects parsed from the flow-mod's bytes."""

    table: int
    priority: int
    match: Match
    instructions: list
    instruction_bytes: bytes
    cookie: int = 0
    idle_timeout: int = 0
    hard_timeout: int = 0
    flags: int = 0
    packets: int = 0
    _flow: Flow | None = field(default=None, repr=False)

    def stats_body(self) -> bytes:
        return flow_stats_body(
            self.table,
            self.priority,
            self.idle_timeout,
            self.hard_timeout,
            self.flags,
            self.cookie,
            self.packets,
            self.match,
            self.instructions,
        )

    @property
    def flow(self) -> Flow:
        """The entry as the controller reads it back: its flow-stats bytes, parsed by os-ken
        and decoded by controller.flows.flow_from_stats (as controller/shim.py does)."""
        if self._flow is None:
            body = self.stats_body()
            self._flow = flow_from_stats(parser.OFPFlowStats.parser(body, 0))
        return self._flow


@dataclass(frozen=True)
class GroupEntry:
    """A group as held; a modify replaces it, counters and age with it, as Open vSwitch does."""

    group_id: int
    type: int  # OFPGT_*
    buckets: tuple  # os-ken OFPBucket objects as parsed
    packets: list[int] = field(default_factory=list)  # per bucket, in order
    added_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class MeterEntry:
    meter_id: int
    flags: int  # OFPMF_*
    bands: tuple  # os-ken band objects as parsed


@dataclass
class LookupResult:
    outputs: list[tuple[int, dict]] = field(default_factory=list)  # (port, packet as sent)
    to_controller: list[tuple[int, int, dict]] = field(default_factory=list)  # (table, cookie, pkt)
    matched: list[FlowEntry] = field(default_factory=list)

    def ports(self) -> list[int]:
        return [p for p, _ in self.outputs]


def _check_add_or_modify(kind: str, number: int, exists: bool, adding: bool) -> None:
    """Adding what exists, or modifying what does not, is an error for groups and meters."""
    if adding and exists:
        raise FakeSwitchError(f"{kind} {number} already exists")
    if not adding and not exists:
        raise FakeSwitchError(f"{kind} {number} does not exist")


def _action_key(action) -> tuple:
    """Where a write-actions action goes in the action set: one per type, set_field per field."""
    if isinstance(action, parser.OFPActionSetField):
        return ("set_field", action.key)
    return (type(action).__name__,)


class FakeSwitch:
    def __init__(
        self,
        dpid: int = 1,
        n_tables: int = 5,
        ports: dict[int, bool] | None = None,
        hw_prefix: str = "02:00:00",
    ) -> None:
        self.dpid = dpid
        self.n_tables = n_tables
        self.ports: dict[int, bool] = dict(ports or {})
        self.hw_prefix = hw_prefix
        self.tables: list[list[FlowEntry]] = [[] for _ in range(n_tables)]
        self.group_table: dict[int, GroupEntry] = {}
        self.meter_table: dict[int, MeterEntry] = {}
        self.received: list = []  # the controller's messages, as handed over
        self.connections: dict[tuple, Connection] = {}  # (zone, 5-tuple) committed by ct
        self.zone_limits: dict[int, int] = {}  # zone -> most connections (dpctl/ct-set-limits)
        self.ct_flushes = 0
        self.takes_bundles = True
        self._bundle: list | None = None
        self.commits = 0
        self.errors: list[tuple[int, int, int]] = []  # (xid, type, code) not yet reported
        self.packet_outs: list = []  # OFPPacketOut as decoded from the bytes
        self.contract: Callable[[Flow], None] | None = None
        self.roles: dict[str, int] = {}  # controller -> role (apply_from)
        self.election_id: int | None = None  # the newest generation id seen

    # --- messages in ---------------------------------------------------------------------------

    def apply(self, msgs) -> list:
        """Take the controller's messages, each as the bytes it would put on the wire; the
        messages as this switch decoded them."""
        decoded = []
        for msg in msgs:
            self.received.append(msg)
            try:
                decoded.append(parse_msg(to_wire(msg)))
                self._apply_one(decoded[-1], msg.xid)
            except FakeSwitchError:
                raise
            except WireError as e:  # bytes Open vSwitch would not decode
                raise FakeSwitchError(f"{type(msg).__name__}: {e}") from e
        return decoded

    # --- several controllers: roles as Open vSwitch keeps them (ofproto/ofproto.c) ----------

    def apply_from(self, controller: str, msgs) -> list[tuple[int, int, int]]:
        """Messages from one of several controllers (named by the test). As Open vSwitch does
        (handle_role_request, ofconn_get_role): a MASTER or SLAVE request whose generation id
        is older than the newest seen (compared as a signed 64-bit difference) fails with
        OFPRRFC_STALE; a new MASTER turns the old master into a slave; every write (flow,
        group, meter mod, packet-out, bundle) from a slave fails with OFPBRC_IS_SLAVE; reads
        and async config pass. Errors go to `errors` as (xid, type, code); the role replies
        are returned as (xid, role, generation id). Connections start EQUAL."""
        replies = []
        for msg in msgs:
            role = self.roles.setdefault(controller, ofp.OFPCR_ROLE_EQUAL)
            if isinstance(msg, parser.OFPRoleRequest):
                if msg.role in (ofp.OFPCR_ROLE_MASTER, ofp.OFPCR_ROLE_SLAVE):
                    newest = self.election_id
                    if newest is not None and to_signed64(msg.generation_id - newest) < 0:
                        self.errors.append(
                            (msg.xid, ofp.OFPET_ROLE_REQUEST_FAILED, ofp.OFPRRFC_STALE)
                        )
                        continue
                    self.election_id = msg.generation_id
                if msg.role == ofp.OFPCR_ROLE_MASTER:
                    for other, r in self.roles.items():
                        if r == ofp.OFPCR_ROLE_MASTER:
                            self.roles[other] = ofp.OFPCR_ROLE_SLAVE
                if msg.role != ofp.OFPCR_ROLE_NOCHANGE:
                    self.roles[controller] = msg.role
                replies.append((msg.xid, self.roles[controller], self.election_id or 0))
            elif isinstance(msg, parser.OFPSetAsync):
                pass
            elif role == ofp.OFPCR_ROLE_SLAVE and not isinstance(msg, parser.OFPMultipartRequest):
                if not isinstance(msg, parser.OFPBarrierRequest):
                    self.errors.append((msg.xid, ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_IS_SLAVE))
            else:
                self.apply([msg])
        return replies

    def _bundle_msg(self, msg, xid) -> None:
        """OpenFlow 1.3 bundles (ONF EXT-230): collect, then apply all at once, or nothing if
        any fails."""
        if not self.takes_bundles:
            self.errors.append((xid, ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_EXPERIMENTER))
            return
        if isinstance(msg, parser.ONFBundleAddMsg):
            if self._bundle is None:
                raise FakeSwitchError("bundle add without an open bundle")
            self._bundle.append(msg.message)
        elif msg.type == ofp.ONF_BCT_OPEN_REQUEST:
            self._bundle = []
        elif msg.type == ofp.ONF_BCT_COMMIT_REQUEST:
            saved = ([list(t) for t in self.tables], dict(self.group_table), dict(self.meter_table))
            pending, self._bundle = self._bundle or [], None
            errors = len(self.errors)
            try:
                for inner in pending:
                    self._apply_one(inner, xid)
            except FakeSwitchError:
                self.tables, self.group_table, self.meter_table = saved
                raise
            if len(self.errors) > errors:  # a refused message fails the whole bundle
                self.tables, self.group_table, self.meter_table = saved
                return
            self.commits += 1
        else:
            self._bundle = None

    def _apply_one(self, msg, xid) -> None:
        if isinstance(msg, (parser.ONFBundleCtrlMsg, parser.ONFBundleAddMsg)):
            self._bundle_msg(msg, xid)
        elif isinstance(msg, FlowMod):
            self._flow_mod(msg, xid)
        elif isinstance(msg, parser.OFPGroupMod):
            self._group_mod(msg)
        elif isinstance(msg, parser.OFPMeterMod):
            self._meter_mod(msg)
        elif isinstance(msg, parser.OFPPacketOut):
            self.packet_outs.append(msg)
        elif (
            isinstance(msg, parser.OFPExperimenter)
            and msg.experimenter == NX_VENDOR_ID
            and msg.exp_type == NXT_CT_FLUSH_ZONE
        ):
            (zone,) = struct.unpack("!6xH", msg.data)
            for k in [k for k in self.connections if k[0] == zone]:
                del self.connections[k]  # in place: a fake network's switches share it
            self.ct_flushes += 1
        elif isinstance(msg, Request):
            pass  # answered by the network (tests/fakenet.py), from the replies below
        else:
            raise FakeSwitchError(f"unexpected message {type(msg).__name__}")

    def _decode_flow(self, msg: FlowMod) -> FlowEntry:
        """The entry a flow-mod describes, its match checked as Open vSwitch checks it."""
        if not 0 <= msg.table_id < self.n_tables and msg.table_id != ofp.OFPTT_ALL:
            raise FakeSwitchError(f"table {msg.table_id} does not exist")
        for name in msg.match:
            if name in _PREREQS:
                need, values = _PREREQS[name]
                have = msg.match.get(need)
                if have is None or have.mask is not None or have.value not in values:
                    raise FakeSwitchError(f"{name} needs {need} in {values}, match is {msg.match}")
        return FlowEntry(
            msg.table_id,
            msg.priority,
            msg.match,
            msg.instructions,
            msg.instruction_bytes,
            msg.cookie,
            msg.idle_timeout,
            msg.hard_timeout,
            msg.flags,
        )

    def _admit(self, entry: FlowEntry) -> None:
        """Every check a flow to be installed (ADD, MODIFY) passes: the switch's own, then the
        pipeline contract, if one is set."""
        kinds = [(type(i).__name__, getattr(i, "type", None)) for i in entry.instructions]
        if len(kinds) != len(set(kinds)):
            raise FakeSwitchError(f"repeated instruction in {entry.instructions}")
        for ins in entry.instructions:
            if isinstance(ins, parser.OFPInstructionActions):
                if ins.type == ofp.OFPIT_APPLY_ACTIONS and not ins.actions:
                    raise FakeSwitchError("empty apply-actions")
                for action in ins.actions:
                    self._check_action(action, entry.match)
            elif isinstance(ins, parser.OFPInstructionGotoTable):
                if not entry.table < ins.table_id < self.n_tables:
                    raise FakeSwitchError(f"goto {ins.table_id} from table {entry.table}")
            elif (
                isinstance(ins, parser.OFPInstructionMeter) and ins.meter_id not in self.meter_table
            ):
                raise FakeSwitchError(f"meter {ins.meter_id} does not exist")
        if self.contract is not None:
            self.contract(entry.flow)

    def _check_action(self, action, match: Match | None) -> None:
        """One action as Open vSwitch checks it; `match` is the flow's (None in a bucket)."""
        if isinstance(action, parser.OFPActionGroup) and action.group_id not in self.group_table:
            raise FakeSwitchError(f"group {action.group_id} does not exist")
        if (
            isinstance(action, NXActionControllerMeter)
            and action.meter_id is not None
            and action.meter_id not in self.meter_table
        ):
            raise FakeSwitchError(f"meter {action.meter_id} does not exist")
        if (
            isinstance(action, parser.OFPActionOutput)
            and action.port not in self.ports
            and action.port not in _SPECIAL_PORTS
        ):
            raise FakeSwitchError(f"output to unknown port {action.port}")
        if (
            isinstance(action, parser.OFPActionSetField)
            and action.key == "vlan_vid"
            and not action.value & ofp.OFPVID_PRESENT
        ):
            raise FakeSwitchError(f"{action}: vlan_vid without OFPVID_PRESENT")
        for nested in action.actions if isinstance(action, parser.NXActionCT) else ():
            if isinstance(nested, parser.NXActionNAT):
                Nat.of(nested)
                # Flows only: Open vSwitch checks a bucket's actions against no match.
                eth_type = match.get("eth_type") if match is not None else None
                if match is not None and (eth_type is None or eth_type.value not in IP_TYPES):
                    raise FakeSwitchError(f"ct(nat) in a flow matching no IP: {match}")

    def _flow_mod(self, msg, xid) -> None:
        cmd = msg.command
        if cmd == ofp.OFPFC_ADD:
            self._add(self._decode_flow(msg), xid)
        elif cmd in (ofp.OFPFC_MODIFY, ofp.OFPFC_MODIFY_STRICT):
            new = self._decode_flow(msg)
            self._admit(new)
            hits = self._select(msg, new.match, strict=cmd == ofp.OFPFC_MODIFY_STRICT)
            if not hits and cmd == ofp.OFPFC_MODIFY_STRICT:
                raise FakeSwitchError(f"MODIFY_STRICT of a flow that is not there: {new}")
            for table, i in hits:
                # OpenFlow 1.3 (and Open vSwitch): instructions change; cookie, timeouts,
                # flags and counters stay.
                old = self.tables[table][i]
                self.tables[table][i] = replace(
                    old,
                    instructions=new.instructions,
                    instruction_bytes=new.instruction_bytes,
                    _flow=None,
                )
        elif cmd in (ofp.OFPFC_DELETE, ofp.OFPFC_DELETE_STRICT):
            match = self._decode_flow(msg).match
            hits = self._select(msg, match, strict=cmd == ofp.OFPFC_DELETE_STRICT)
            for table, i in reversed(hits):
                del self.tables[table][i]
        else:
            raise FakeSwitchError(f"unknown flow-mod command {cmd}")

    def _add(self, new: FlowEntry, xid) -> None:
        if new.table == ofp.OFPTT_ALL:
            raise FakeSwitchError("flow add to OFPTT_ALL")
        self._admit(new)
        table = self.tables[new.table]
        same = [
            (i, e)
            for i, e in enumerate(table)
            if e.priority == new.priority and overlaps(e.match, new.match)
        ]
        if new.flags & ofp.OFPFF_CHECK_OVERLAP and same:
            self.errors.append((xid, ofp.OFPET_FLOW_MOD_FAILED, ofp.OFPFMFC_OVERLAP))
            return
        for i, entry in same:
            if entry.match == new.match:
                table[i] = new
                return
        for _, entry in same:
            if entry.instruction_bytes != new.instruction_bytes:
                raise FakeSwitchError(
                    f"{new.flow} overlaps {entry.flow} at equal priority with other instructions"
                )
        table.append(new)
        table.sort(key=lambda e: -e.priority)

    def _select(self, msg, match: Match, strict: bool) -> list[tuple[int, int]]:
        """(table, index) of the entries a MODIFY or DELETE names, in table order."""
        tables = range(self.n_tables) if msg.table_id == ofp.OFPTT_ALL else [msg.table_id]
        deleting = msg.command in (ofp.OFPFC_DELETE, ofp.OFPFC_DELETE_STRICT)
        hits = []
        for t in tables:
            for i, e in enumerate(self.tables[t]):
                if strict:
                    if e.priority != msg.priority or e.match != match:
                        continue
                elif not covers(match, e.match):
                    continue
                if deleting and not self._uses(e, msg.out_port, msg.out_group):
                    continue
                if (e.cookie ^ msg.cookie) & msg.cookie_mask:
                    continue
                hits.append((t, i))
        return hits

    @staticmethod
    def _uses(e: FlowEntry, out_port: int, out_group: int) -> bool:
        actions = _actions_of(e.instructions)
        if out_port != ofp.OFPP_ANY and not any(
            isinstance(a, parser.OFPActionOutput) and a.port == out_port for a in actions
        ):
            return False
        return out_group == ofp.OFPG_ANY or any(
            isinstance(a, parser.OFPActionGroup) and a.group_id == out_group for a in actions
        )

    @staticmethod
    def _metered(e: FlowEntry, meter_id: int) -> bool:
        return any(
            isinstance(i, parser.OFPInstructionMeter) and i.meter_id == meter_id
            for i in e.instructions
        )

    def _group_mod(self, msg) -> None:
        if msg.command == ofp.OFPGC_DELETE:
            ids = list(self.group_table) if msg.group_id == ofp.OFPG_ALL else [msg.group_id]
            for gid in ids:
                if self.group_table.pop(gid, None) is not None:
                    for table in self.tables:
                        table[:] = [e for e in table if not self._uses(e, ofp.OFPP_ANY, gid)]
            return
        _check_add_or_modify(
            "group", msg.group_id, msg.group_id in self.group_table, msg.command == ofp.OFPGC_ADD
        )
        for bucket in msg.buckets:
            for action in bucket.actions:
                self._check_action(action, None)
            if (
                msg.type == ofp.OFPGT_FF
                and bucket.watch_port == ofp.OFPP_ANY
                and bucket.watch_group == ofp.OFPG_ANY
            ):
                raise FakeSwitchError("fast-failover bucket watches no port or group")
        self.group_table[msg.group_id] = GroupEntry(
            msg.group_id, msg.type, tuple(msg.buckets), [0] * len(msg.buckets)
        )

    def _meter_mod(self, msg) -> None:
        if msg.command == ofp.OFPMC_DELETE:
            ids = list(self.meter_table) if msg.meter_id == ofp.OFPM_ALL else [msg.meter_id]
            for mid in ids:  # Open vSwitch deletes the flows that use it (ofproto.c)
                if self.meter_table.pop(mid, None) is not None:
                    for table in self.tables:
                        table[:] = [e for e in table if not self._metered(e, mid)]
            return
        _check_add_or_modify(
            "meter", msg.meter_id, msg.meter_id in self.meter_table, msg.command == ofp.OFPMC_ADD
        )
        if len(msg.bands) != 1 or not msg.bands[0].rate:
            raise FakeSwitchError(f"meter {msg.meter_id} needs one band with a rate")
        if not msg.flags & (ofp.OFPMF_KBPS | ofp.OFPMF_PKTPS):
            raise FakeSwitchError(f"meter {msg.meter_id} has no unit (kbps or pktps)")
        self.meter_table[msg.meter_id] = MeterEntry(msg.meter_id, msg.flags, tuple(msg.bands))

    # --- what a switch reports, as bytes the controller's decoder reads ------------------------

    def flow_stats_reply(self, xid=0, table=ofp.OFPTT_ALL, cookie=0, cookie_mask=0):
        """An OFPFlowStatsReply of the entries selected, as os-ken parses the bytes."""
        bodies = [
            e.stats_body()
            for t in self.tables
            for e in t
            if table in (ofp.OFPTT_ALL, e.table) and not (e.cookie ^ cookie) & cookie_mask
        ]
        return multipart_reply(ofp.OFPMP_FLOW, xid, bodies)

    def group_desc_reply(self, xid=0):
        bodies = [
            group_desc_body(g.type, g.group_id, list(g.buckets)) for g in self.group_table.values()
        ]
        return multipart_reply(ofp.OFPMP_GROUP_DESC, xid, bodies)

    def group_stats_reply(self, xid=0):
        """An OFPGroupStatsReply: each group's packets per bucket and its age."""
        bodies = [
            group_stats_body(g.group_id, g.packets, time.monotonic() - g.added_at)
            for g in self.group_table.values()
        ]
        return multipart_reply(ofp.OFPMP_GROUP, xid, bodies)

    def meter_config_reply(self, xid=0):
        bodies = [
            meter_config_body(m.flags, m.meter_id, list(m.bands)) for m in self.meter_table.values()
        ]
        return multipart_reply(ofp.OFPMP_METER_CONFIG, xid, bodies)

    def flow_stats(self, table: int = ofp.OFPTT_ALL, cookie: int = 0, cookie_mask: int = 0):
        """The tables as OFPFlowStats entries with their packet counts, as a switch reports them."""
        return self.flow_stats_reply(0, table, cookie, cookie_mask).body

    def flows(self) -> list[Flow]:
        return [e.flow for table in self.tables for e in table]

    def meter_configs(self) -> list[Meter]:
        return [meter_from_config(c) for c in self.meter_config_reply().body]

    def group_descs(self) -> list[Group]:
        return [group_from_desc(d) for d in self.group_desc_reply().body]

    @property
    def groups(self) -> dict[int, Group]:
        return {g.group_id: g for g in self.group_descs()}

    @property
    def meters(self) -> dict[int, Meter]:
        return {m.meter_id: m for m in self.meter_configs()}

    def hw_addr(self, port: int) -> str:
        return f"{self.hw_prefix}:{self.dpid & 0xFF:02x}:00:{port & 0xFF:02x}"

    def flow_count(self, table: int | None = None) -> int:
        if table is None:
            return sum(len(t) for t in self.tables)
        return len(self.tables[table])

    # --- the data plane ------------------------------------------------------------------------

    def lookup(self, pkt: dict) -> LookupResult:
        """Where a packet goes: walk the tables from 0 as an OpenFlow 1.3 switch would."""
        result = LookupResult()
        self._walk({"metadata": 0, "ct_state": 0, "ct_zone": 0, **pkt}, 0, result)  # all start at 0
        return result

    def execute(self, pkt: dict, actions: list) -> LookupResult:
        """A packet-out: os-ken `actions` (as decoded) done on the packet, which arrived on
        pkt["in_port"]."""
        result = LookupResult()
        pkt = {"metadata": 0, "ct_state": 0, "ct_zone": 0, **pkt}
        for action in actions:
            if (
                isinstance(action, parser.OFPActionGroup)
                and action.group_id not in self.group_table
            ):
                raise FakeSwitchError(
                    f"packet-out to group {action.group_id}, which does not exist"
                )
            if self._act(action, pkt, result, 0, 0):
                break
        return result

    def _walk(self, pkt: dict, table: int | None, result: LookupResult) -> None:
        action_set: dict[tuple, Any] = {}
        while table is not None:
            entry = next((e for e in self.tables[table] if packet_matches(e.match, pkt)), None)
            if entry is None:
                return  # no table-miss entry: dropped
            entry.packets += 1
            result.matched.append(entry)
            next_table = None
            for ins in entry.instructions:
                if isinstance(ins, parser.OFPInstructionActions):
                    if ins.type == ofp.OFPIT_APPLY_ACTIONS:
                        for action in ins.actions:
                            if self._act(action, pkt, result, table, entry.cookie):
                                return  # recirculated: the copy went on from there
                    elif ins.type == ofp.OFPIT_WRITE_ACTIONS:
                        for action in ins.actions:
                            action_set[_action_key(action)] = action
                    else:
                        action_set.clear()
                elif isinstance(ins, parser.OFPInstructionWriteMetadata):
                    meta = pkt.get("metadata", 0)
                    pkt["metadata"] = (meta & ~ins.metadata_mask) | (
                        ins.metadata & ins.metadata_mask
                    )
                elif isinstance(ins, parser.OFPInstructionGotoTable):
                    next_table = ins.table_id
            if next_table is None:
                for action in action_set.values():
                    self._act(action, pkt, result, table, entry.cookie)
            table = next_table

    def _conntrack(self, action, pkt: dict, result: LookupResult) -> bool:
        """ct(): look the packet up (and, with `nat`, translate it as its connection says),
        commit it with its mark and translation, and recirculate with ct_state set.

        As Open vSwitch's userspace conntrack does (lib/conntrack.c, process_one): ct_state
        starts over in each zone; a packet already translated in this zone is looked up by
        its key reversed; a new connection committed with nat(src=...) or nat(dst=...) gets a
        reply key that no other connection of the zone has, keeping the source port if it
        can (nat_get_unique_tuple); a nat with an address on an existing connection applies
        the translation the connection already has."""
        if action.zone_src:
            raise FakeSwitchError(f"{action}: a zone from a field is not modelled")
        zone, table, flags = action.zone_ofs_nbits, action.recirc_table, action.flags
        nat = next((Nat.of(a) for a in action.actions if isinstance(a, parser.NXActionNAT)), None)
        mark = next(
            (
                a.value
                for a in action.actions
                if isinstance(a, parser.OFPActionSetField) and a.key == "ct_mark"
            ),
            None,
        )
        natted = pkt.get("ct_zone") == zone and pkt.get("ct_state", 0) & (CT_SNAT | CT_DNAT)
        state, conn = self._ct_lookup(zone, _ct_key(pkt), bool(natted))
        if natted:
            state |= pkt["ct_state"] & (CT_SNAT | CT_DNAT)
        elif conn is not None and nat is not None:
            state |= self._translate(pkt, conn, reply=bool(state & CT_RPL))
        if flags & NX_CT_F_FORCE and state & CT_RPL:  # commit,force: the reply becomes original
            for k in [k for k, c in self.connections.items() if c is conn]:
                del self.connections[k]
            state, conn = CT_TRK | CT_NEW, None
        if flags & NX_CT_F_COMMIT and not state & CT_RPL and conn is None:
            conn = self._commit(zone, _ct_key(pkt), nat)
            if conn is not None:  # else no free reply key: new, untranslated, not committed
                state |= self._translate(pkt, conn, reply=False)
        if flags & NX_CT_F_COMMIT and conn is not None and mark is not None:
            conn.mark = mark
        pkt["ct_mark"] = conn.mark if conn is not None else 0
        if table == ofp.OFPTT_ALL:
            pkt["ct_state"], pkt["ct_zone"] = state, zone
            return False
        self._walk({**pkt, "ct_state": state, "ct_zone": zone}, table, result)
        return True

    def _ct_lookup(
        self, zone: int, key: tuple, natted: bool = False
    ) -> tuple[int, Connection | None]:
        if natted:  # already translated here: its key reversed is the other direction's
            state, conn = self._ct_lookup(zone, _reverse(key))
            return (state ^ CT_RPL, conn) if conn is not None else (state, None)
        conn = self.connections.get((zone, key))
        if conn is not None:
            return CT_TRK | CT_EST, conn
        for (z, _), c in self.connections.items():
            if z == zone and key == c.reply:
                return CT_TRK | CT_EST | CT_RPL, c
        return CT_TRK | CT_NEW, None

    def _commit(self, zone: int, key: tuple, nat: Nat | None) -> Connection | None:
        """A new connection in `zone`; with nat(src=...) or nat(dst=...), its reply key is the
        translation's: the first address of the range, and the first port of the port range
        (a source NAT keeps the source port when the range holds it) with a free key. Without
        a source port range, the original source port moves along its class (1-511, 600-1023
        or 1024-65535, at most 128 tries) if another connection has that key. None when no
        key is free, or when the zone holds its limit (ovs-appctl dpctl/ct-set-limits; Open
        vSwitch refuses the commit silently: nothing is committed)."""
        limit = self.zone_limits.get(zone)
        if limit is not None and sum(z == zone for z, _ in self.connections) >= limit:
            return None
        reply = list(_reverse(key))
        kind = nat.kind if nat is not None else 0
        if kind:
            side = 1 if kind & NX_NAT_F_SRC else 0  # the reply's destination, or its source
            taken = {k for (z, o), c in self.connections.items() if z == zone for k in (o, c.reply)}
            if kind & NX_NAT_F_DST and nat.port_min is not None:
                reply[3] = nat.port_min
            ports = self._nat_ports(reply[4], nat if kind & NX_NAT_F_SRC else None)
            for address in nat.addresses():
                reply[side] = address
                for port in ports:
                    reply[4] = port
                    if tuple(reply) not in taken:
                        break
                else:
                    continue
                break
            else:
                return None
        conn = Connection(key, tuple(reply), nat=kind)
        self.connections[(zone, key)] = conn
        return conn

    @staticmethod
    def _nat_ports(start: int | None, snat: Nat | None) -> list[int | None]:
        """The reply destination ports to try, in order: a source NAT's port range from the
        original source port (or the range's first), else the original source port along its
        class; just None for a packet without ports (ICMP)."""
        if start is None:
            return [None]
        if snat is not None and snat.port_min is not None:
            lo, hi = snat.port_min, snat.port_max
            start = start if lo <= start <= hi else lo
        elif start < 512:
            lo, hi = 1, 511
        else:
            lo, hi = (600, 1023) if start < 1024 else (1024, 65535)
        return [lo + (start - lo + i) % (hi - lo + 1) for i in range(min(128, hi - lo + 1))]

    @staticmethod
    def _translate(pkt: dict, conn: Connection, reply: bool) -> int:
        """Rewrite the packet to the reverse of the other direction's key (nat_packet);
        the ct_state bit that says so (+snat or +dnat), 0 for an untranslated connection."""
        if not conn.nat:
            return 0
        v = "ipv4" if "ipv4_src" in pkt else "ipv6"
        proto = {6: "tcp", 17: "udp", 132: "sctp"}.get(pkt.get("ip_proto"), "")
        src, dst, _, sport, dport = _reverse(conn.orig if reply else conn.reply)
        pkt[f"{v}_src"], pkt[f"{v}_dst"] = src, dst
        if proto:
            pkt[f"{proto}_src"], pkt[f"{proto}_dst"] = sport, dport
        snat = bool(conn.nat & NX_NAT_F_SRC) != reply  # un-translating a DNAT rewrites the source
        return CT_SNAT if snat else CT_DNAT

    def _act(self, action, pkt: dict, result: LookupResult, table: int, cookie: int) -> bool:
        """Do one (os-ken, decoded) action; True when it recirculated the packet."""
        if isinstance(action, parser.NXActionCT):
            return self._conntrack(action, pkt, result)
        if isinstance(action, NXActionControllerMeter):  # a copy; the packet goes on
            result.to_controller.append((table, cookie, dict(pkt)))
        elif isinstance(action, parser.OFPActionOutput):
            port = action.port
            if port == ofp.OFPP_CONTROLLER:
                result.to_controller.append((table, cookie, dict(pkt)))
            elif port == ofp.OFPP_IN_PORT:
                result.outputs.append((pkt["in_port"], dict(pkt)))
            elif port in (ofp.OFPP_ALL, ofp.OFPP_FLOOD):
                for p, live in sorted(self.ports.items()):
                    if live and p != pkt.get("in_port"):
                        result.outputs.append((p, dict(pkt)))
            elif port != pkt.get("in_port") and self.ports.get(port):
                result.outputs.append((port, dict(pkt)))
        elif isinstance(action, parser.OFPActionSetField):
            pkt[action.key] = action.value
        elif isinstance(action, parser.OFPActionGroup):
            self._group(action.group_id, pkt, result, table, cookie)
        elif isinstance(action, parser.OFPActionPopVlan):
            inner = pkt.pop("_inner_vlans", ())
            pkt.pop("vlan_vid", None)
            if inner:
                pkt["vlan_vid"] = inner[0]
                if inner[1:]:
                    pkt["_inner_vlans"] = inner[1:]
        elif isinstance(action, parser.OFPActionPushVlan):
            if "vlan_vid" in pkt:
                pkt["_inner_vlans"] = (pkt["vlan_vid"], *pkt.get("_inner_vlans", ()))
            pkt["vlan_vid"] = ofp.OFPVID_PRESENT  # VID 0 until a set_field names it
        else:
            raise FakeSwitchError(f"action {action} is not modelled")
        return False

    def _bucket_live(self, bucket) -> bool:
        """A bucket that watches a port or group is live while they are; one that watches
        nothing always is (fast-failover buckets must watch something: checked on add)."""
        if bucket.watch_port != ofp.OFPP_ANY and not self.ports.get(bucket.watch_port):
            return False
        if bucket.watch_group != ofp.OFPG_ANY:
            watched = self.group_table[bucket.watch_group]
            return any(self._bucket_live(b) for b in watched.buckets)
        return True

    def _group(self, gid: int, pkt: dict, result: LookupResult, table: int, cookie: int):
        g = self.group_table[gid]
        if g.type in (ofp.OFPGT_ALL, ofp.OFPGT_INDIRECT):
            chosen = list(g.buckets)
        elif g.type == ofp.OFPGT_SELECT:  # in proportion to the weights of the live buckets
            live = [b for b in g.buckets if self._bucket_live(b)]
            total = sum(b.weight for b in live)
            chosen = []
            if total:
                key = repr([(f, pkt.get(f)) for f in _HASH_FIELDS]).encode()
                point = zlib.crc32(key) % total
                for bucket in live:
                    if point < bucket.weight:
                        chosen = [bucket]
                        break
                    point -= bucket.weight
        else:
            chosen = [b for b in g.buckets if self._bucket_live(b)][:1]
        for bucket in chosen:
            g.packets[g.buckets.index(bucket)] += 1
            copy = dict(pkt)
            for action in bucket.actions:
                self._act(action, copy, result, table, cookie)
