"""The fake switch's side of the OpenFlow 1.3 wire: bytes in, bytes out, without controller/flows.

The fake switch (tests/fakeswitch.py) never reads the controller's message objects: it serialises
each one as a connection would send it, then decodes the bytes with os-ken's parsers (message,
instruction, action, bucket and band parsers) and the OXM codec below, into its own model. Its
replies (flow stats, group and meter descriptions, port descriptions) are encoded here as a
switch would and parsed back by os-ken, so the controller's decoder reads real bytes too.

Matches are kept as {field: Oxm} as Open vSwitch stores them (lib/match.c, lib/nx-match.c): an
all-ones mask is an exact match, a zero mask no match on the field, and a value with bits outside
its mask is refused (OFPBMC_BAD_WILDCARDS): two spellings of one match are one model.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from types import SimpleNamespace

from os_ken.ofproto import ofproto_common, ofproto_parser
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

_FLOW_STATS_HEAD = struct.calcsize(ofp.OFP_FLOW_STATS_0_PACK_STR)
_FLOW_MOD_MATCH = ofp.OFP_FLOW_MOD_SIZE - ofp.OFP_MATCH_SIZE  # where a flow-mod's match starts
DATAPATH = SimpleNamespace(ofproto=ofp, ofproto_parser=parser, id=None)
NX_VENDOR_ID = 0x00002320
ONF_BUNDLE_ADD_HEAD = struct.Struct("!IHH")  # bundle_id, pad, flags (ONF EXT-230)


class WireError(AssertionError):
    """Bytes a switch cannot decode, or a message it does not take."""


@dataclass(frozen=True, slots=True)
class Oxm:
    """One match field as the switch keeps it: `value` masked, `mask` None when exact."""

    num: int | tuple  # os-ken's OXM number (class << 7 | field, or experimenter pair)
    value: int
    mask: int | None
    width: int  # bytes

    def user(self) -> object:
        """The value (value, mask) as os-ken's OFPMatch takes and gives it."""
        _, value, mask = ofp.oxm_to_user(self.num, self._bytes(self.value), self._mask_bytes())
        return value if mask is None else (value, mask)

    def _bytes(self, n: int) -> bytes:
        return n.to_bytes(self.width, "big")

    def _mask_bytes(self) -> bytes | None:
        return None if self.mask is None else self._bytes(self.mask)

    def serialize(self, buf: bytearray) -> None:
        offset = len(buf)
        ofp.oxm_serialize(self.num, self._bytes(self.value), self._mask_bytes(), buf, offset)


Match = dict[str, Oxm]


def decode_match(buf: bytes, offset: int) -> tuple[Match, int]:
    """An ofp_match (OXM type) at `offset`: its fields and its padded length in bytes.

    Raises WireError for a non-OXM match, a repeated field, or a value with bits outside its
    mask (OpenFlow 1.3, 7.2.3.5: OFPBMC_BAD_WILDCARDS)."""
    mtype, length = struct.unpack_from("!HH", buf, offset)
    if mtype != ofp.OFPMT_OXM:
        raise WireError(f"match type {mtype} is not OXM")
    fields: Match = {}
    pos = offset + 4
    while pos < offset + length:
        num, value, mask, field_len = ofp.oxm_parse(buf, pos)
        name = ofp.oxm_to_user_header(num)
        if name in fields:
            raise WireError(f"field {name} twice in one match (OFPBMC_DUP_FIELD)")
        v = int.from_bytes(value, "big")
        m = None if mask is None else int.from_bytes(mask, "big")
        if m is not None and v & ~m:
            raise WireError(f"{name}: value {v:#x} has bits outside mask {m:#x}")
        pos += field_len
        if m == 0:
            continue  # a zero mask matches anything: the field is wildcarded, not kept
        if m == (1 << 8 * len(value)) - 1:
            m = None
        fields[name] = Oxm(num, v, m, len(value))
    return fields, length + (-length) % 8


def encode_match(fields: Match) -> bytes:
    """An ofp_match holding `fields`, in OXM number order (prerequisites first), padded to 8."""
    body = bytearray()
    for oxm in sorted(fields.values(), key=_oxm_order):
        oxm.serialize(body)
    length = 4 + len(body)
    return struct.pack("!HH", ofp.OFPMT_OXM, length) + bytes(body) + b"\0" * ((-length) % 8)


def _oxm_order(oxm: Oxm) -> tuple:
    return oxm.num if isinstance(oxm.num, tuple) else (oxm.num,)


def to_wire(msg) -> bytes:
    """The bytes a connection sends for `msg` (an xid of None goes out as 0, as os-ken's
    Datapath would number it; the message keeps its own xid)."""
    xid = msg.xid
    if xid is None:
        msg.xid = 0
    try:
        msg.serialize()
    finally:
        msg.xid = xid
    return bytes(msg.buf)


def parse_msg(buf: bytes):
    """One OpenFlow 1.3 message from its bytes, as os-ken's parser reads it; controller-to-switch
    messages os-ken has no parser for (group-mod, meter-mod, packet-out, bundle add) decoded here.

    Raises WireError for another version or a length that disagrees with the bytes."""
    version, msg_type, length, xid = struct.unpack_from(ofp.OFP_HEADER_PACK_STR, buf, 0)
    if version != ofp.OFP_VERSION or length != len(buf):
        raise WireError(f"bad header: version {version}, length {length} of {len(buf)} bytes")
    own = _PARSERS.get(msg_type)
    if own is not None:
        return own(buf, xid)
    msg = ofproto_parser.msg(DATAPATH, version, msg_type, length, xid, buf)
    if (
        type(msg) is parser.OFPExperimenter
        and msg.experimenter == ofproto_common.ONF_EXPERIMENTER_ID
        and msg.exp_type == ofp.ONF_ET_BUNDLE_ADD_MESSAGE
    ):
        bundle_id, _, flags = ONF_BUNDLE_ADD_HEAD.unpack_from(msg.data, 0)
        inner = parse_msg(bytes(msg.data[ONF_BUNDLE_ADD_HEAD.size :]))
        return parser.ONFBundleAddMsg(DATAPATH, bundle_id, flags, inner, [])
    return msg


def _parse_list(item_parser, buf: bytes, offset: int, end: int) -> list:
    """Consecutive variable-length items (actions, buckets, bands), each knowing its `len`."""
    out = []
    while offset < end:
        item = item_parser(buf, offset)
        out.append(item)
        offset += item.len
    return out


def _mod_parser(cls, head: str, size: int, item_parser):
    """A parser of group-mods or meter-mods: `head` (after the header) holds the constructor's
    arguments in wire order, then come the items (buckets, bands) up to the end."""

    def parse(buf: bytes, xid: int):
        fields = struct.unpack_from(head, buf, ofp.OFP_HEADER_SIZE)
        msg = cls(DATAPATH, *fields, _parse_list(item_parser, buf, size, len(buf)))
        msg.xid = xid
        return msg

    return parse


def _packet_out(buf: bytes, xid: int):
    buffer_id, in_port, actions_len = struct.unpack_from("!IIH6x", buf, ofp.OFP_HEADER_SIZE)
    start = ofp.OFP_PACKET_OUT_SIZE
    actions = _parse_list(parser.OFPAction.parser, buf, start, start + actions_len)
    msg = parser.OFPPacketOut(DATAPATH, buffer_id, in_port, actions, buf[start + actions_len :])
    msg.xid = xid
    return msg


@dataclass(frozen=True, slots=True)
class FlowMod:
    """An ofp_flow_mod (OpenFlow 1.3, 7.3.4.1) with its match in this module's model and its
    instructions as os-ken parses them (os-ken's own flow-mod parser would build an OFPMatch
    with two APIs' worth of objects for every flow, the fake's main cost)."""

    xid: int
    cookie: int
    cookie_mask: int
    table_id: int
    command: int
    idle_timeout: int
    hard_timeout: int
    priority: int
    buffer_id: int
    out_port: int
    out_group: int
    flags: int
    match: Match
    instructions: list
    instruction_bytes: bytes


def _flow_mod(buf: bytes, xid: int) -> FlowMod:
    head = struct.unpack_from(ofp.OFP_FLOW_MOD_PACK_STR0, buf, ofp.OFP_HEADER_SIZE)
    match, match_len = decode_match(buf, _FLOW_MOD_MATCH)
    start = _FLOW_MOD_MATCH + match_len
    instructions = _parse_list(parser.OFPInstruction.parser, buf, start, len(buf))
    return FlowMod(xid, *head, match, instructions, bytes(buf[start:]))


@dataclass(frozen=True, slots=True)
class Request:
    """A request os-ken has no parser for: a barrier, or a multipart request of `mp_type`
    (a flow stats one names its table and cookie filter)."""

    msg_type: int
    xid: int
    mp_type: int | None = None
    table_id: int = ofp.OFPTT_ALL
    cookie: int = 0
    cookie_mask: int = 0


def _barrier(buf: bytes, xid: int) -> Request:
    return Request(ofp.OFPT_BARRIER_REQUEST, xid)


def _multipart_request(buf: bytes, xid: int) -> Request:
    (mp_type,) = struct.unpack_from("!H", buf, ofp.OFP_HEADER_SIZE)
    if mp_type != ofp.OFPMP_FLOW:
        return Request(ofp.OFPT_MULTIPART_REQUEST, xid, mp_type)
    table_id, _, _, cookie, cookie_mask = struct.unpack_from(
        "!B3xII4xQQ", buf, ofp.OFP_MULTIPART_REQUEST_SIZE
    )
    return Request(ofp.OFPT_MULTIPART_REQUEST, xid, mp_type, table_id, cookie, cookie_mask)


_PARSERS = {
    ofp.OFPT_FLOW_MOD: _flow_mod,
    ofp.OFPT_BARRIER_REQUEST: _barrier,
    ofp.OFPT_MULTIPART_REQUEST: _multipart_request,
    ofp.OFPT_GROUP_MOD: _mod_parser(
        parser.OFPGroupMod, "!HBxI", ofp.OFP_GROUP_MOD_SIZE, parser.OFPBucket.parser
    ),  # command, type, group_id
    ofp.OFPT_METER_MOD: _mod_parser(
        parser.OFPMeterMod, "!HHI", ofp.OFP_METER_MOD_SIZE, parser.OFPMeterBandHeader.parser
    ),  # command, flags, meter_id
    ofp.OFPT_PACKET_OUT: _packet_out,
}


def _serialized(obj) -> bytes:
    """An os-ken instruction, bucket or band as bytes (their serialize writes into a buffer)."""
    buf = bytearray()
    obj.serialize(buf, 0)
    return bytes(buf)


def multipart_reply(mp_type: int, xid: int, bodies: list[bytes]):
    """A multipart reply of `mp_type` carrying `bodies`, as bytes parsed back by os-ken: the
    message the controller's handlers receive. One message (no OFPMPF_REPLY_MORE)."""
    body = b"".join(bodies)
    head = struct.pack(
        ofp.OFP_HEADER_PACK_STR,
        ofp.OFP_VERSION,
        ofp.OFPT_MULTIPART_REPLY,
        ofp.OFP_MULTIPART_REPLY_SIZE + len(body),
        xid or 0,
    )
    buf = head + struct.pack("!HH4x", mp_type, 0) + body
    return parse_msg(buf)


def flow_stats_body(
    table_id: int,
    priority: int,
    idle_timeout: int,
    hard_timeout: int,
    flags: int,
    cookie: int,
    packets: int,
    match: Match,
    instructions: list,
) -> bytes:
    """One ofp_flow_stats entry (OpenFlow 1.3, 7.3.5.2); durations 0, 64 bytes a packet."""
    tail = encode_match(match) + b"".join(_serialized(i) for i in instructions)
    head = struct.pack(
        ofp.OFP_FLOW_STATS_0_PACK_STR,
        _FLOW_STATS_HEAD + len(tail),
        table_id,
        0,
        0,
        priority,
        idle_timeout,
        hard_timeout,
        flags,
        cookie,
        packets,
        packets * 64,
    )
    return head + tail


def group_desc_body(group_type: int, group_id: int, buckets: list) -> bytes:
    """One ofp_group_desc entry (7.3.5.10)."""
    tail = b"".join(_serialized(b) for b in buckets)
    return (
        struct.pack("!HBxI", ofp.OFP_GROUP_DESC_STATS_SIZE + len(tail), group_type, group_id) + tail
    )


def group_stats_body(group_id: int, bucket_packets: list[int], age: float) -> bytes:
    """One ofp_group_stats entry (7.3.5.9): the group's packets (the buckets' sum, 64 bytes
    each), its age in seconds, and each bucket's counter."""
    packets = sum(bucket_packets)
    tail = b"".join(struct.pack(ofp.OFP_BUCKET_COUNTER_PACK_STR, n, 64 * n) for n in bucket_packets)
    head = struct.pack(
        ofp.OFP_GROUP_STATS_PACK_STR,
        ofp.OFP_GROUP_STATS_SIZE + len(tail),
        group_id,
        0,
        packets,
        64 * packets,
        int(age),
        int(age % 1 * 1e9),
    )
    return head + tail


def meter_config_body(flags: int, meter_id: int, bands: list) -> bytes:
    """One ofp_meter_config entry (7.3.5.13)."""
    tail = b"".join(_serialized(b) for b in bands)
    return struct.pack("!HHI", ofp.OFP_METER_CONFIG_SIZE + len(tail), flags, meter_id) + tail


def port_body(port_no: int, hw_addr: str, name: str, live: bool) -> bytes:
    """One ofp_port (7.2.1): a live port has no LINK_DOWN state bit."""
    return struct.pack(
        ofp.OFP_PORT_PACK_STR,
        port_no,
        bytes.fromhex(hw_addr.replace(":", "")),
        name.encode(),
        0,
        0 if live else ofp.OFPPS_LINK_DOWN,
        0,
        0,
        0,
        0,
        0,
        0,
    )
