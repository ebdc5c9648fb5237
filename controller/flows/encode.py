"""The wire encoder: canonical flows, groups and meters to os-ken OpenFlow 1.3 messages.

Messages are built against a stand-in datapath (`OF13`): os-ken only reads ofproto/parser from it
when serialising, so plain-Python code produces real OpenFlow messages without a connection. The
hot path (a FlowMod per installed flow) is serialised from cached pieces to the same bytes os-ken
writes.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable
from functools import cache, lru_cache
from types import SimpleNamespace
from typing import Any

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser
from os_ken.ofproto.ofproto_parser import MsgBase

from controller.flows.actions import CONTROLLER
from controller.flows.model import (
    IPV4_FIELDS,
    MAC_FIELDS,
    Action,
    Flow,
    Group,
    Instruction,
    Match,
    Meter,
    oxm_sample,
)
from controller.flows.nxcontroller import NXActionControllerMeter

OF13 = SimpleNamespace(ofproto=ofp, ofproto_parser=parser, id=None)
NX_VENDOR_ID, NXT_CT_FLUSH_ZONE = 0x00002320, 29
GROUP_TYPES = {
    "all": ofp.OFPGT_ALL,
    "select": ofp.OFPGT_SELECT,
    "indirect": ofp.OFPGT_INDIRECT,
    "ff": ofp.OFPGT_FF,
}
METER_FLAGS = {"pktps": ofp.OFPMF_PKTPS, "kbps": ofp.OFPMF_KBPS}


@cache
def _oxm_number(name: str) -> int:
    """The OXM field number, which also gives the order prerequisites need on the wire."""
    number = ofp.oxm_from_user(name, oxm_sample(name))[0]
    return number[0] if isinstance(number, tuple) else number  # as os-ken orders them


@lru_cache(maxsize=65536)
def _oxm_generic(name: str, value) -> bytes:
    n, v, m = ofp.oxm_from_user(name, value)
    buf = bytearray()
    ofp.oxm_serialize(n, v, m, buf, 0)
    return bytes(buf)


def _mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def oxm_bytes(name: str, value: Any) -> bytes:
    """One OXM TLV (OpenFlow 1.3.5 section 7.2.3.2).

    MACs and IPv4 addresses, new with every host and rule, skip os-ken's slow text conversions;
    everything else is encoded by os-ken once per distinct value.

    Parameters
    ----------
    name : str
        An os-ken OXM field name.
    value : str or int or tuple
        A canonical value, or ``(value, mask)``.

    Returns
    -------
    bytes
        The 4-byte OXM header and the payload (value, then mask when masked).

    Raises
    ------
    KeyError
        An unknown field name.
    OSError, ValueError
        A value that does not encode for its field.

    Examples
    --------
    >>> oxm_bytes("eth_type", 0x800).hex()
    '80000a020800'
    """
    if name in MAC_FIELDS or name in IPV4_FIELDS:
        n = _oxm_number(name)
        raw = _mac_bytes if name in MAC_FIELDS else socket.inet_aton
        if isinstance(value, tuple):
            body = raw(value[0]) + raw(value[1])
            return struct.pack("!I", (n << 9) | (1 << 8) | len(body)) + body
        body = raw(value)
        return struct.pack("!I", (n << 9) | len(body)) + body
    return _oxm_generic(name, value)


class WireMatch(parser.OFPMatch):
    """An OFPMatch built from a canonical match without os-ken's per-field normalisation.

    It reads like any OFPMatch (`_fields2`, `[]`) and serialises to the same bytes, at a fraction
    of the cost: the controller's packet-in path builds one for every flow it installs.

    Parameters
    ----------
    match : Match
        A canonical match (`controller.flows.model.norm_match`).
    """

    def __init__(self, match: Match) -> None:
        # OFPMatch.__init__ also builds old-API Flow/FlowWildcards objects this never uses.
        self._fields2 = sorted(match, key=lambda kv: _oxm_number(kv[0]))
        self.type = ofp.OFPMT_OXM
        self.length = None
        self.fields: list = []

    def serialize(self, buf: bytearray, offset: int) -> int:
        """Write the ofp_match (OpenFlow 1.3.5 section 7.2.3.1) at `offset` of `buf`.

        Returns
        -------
        int
            Bytes written, padding to a multiple of 8 included.
        """
        body = b"".join(oxm_bytes(name, value) for name, value in self._fields2)
        length = 4 + len(body)
        pad = (-length) % 8
        packed = struct.pack("!HH", ofp.OFPMT_OXM, length) + body + b"\0" * pad
        buf[offset : offset + len(packed)] = packed
        self.length = length
        return length + pad


def of_action(action: Action):
    """The os-ken action object for a canonical action.

    Raises
    ------
    ValueError
        An action of unknown kind.
    """
    kind = action[0]
    if kind == "output":
        return parser.OFPActionOutput(action[1], action[2] if action[1] == CONTROLLER else 0)
    if kind == "controller":
        return NXActionControllerMeter(action[1], action[2])
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
            action[1], None, action[2], action[3], 0, [of_action(a) for a in action[4]]
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
    """The os-ken instruction object for a canonical instruction.

    Raises
    ------
    ValueError
        An instruction or action of unknown kind.
    """
    kind = ins[0]
    if kind in ("apply", "write"):
        itype = ofp.OFPIT_APPLY_ACTIONS if kind == "apply" else ofp.OFPIT_WRITE_ACTIONS
        return parser.OFPInstructionActions(itype, [of_action(a) for a in ins[1]])
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

    Parameters
    ----------
    f : Flow
    command : int
        OFPFC_* (OpenFlow 1.3.5 section 7.3.4.1); a delete carries no instructions and matches
        any out_port / out_group.
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


def flow_mod(f: Flow, command: int = ofp.OFPFC_ADD) -> WireFlowMod:
    """The FlowMod that puts `f` on a switch (ADD, MODIFY_STRICT) or removes it (DELETE_STRICT).

    OpenFlow 1.3.5 section 7.3.4.1. Unknown action or instruction kinds raise ValueError when the
    message is serialised.
    """
    return WireFlowMod(f, command)


def group_mod(g: Group, command: int = ofp.OFPGC_ADD):
    """The OFPGroupMod for `g` (OpenFlow 1.3.5 section 7.3.4.2); a delete carries no buckets.

    Raises
    ------
    KeyError
        An unknown group type.
    ValueError
        A bucket action of unknown kind.
    """
    buckets = [
        parser.OFPBucket(
            weight=b.weight,
            watch_port=b.watch_port,
            watch_group=b.watch_group,
            actions=[of_action(a) for a in b.actions],
        )
        for b in g.buckets
    ]
    if command == ofp.OFPGC_DELETE:
        buckets = []
    return parser.OFPGroupMod(OF13, command, GROUP_TYPES[g.type], g.group_id, buckets)


def meter_mod(m: Meter, command: int = ofp.OFPMC_ADD):
    """The OFPMeterMod for `m` with one drop band (OpenFlow 1.3.5 section 7.3.4.4).

    A delete carries no bands.

    Raises
    ------
    KeyError
        A unit other than ``"pktps"`` or ``"kbps"``.
    """
    flags = METER_FLAGS[m.unit] | (ofp.OFPMF_BURST if m.burst else 0)
    bands = [] if command == ofp.OFPMC_DELETE else [parser.OFPMeterBandDrop(m.rate, m.burst)]
    return parser.OFPMeterMod(OF13, command, flags, m.meter_id, bands)


def ct_flush_zone(zone: int):
    """Open vSwitch's NXT_CT_FLUSH_ZONE: forget every tracked connection in `zone`."""
    return parser.OFPExperimenter(OF13, NX_VENDOR_ID, NXT_CT_FLUSH_ZONE, struct.pack("!6xH", zone))


def packet_out(data: bytes, actions: Iterable[Action], in_port: int = CONTROLLER):
    """An OFPPacketOut sending frame `data` through `actions`, as if it had come in on `in_port`.

    OpenFlow 1.3.5 section 7.3.7. Raises ValueError for an action of unknown kind.
    """
    return parser.OFPPacketOut(
        OF13,
        buffer_id=ofp.OFP_NO_BUFFER,
        in_port=in_port,
        actions=[of_action(a) for a in actions],
        data=data,
    )


def barrier():
    """An OFPBarrierRequest (OpenFlow 1.3.5 section 7.3.8)."""
    return parser.OFPBarrierRequest(OF13)
