"""Open vSwitch's `controller(max_len=N,meter_id=M)` action on the wire (NXAST_CONTROLLER2).

os-ken's NXActionController2 knows the properties max_len, controller_id, reason, userdata and
pause, not NXAC2PT_METER_ID (Open vSwitch 2.14+, include/openflow/nicira-ext.h), and misreads a
property it does not know (it skips 4 bytes, not the property's length). This action sends a
copy of the packet to the controller through meter M, and the packet goes on with the rest of
the actions: the meter limits the copies, never the packet (an OFPIT_METER instruction would).

The action (ovs-fields(7), "NXAST_CONTROLLER2"): the 10-byte Nicira action header, 6 bytes of
padding, then properties, each `type:u16 length:u16 value`, padded to 8 bytes:
NXAC2PT_MAX_LEN (0, u16) and NXAC2PT_METER_ID (5, u32).

>>> a = NXActionControllerMeter(max_len=128, meter_id=0x10000)
>>> buf = bytearray(); a.serialize(buf, 0); len(buf)
32
>>> b = parser.OFPActionExperimenter.parser(bytes(buf), 0)
>>> (type(b).__name__, b.max_len, b.meter_id)
('NXActionControllerMeter', 128, 65536)
"""

from __future__ import annotations

import struct

from os_ken.ofproto import nicira_ext
from os_ken.ofproto import ofproto_v1_3_parser as parser

NXAC2PT_METER_ID = 5  # include/openflow/nicira-ext.h, Open vSwitch 2.14
_PAD = "!6x"
_PROP_HEAD = "!HH"


class NXActionControllerMeter(parser.NXAction):
    """`controller(max_len=max_len, meter_id=meter_id)`: a metered copy to the controller.

    Parameters
    ----------
    max_len : int
        Bytes of the packet in the packet-in (u16).
    meter_id : int or None
        The meter the copies go through (u32); None: none (a plain NXAST_CONTROLLER2).
    """

    _subtype = nicira_ext.NXAST_CONTROLLER2

    def __init__(self, max_len: int = 0xFFFF, meter_id: int | None = None, **_kwargs) -> None:
        super().__init__()
        self.max_len, self.meter_id = max_len, meter_id

    @classmethod
    def parser(cls, buf: bytes) -> NXActionControllerMeter:
        """Read the properties after the padding; ones other than max_len and meter_id are
        skipped by their length (Open vSwitch's pause, reason ... mean nothing to us)."""
        values: dict[int, int] = {}
        offset = struct.calcsize(_PAD)
        while offset + 4 <= len(buf):
            ptype, length = struct.unpack_from(_PROP_HEAD, buf, offset)
            if length < 4:
                break
            if ptype == nicira_ext.NXAC2PT_MAX_LEN:
                values[ptype] = struct.unpack_from("!H", buf, offset + 4)[0]
            elif ptype == NXAC2PT_METER_ID:
                values[ptype] = struct.unpack_from("!I", buf, offset + 4)[0]
            offset += (length + 7) // 8 * 8
        return cls(values.get(nicira_ext.NXAC2PT_MAX_LEN, 0xFFFF), values.get(NXAC2PT_METER_ID))

    def serialize_body(self) -> bytearray:
        """The padding and the properties, each padded to 8 bytes."""
        body = bytearray(struct.pack(_PAD))
        body += struct.pack("!HHH2x", nicira_ext.NXAC2PT_MAX_LEN, 6, self.max_len)
        if self.meter_id is not None:
            body += struct.pack("!HHI", NXAC2PT_METER_ID, 8, self.meter_id)
        return body


# Replies that carry NXAST_CONTROLLER2 (flow stats) are read with this class, not os-ken's.
parser.NXAction._subtypes[nicira_ext.NXAST_CONTROLLER2] = NXActionControllerMeter
