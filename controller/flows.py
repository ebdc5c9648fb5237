"""Canonical, hashable flows and groups, and their translation to and from OpenFlow 1.3.

Apps describe what they want with these values; the reconciler compares them with what a switch
reports in its stats replies. Both directions go through the same normalisation, so a flow read back
from Open vSwitch compares equal to the flow we asked for and a restart sends nothing.

>>> f = flow(4, 10, {"eth_dst": "00:00:00:00:00:01"}, apply(output(2)))
>>> f.key
(4, 10, (('eth_dst', '00:00:00:00:00:01'),))
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache, lru_cache
from types import SimpleNamespace
from typing import Any

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser
from os_ken.ofproto.ofproto_parser import MsgBase

# Messages are built against a stand-in datapath: os-ken only reads ofproto/parser from it when
# serialising, so plain-Python code can produce real OpenFlow messages without a connection.
OF13 = SimpleNamespace(ofproto=ofp, ofproto_parser=parser, id=None)

CONTROLLER = ofp.OFPP_CONTROLLER
NX_VENDOR_ID, NXT_CT_FLUSH_ZONE = 0x00002320, 29
NO_BUFFER = ofp.OFPCML_NO_BUFFER

Match = tuple[tuple[str, Any], ...]
Action = tuple
Instruction = tuple
FlowKey = tuple[int, int, Match]

_MAC_FIELDS = {"eth_src", "eth_dst", "arp_sha", "arp_tha", "ipv6_nd_sll", "ipv6_nd_tll"}
_IPV4_FIELDS = {"ipv4_src", "ipv4_dst", "arp_spa", "arp_tpa"}
_IPV6_FIELDS = {"ipv6_src", "ipv6_dst", "ipv6_nd_target"}
# Instruction order on the wire and in canonical form (OpenFlow 1.3, section 5.9).
_INSTRUCTION_ORDER = {"meter": 0, "apply": 1, "clear": 2, "write": 3, "meta": 4, "goto": 5}


@lru_cache(maxsize=65536)
def _norm_scalar(name: str, value: Any) -> Any:
    if name in _MAC_FIELDS:
        return str(value).lower()
    if name in _IPV4_FIELDS:
        return str(ipaddress.IPv4Address(value))
    if name in _IPV6_FIELDS:
        return str(ipaddress.IPv6Address(value))
    return int(value)


@lru_cache(maxsize=1024)
def _is_full_mask(name: str, mask: Any) -> bool:
    if name in _MAC_FIELDS:
        return str(mask).lower() == "ff:ff:ff:ff:ff:ff"
    if name in _IPV4_FIELDS:
        return int(ipaddress.IPv4Address(mask)) == 0xFFFFFFFF
    if name in _IPV6_FIELDS:
        return int(ipaddress.IPv6Address(mask)) == (1 << 128) - 1
    return int(mask) == (1 << 8 * len(ofp.oxm_from_user(name, _oxm_sample(name))[1])) - 1


@lru_cache(maxsize=65536)
def _norm_masked(name: str, val: Any, mask: Any) -> Any:
    """A masked field as Open vSwitch keeps and reports it (lib/match.c): the value with the
    bits outside the mask cleared (a switch refuses them: OFPBMC_BAD_WILDCARDS), an all-ones
    mask as an exact match, and None for a zero mask, which matches anything."""
    if _is_full_mask(name, mask):
        return _norm_scalar(name, val)
    val, mask = _norm_scalar(name, val), _norm_scalar(name, mask)
    if name in _MAC_FIELDS:
        v, m = int(val.replace(":", ""), 16), int(mask.replace(":", ""), 16)
        masked: Any = (v & m).to_bytes(6, "big").hex(":")
    elif name in _IPV4_FIELDS or name in _IPV6_FIELDS:
        v, m = int(ipaddress.ip_address(val)), int(ipaddress.ip_address(mask))
        masked = str(ipaddress.ip_address(val).__class__(v & m))
    else:
        m = mask
        masked = val & mask
    return None if m == 0 else (masked, mask)


def norm_match(fields: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> Match:
    """Sort fields and normalise masks as a switch does, so equal matches compare equal
    whatever their spelling and a match reads back from Open vSwitch as it was asked for."""
    items = fields.items() if isinstance(fields, Mapping) else fields
    out = []
    for name, value in items:
        if isinstance(value, tuple):
            norm = _norm_masked(name, *value)
            if norm is not None:
                out.append((name, norm))
        else:
            out.append((name, _norm_scalar(name, value)))
    return tuple(sorted(out))


# --- action and instruction constructors (canonical tuples) ------------------------------------


def output(port: int, max_len: int = NO_BUFFER) -> Action:
    """Output to a port; max_len only matters for the controller port, so it is kept only there."""
    return ("output", port, max_len if port == CONTROLLER else 0)


def to_controller(max_len: int = NO_BUFFER) -> Action:
    return output(CONTROLLER, max_len)


def group_action(group_id: int) -> Action:
    return ("group", group_id)


def set_field(name: str, value: Any) -> Action:
    return ("set_field", name, _norm_scalar(name, value))


def conntrack(
    zone: int,
    table: int | None = None,
    commit: bool = False,
    force: bool = False,
    nested: Iterable[Action] = (),
) -> Action:
    """Send through connection tracking in `zone`; recirculate to `table` with ct_state set.

    `force` (with commit): an entry that holds this packet as a reply is replaced by one in
    the packet's own direction (Open vSwitch's ct(commit,force)). `nested`: `nat(...)` and,
    with commit, `set_field("ct_mark", ...)`, done by conntrack itself."""
    flags = int(commit) | (2 if force else 0)
    return ("ct", flags, zone, ofp.OFPTT_ALL if table is None else table, tuple(nested))


NAT_SRC, NAT_DST = 1 << 0, 1 << 1  # Open vSwitch's NX_NAT_F_SRC / NX_NAT_F_DST


def nat(dst: str | None = None, port: int | None = None, src: str | None = None) -> Action:
    """Inside ct(): rewrite the destination to `dst`[:`port`] or the source to `src`[:`port`]
    (a new connection that is being committed), or, with no arguments, apply the translation
    a tracked connection already has (both directions). One of src and dst: Open vSwitch
    refuses both in one nat (ovs-actions(7)); two translations take two ct() in two zones.

    Raises ValueError for both, or for an address that is not IPv4."""
    if dst is not None and src is not None:
        raise ValueError("nat takes src or dst, not both")
    if dst is None and src is None:
        return ("nat", 0, None, None)
    flag = NAT_DST if dst is not None else NAT_SRC
    return ("nat", flag, str(ipaddress.IPv4Address(dst or src)), port)


def apply(*actions: Action) -> Instruction:
    return ("apply", tuple(actions))


def goto(table: int) -> Instruction:
    return ("goto", table)


def write_metadata(value: int, mask: int) -> Instruction:
    return ("meta", value, mask)


def meter(meter_id: int) -> Instruction:
    return ("meter", meter_id)


@dataclass(frozen=True, slots=True)
class Flow:
    """One flow entry as we want it on a switch (or as the switch reported it)."""

    table: int
    priority: int
    match: Match
    instructions: tuple[Instruction, ...] = ()
    cookie: int = 0
    idle_timeout: int = 0
    hard_timeout: int = 0
    flags: int = 0

    @property
    def key(self) -> FlowKey:
        """What identifies an entry in a table: the same key means the same entry (OF1.3 6.4)."""
        return (self.table, self.priority, self.match)

    def match_dict(self) -> dict[str, Any]:
        return dict(self.match)


def flow(
    table: int,
    priority: int,
    match: Mapping[str, Any] | None = None,
    *instructions: Instruction,
    cookie: int = 0,
    idle_timeout: int = 0,
    hard_timeout: int = 0,
    flags: int = 0,
) -> Flow:
    """Build a canonical flow; an apply with no actions is dropped (OF1.3 rejects empty lists)."""
    kept = [i for i in instructions if not (i[0] == "apply" and not i[1])]
    kept.sort(key=lambda ins: _INSTRUCTION_ORDER[ins[0]])
    return Flow(
        table,
        priority,
        norm_match(match or {}),
        tuple(kept),
        cookie,
        idle_timeout,
        hard_timeout,
        flags,
    )


@dataclass(frozen=True, slots=True)
class Bucket:
    actions: tuple[Action, ...]
    weight: int = 0
    watch_port: int = ofp.OFPP_ANY
    watch_group: int = ofp.OFPG_ANY


GROUP_TYPES = {
    "all": ofp.OFPGT_ALL,
    "select": ofp.OFPGT_SELECT,
    "indirect": ofp.OFPGT_INDIRECT,
    "ff": ofp.OFPGT_FF,
}
_GROUP_TYPE_NAMES = {v: k for k, v in GROUP_TYPES.items()}


@dataclass(frozen=True, slots=True)
class Group:
    group_id: int
    type: str
    buckets: tuple[Bucket, ...] = field(default_factory=tuple)


def group(group_id: int, type_: str, buckets: Iterable[Bucket]) -> Group:
    """Canonical group: weights only for select, watches only for fast-failover and select (a
    select bucket whose watched port is down is skipped), as Open vSwitch reports them."""
    norm = []
    for b in buckets:
        weight = b.weight if type_ == "select" else 0
        watched = type_ in ("ff", "select")
        watch_port = b.watch_port if watched else ofp.OFPP_ANY
        watch_group = b.watch_group if watched else ofp.OFPG_ANY
        norm.append(Bucket(tuple(b.actions), weight, watch_port, watch_group))
    return Group(group_id, type_, tuple(norm))


METER_FLAGS = {"pktps": ofp.OFPMF_PKTPS, "kbps": ofp.OFPMF_KBPS}


@dataclass(frozen=True, slots=True)
class Meter:
    """A drop-band meter: `rate` in packets/s or kbit/s, `burst` in packets or kbit."""

    meter_id: int
    unit: str  # "pktps" or "kbps"
    rate: int
    burst: int = 0


def meter_mod(m: Meter, command: int = ofp.OFPMC_ADD):
    flags = METER_FLAGS[m.unit] | (ofp.OFPMF_BURST if m.burst else 0)
    bands = [] if command == ofp.OFPMC_DELETE else [parser.OFPMeterBandDrop(m.rate, m.burst)]
    return parser.OFPMeterMod(OF13, command, flags, m.meter_id, bands)


def meter_from_config(c) -> Meter:
    """A meter as a switch reports it in an OFPMeterConfigStats entry (or a MeterMod we sent)."""
    unit = "kbps" if c.flags & ofp.OFPMF_KBPS else "pktps"
    band = c.bands[0] if c.bands else None
    burst = band.burst_size if band is not None and c.flags & ofp.OFPMF_BURST else 0
    return Meter(c.meter_id, unit, band.rate if band is not None else 0, burst)


# --- to OpenFlow ------------------------------------------------------------------------------


def _oxm_sample(name: str) -> Any:
    """A zero value of the field's type, as os-ken's OXM encoder takes it."""
    if name in _MAC_FIELDS:
        return "00:00:00:00:00:00"
    if name in _IPV4_FIELDS or name in _IPV6_FIELDS:
        return "::" if name in _IPV6_FIELDS else "0.0.0.0"
    return 0


@cache
def _oxm_number(name: str) -> int:
    """The OXM field number, which also gives the order prerequisites need on the wire."""
    number = ofp.oxm_from_user(name, _oxm_sample(name))[0]
    return number[0] if isinstance(number, tuple) else number  # as os-ken orders them


@lru_cache(maxsize=65536)
def _oxm_generic(name: str, value) -> bytes:
    n, v, m = ofp.oxm_from_user(name, value)
    buf = bytearray()
    ofp.oxm_serialize(n, v, m, buf, 0)
    return bytes(buf)


def oxm_bytes(name: str, value) -> bytes:
    """One OXM TLV. MACs and IPv4 addresses, new with every host and rule, skip os-ken's slow
    text conversions; everything else is encoded by os-ken once per distinct value."""
    if name in _MAC_FIELDS or name in _IPV4_FIELDS:
        n = _oxm_number(name)
        raw = _mac_bytes if name in _MAC_FIELDS else socket.inet_aton
        if isinstance(value, tuple):
            body = raw(value[0]) + raw(value[1])
            return struct.pack("!I", (n << 9) | (1 << 8) | len(body)) + body
        body = raw(value)
        return struct.pack("!I", (n << 9) | len(body)) + body
    return _oxm_generic(name, value)


def _mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


class WireMatch(parser.OFPMatch):
    """An OFPMatch built from a canonical match without os-ken's per-field normalisation.

    It reads like any OFPMatch (`_fields2`, `[]`) and serialises to the same bytes, at a fraction
    of the cost: the controller's packet-in path builds one for every flow it installs.
    """

    def __init__(self, match: Match) -> None:
        # OFPMatch.__init__ also builds old-API Flow/FlowWildcards objects this never uses.
        self._fields2 = sorted(match, key=lambda kv: _oxm_number(kv[0]))
        self.type = ofp.OFPMT_OXM
        self.length = None
        self.fields: list = []

    def serialize(self, buf, offset):
        body = b"".join(oxm_bytes(name, value) for name, value in self._fields2)
        length = 4 + len(body)
        pad = (-length) % 8
        packed = struct.pack("!HH", ofp.OFPMT_OXM, length) + body + b"\0" * pad
        buf[offset : offset + len(packed)] = packed
        self.length = length
        return length + pad


def _of_action(action: Action):
    kind = action[0]
    if kind == "output":
        return parser.OFPActionOutput(action[1], action[2] if action[1] == CONTROLLER else 0)
    if kind == "group":
        return parser.OFPActionGroup(action[1])
    if kind == "set_field":
        return parser.OFPActionSetField(**{action[1]: action[2]})
    if kind == "push_vlan":
        return parser.OFPActionPushVlan(action[1])
    if kind == "pop_vlan":
        return parser.OFPActionPopVlan()
    if kind == "ct":
        return parser.NXActionCT(
            action[1], None, action[2], action[3], 0, [_of_action(a) for a in action[4]]
        )
    if kind == "nat":
        _, flags, ip, port = action
        # os-ken pads no NAT action to 8 bytes, but says it did: keep the ranges 8 bytes long
        # (an address and ports, or an address as a one-address range), or the actions after
        # it in the ct() are misread.
        return parser.NXActionNAT(
            flags,
            range_ipv4_min=ip or "",
            range_ipv4_max=ip if ip and port is None else "",
            range_proto_min=port,
            range_proto_max=port,
        )
    raise ValueError(f"unknown action {action!r}")


def of_instruction(ins: Instruction):
    kind = ins[0]
    if kind in ("apply", "write"):
        itype = ofp.OFPIT_APPLY_ACTIONS if kind == "apply" else ofp.OFPIT_WRITE_ACTIONS
        return parser.OFPInstructionActions(itype, [_of_action(a) for a in ins[1]])
    if kind == "clear":
        return parser.OFPInstructionActions(ofp.OFPIT_CLEAR_ACTIONS, [])
    if kind == "goto":
        return parser.OFPInstructionGotoTable(ins[1])
    if kind == "meta":
        return parser.OFPInstructionWriteMetadata(ins[1], ins[2])
    if kind == "meter":
        return parser.OFPInstructionMeter(ins[1])
    raise ValueError(f"unknown instruction {ins!r}")


@lru_cache(maxsize=4096)
def _instruction_bytes(ins: Instruction) -> bytes:
    """Wire bytes of one instruction; the same few (goto, output to a port) recur in most flows."""
    obj = of_instruction(ins)
    buf = bytearray()
    obj.serialize(buf, 0)
    return bytes(buf[: obj.len])


class WireFlowMod(parser.OFPFlowMod):
    """An OFPFlowMod made from a canonical Flow, serialised from cached pieces.

    It carries the usual os-ken instruction objects (the fake switch and logs read them), but its
    bytes come from WireMatch and per-instruction caches: the same bytes os-ken would write.
    """

    def __init__(self, f: Flow, command: int) -> None:
        # OFPFlowMod.__init__ would build instruction objects that sending never reads.
        MsgBase.__init__(self, OF13)
        deleting = command in (ofp.OFPFC_DELETE, ofp.OFPFC_DELETE_STRICT)
        self._canonical = () if deleting else f.instructions
        self.cookie, self.cookie_mask, self.table_id, self.command = f.cookie, 0, f.table, command
        self.idle_timeout, self.hard_timeout = f.idle_timeout, f.hard_timeout
        self.priority, self.buffer_id, self.flags = f.priority, ofp.OFP_NO_BUFFER, f.flags
        self.out_port = ofp.OFPP_ANY if deleting else 0
        self.out_group = ofp.OFPG_ANY if deleting else 0
        self.match = WireMatch(f.match)

    @property
    def instructions(self) -> list:
        """os-ken instruction objects, built only for readers (the fake switch, logs)."""
        return [of_instruction(i) for i in self._canonical]

    def _serialize_body(self) -> None:
        head = struct.pack(
            ofp.OFP_FLOW_MOD_PACK_STR0,
            self.cookie,
            self.cookie_mask,
            self.table_id,
            self.command,
            self.idle_timeout,
            self.hard_timeout,
            self.priority,
            self.buffer_id,
            self.out_port,
            self.out_group,
            self.flags,
        )
        self.buf[ofp.OFP_HEADER_SIZE :] = head
        self.match.serialize(self.buf, len(self.buf))
        self.buf += b"".join(_instruction_bytes(i) for i in self._canonical)


def flow_mod(f: Flow, command: int = ofp.OFPFC_ADD):
    """The FlowMod that puts `f` on a switch (ADD, MODIFY_STRICT) or removes it (DELETE_STRICT)."""
    return WireFlowMod(f, command)


def group_mod(g: Group, command: int = ofp.OFPGC_ADD):
    buckets = [
        parser.OFPBucket(
            weight=b.weight,
            watch_port=b.watch_port,
            watch_group=b.watch_group,
            actions=[_of_action(a) for a in b.actions],
        )
        for b in g.buckets
    ]
    if command == ofp.OFPGC_DELETE:
        buckets = []
    return parser.OFPGroupMod(OF13, command, GROUP_TYPES[g.type], g.group_id, buckets)


def ct_flush_zone(zone: int):
    """Open vSwitch's NXT_CT_FLUSH_ZONE: forget every tracked connection in `zone`."""
    return parser.OFPExperimenter(OF13, NX_VENDOR_ID, NXT_CT_FLUSH_ZONE, struct.pack("!6xH", zone))


def packet_out(data: bytes, actions: Iterable[Action], in_port: int = CONTROLLER):
    """Send `data` through `actions`, as if it had arrived on `in_port`."""
    return parser.OFPPacketOut(
        OF13,
        buffer_id=ofp.OFP_NO_BUFFER,
        in_port=in_port,
        actions=[_of_action(a) for a in actions],
        data=data,
    )


def barrier():
    return parser.OFPBarrierRequest(OF13)


# --- from OpenFlow ----------------------------------------------------------------------------


def action_from_of(a) -> Action:
    if isinstance(a, parser.OFPActionOutput):
        return output(a.port, a.max_len)
    if isinstance(a, parser.OFPActionGroup):
        return group_action(a.group_id)
    if isinstance(a, parser.OFPActionSetField):
        return set_field(a.key, a.value)
    if isinstance(a, parser.OFPActionPushVlan):
        return ("push_vlan", a.ethertype)
    if isinstance(a, parser.OFPActionPopVlan):
        return ("pop_vlan",)
    if isinstance(a, parser.NXActionCT) and not a.zone_src and not a.alg:
        nested = tuple(action_from_of(n) for n in a.actions)
        return ("ct", a.flags, a.zone_ofs_nbits, a.recirc_table, nested)
    if isinstance(a, parser.NXActionNAT) and _is_our_nat(a):
        return ("nat", a.flags, a.range_ipv4_min or None, a.range_proto_min)
    return ("unknown", repr(a))  # nothing we send: never equal to what we want


def _is_our_nat(a) -> bool:
    """Is this NXActionNAT one `nat()` makes: IPv4, src or dst, one address and one port at
    most (an absent maximum is the minimum, as Open vSwitch decodes it)?"""
    ip, port = a.range_ipv4_min or None, a.range_proto_min
    pmax = a.range_proto_max if a.range_proto_max is not None else port
    return (
        (a.range_ipv4_max or ip) == ip
        and pmax == port
        and not a.range_ipv6_min
        and not a.flags & ~(NAT_SRC | NAT_DST)
    )


def instruction_from_of(i) -> Instruction:
    if isinstance(i, parser.OFPInstructionActions):
        acts = tuple(action_from_of(a) for a in i.actions)
        if i.type == ofp.OFPIT_APPLY_ACTIONS:
            return ("apply", acts)
        if i.type == ofp.OFPIT_WRITE_ACTIONS:
            return ("write", acts)
        return ("clear",)
    if isinstance(i, parser.OFPInstructionGotoTable):
        return goto(i.table_id)
    if isinstance(i, parser.OFPInstructionWriteMetadata):
        return write_metadata(i.metadata, i.metadata_mask)
    if isinstance(i, parser.OFPInstructionMeter):
        return meter(i.meter_id)
    return ("unknown", type(i).__name__)


def flow_from_stats(s) -> Flow:
    """A flow as a switch reports it: an OFPFlowStats entry, an OFPFlowMod, or an OFPFlowRemoved
    (which carries no instructions or flags, only the entry's key, cookie and timeouts)."""
    instructions = [instruction_from_of(i) for i in (getattr(s, "instructions", None) or [])]
    return flow(
        s.table_id,
        s.priority,
        s.match._fields2,
        *instructions,
        cookie=s.cookie,
        idle_timeout=s.idle_timeout,
        hard_timeout=s.hard_timeout,
        flags=getattr(s, "flags", 0) or 0,
    )


def group_from_desc(d) -> Group:
    buckets = [
        Bucket(tuple(action_from_of(a) for a in b.actions), b.weight, b.watch_port, b.watch_group)
        for b in d.buckets
    ]
    return group(d.group_id, _GROUP_TYPE_NAMES[d.type], buckets)
