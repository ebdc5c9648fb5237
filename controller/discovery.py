"""Link discovery with LLDP, and the probation that keeps unknown ports from looking like edges.

A port is not trusted as an edge (host) port until it has been up for `probation` seconds without
an LLDP frame from another switch arriving on it. Until then nothing is learned on it and nothing is
flooded to it, so a looped fabric cannot storm while its links are still being found.

>>> frame = lldp_frame(0x1a, 3, "00:00:00:00:00:03")
>>> parse_lldp(frame)
(26, 3)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from controller.topology import Link, Topology

LLDP_ETHERTYPE = 0x88CC
LLDP_MAC = "01:80:c2:00:00:0e"
_CHASSIS_PREFIX = b"dpid:"


def _tlv(tlv_type: int, value: bytes) -> bytes:
    return struct.pack("!H", (tlv_type << 9) | len(value)) + value


def lldp_frame(dpid: int, port: int, src_mac: str) -> bytes:
    """An LLDP frame naming (dpid, port): chassis id 'dpid:<hex>', port id the port number."""
    dst = bytes.fromhex(LLDP_MAC.replace(":", ""))
    src = bytes.fromhex(src_mac.replace(":", ""))
    body = (
        _tlv(1, b"\x07" + _CHASSIS_PREFIX + b"%016x" % dpid)  # chassis id, locally assigned
        + _tlv(2, b"\x02" + struct.pack("!I", port))  # port id, port component
        + _tlv(3, struct.pack("!H", 120))  # time to live
        + _tlv(0, b"")  # end
    )
    return dst + src + struct.pack("!H", LLDP_ETHERTYPE) + body


def parse_lldp(data: bytes) -> tuple[int, int] | None:
    """(dpid, port) from one of our LLDP frames, or None for anything else."""
    if len(data) < 14 or struct.unpack_from("!H", data, 12)[0] != LLDP_ETHERTYPE:
        return None
    offset, dpid, port = 14, None, None
    while offset + 2 <= len(data):
        header = struct.unpack_from("!H", data, offset)[0]
        tlv_type, length = header >> 9, header & 0x1FF
        value = data[offset + 2 : offset + 2 + length]
        if tlv_type == 0 or len(value) < length:
            break
        if tlv_type == 1 and value[1:].startswith(_CHASSIS_PREFIX):
            try:
                dpid = int(value[1 + len(_CHASSIS_PREFIX) :], 16)
            except ValueError:
                return None
        elif tlv_type == 2 and length == 5 and value[0] == 2:
            port = struct.unpack_from("!I", value, 1)[0]
        offset += 2 + length
    if dpid is None or port is None:
        return None
    return dpid, port


@dataclass
class Discovery:
    """Which ports are on probation, when each link was last heard, and when to probe again."""

    topology: Topology
    probation: float = 1.0
    interval: float = 5.0
    link_timeout: float = 16.0
    port_since: dict[tuple[int, int], float] = field(default_factory=dict)
    link_seen: dict[Link, float] = field(default_factory=dict)
    next_probe: float = 0.0

    def port_up(self, dpid: int, port: int, now: float) -> None:
        self.port_since[(dpid, port)] = now

    def port_down(self, dpid: int, port: int) -> None:
        self.port_since.pop((dpid, port), None)

    def forget_switch(self, dpid: int) -> None:
        self.port_since = {k: v for k, v in self.port_since.items() if k[0] != dpid}

    def heard(self, dpid: int, port: int, frame: bytes, now: float) -> bool:
        """An LLDP frame arrived on (dpid, port). True if it told us about a new link."""
        sender = parse_lldp(frame)
        if sender is None or sender == (dpid, port):
            return False
        new = self.topology.add_link(sender[0], sender[1], dpid, port)
        for link in self.topology.links:
            if (dpid, port) in ((link.a, link.a_port), (link.b, link.b_port)):
                self.link_seen[link] = now
        return new

    def due(self, now: float) -> bool:
        """Time for the periodic probe on every port."""
        if now >= self.next_probe:
            self.next_probe = now + self.interval
            return True
        return False

    def expire(self, now: float, connected: set[int]) -> None:
        """Settle ports whose probation is over; drop links not heard for link_timeout.

        A link to a switch that is disconnected from us is kept: its data plane still forwards, and
        a dead link shows up as a port going down, which removes it at once.
        """
        for (dpid, port), since in list(self.port_since.items()):
            if now - since >= self.probation:
                self.topology.settle_port(dpid, port)
                del self.port_since[(dpid, port)]
        for link in list(self.topology.links):
            seen = self.link_seen.setdefault(link, now)
            if now - seen > self.link_timeout and {link.a, link.b} <= connected:
                self.topology.remove_link(link)
                del self.link_seen[link]
