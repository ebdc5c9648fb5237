"""LLDP frames a host can make without the controller's key (stdlib only; unit and lab tests)."""

import struct

LLDP_DST = bytes.fromhex("0180c200000e")


def _tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!H", (kind << 9) | len(value)) + value


def unsigned_frame(dpid: int, port: int, src_mac: str = "02:00:00:00:00:01") -> bytes:
    """What the controller sent before probes were signed: chassis 'dpid:<hex>', port id, TTL."""
    return (
        LLDP_DST
        + bytes.fromhex(src_mac.replace(":", ""))
        + b"\x88\xcc"
        + _tlv(1, b"\x07dpid:%016x" % dpid)
        + _tlv(2, b"\x02" + struct.pack("!I", port))
        + _tlv(3, b"\x00\x78")
        + _tlv(0, b"")
    )


def with_port(frame: bytes, port: int) -> bytes:
    """`frame` with its port id TLV changed to claim `port`: a signed probe, edited."""
    at = frame.index(b"\x04\x05\x02", 14)  # port id TLV: type 2, length 5, subtype port
    return frame[: at + 3] + struct.pack("!I", port) + frame[at + 7 :]
