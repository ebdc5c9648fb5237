"""The controller's LLDP frames: built, signed, parsed and checked (IEEE 802.1AB framing).

Every probe carries, besides the standard chassis id, port id and TTL TLVs, one
organizationally specific TLV (type 127) that authenticates it:

    OUI (3) | subtype (1) | round (4) | stamp (8, ns since the epoch) | seq (8) | tag (16)

`seq` counts the sender's probes, so two probes stamped in the same nanosecond still differ.

`tag` is HMAC-SHA256 (RFC 2104, truncated to 128 bits as RFC 4868 allows) under the controller's
key over a domain label, the dpid, the port and the three fields before it. Only a holder of the
key can name a (dpid, port) or make a frame look fresh; parsing never trusts anything else.

>>> key = bytes(32)
>>> frame = lldp_frame(key, 0x1A, 3, "00:00:00:00:00:03", stamp=5, seq=7, probe_round=1)
>>> probe = parse_lldp(frame)
>>> (probe.dpid, probe.port, probe.stamp, probe.probe_round), probe.signed_by(key)
((26, 3, 5, 1), True)
>>> parse_lldp(frame[:40])
Traceback (most recent call last):
...
controller.lldp.Refused: malformed: TLV type 2 at byte 38 runs past the frame
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

from controller.packets import ETH_TYPE_LLDP, Malformed, lldp_tlvs

LLDP_ETHERTYPE = ETH_TYPE_LLDP
_ETHERTYPE = struct.pack("!H", ETH_TYPE_LLDP)
LLDP_MAC = "01:80:c2:00:00:0e"
KEY_BYTES = 32
TAG_BYTES = 16
# A CID (IEEE's locally administered company id form, X bit set), not an assigned OUI: nobody
# else's TLV can be mistaken for ours by an assignment clash.
OUI = bytes.fromhex("0a5ec0")
SUBTYPE_AUTH = 1
_CHASSIS_PREFIX = b"dpid:"
_DOMAIN = b"osken-suite lldp v1"
_AUTH = struct.Struct("!IQQ")  # round, stamp, seq
_AUTH_LEN = len(OUI) + 1 + _AUTH.size + TAG_BYTES

# Why a frame was refused: the `reason` label of osken_lldp_refused_total.
MALFORMED = "malformed"  # not parseable as our LLDP: truncated, garbage or missing TLVs
UNSIGNED = "unsigned"  # well-formed LLDP without our authentication TLV (forged, or foreign)
BAD_SIGNATURE = "bad_signature"  # the tag does not match: another key, or altered fields
STALE = "stale"  # signed, but stamped outside the freshness window
REPLAYED = "replayed"  # signed and fresh, but not newer than the last one accepted on the port
LOOPED = "looped"  # came back in on the very port it was sent from
REASONS = (MALFORMED, UNSIGNED, BAD_SIGNATURE, STALE, REPLAYED, LOOPED)


class Refused(ValueError):
    """A frame discovery will not act on; `reason` is one of REASONS."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Probe:
    """What one of our LLDP frames claims: who sent it, when, in which probe round."""

    dpid: int
    port: int
    probe_round: int
    stamp: int  # nanoseconds since the epoch, the sender's clock
    seq: int  # the sender's probe counter
    tag: bytes

    def signed_by(self, key: bytes) -> bool:
        """True if `tag` is this probe's MAC under `key` (compared in constant time)."""
        expected = _tag(key, self.dpid, self.port, self.probe_round, self.stamp, self.seq)
        return hmac.compare_digest(expected, self.tag)


def _tag(key: bytes, dpid: int, port: int, probe_round: int, stamp: int, seq: int) -> bytes:
    message = _DOMAIN + struct.pack("!QI", dpid, port) + _AUTH.pack(probe_round, stamp, seq)
    return hmac.new(key, message, hashlib.sha256).digest()[:TAG_BYTES]


def _tlv(tlv_type: int, value: bytes) -> bytes:
    return struct.pack("!H", (tlv_type << 9) | len(value)) + value


def lldp_frame(
    key: bytes, dpid: int, port: int, src_mac: str, stamp: int, seq: int, probe_round: int
) -> bytes:
    """A signed LLDP frame naming (dpid, port): chassis id 'dpid:<hex>', port id the number.

    `stamp` is in nanoseconds, `seq` a 64-bit and `probe_round` a 32-bit counter.
    """
    dst = bytes.fromhex(LLDP_MAC.replace(":", ""))
    src = bytes.fromhex(src_mac.replace(":", ""))
    auth = _AUTH.pack(probe_round, stamp, seq) + _tag(key, dpid, port, probe_round, stamp, seq)
    body = (
        _tlv(1, b"\x07" + _CHASSIS_PREFIX + b"%016x" % dpid)  # chassis id, locally assigned
        + _tlv(2, b"\x02" + struct.pack("!I", port))  # port id, port component
        + _tlv(3, struct.pack("!H", 120))  # time to live
        + _tlv(127, OUI + bytes([SUBTYPE_AUTH]) + auth)  # organizationally specific
        + _tlv(0, b"")  # end
    )
    return dst + src + struct.pack("!H", LLDP_ETHERTYPE) + body


def parse_lldp(data: bytes) -> Probe:
    """The probe an LLDP frame carries, not yet checked against a key.

    Raises Refused (MALFORMED or UNSIGNED) for anything that is not one of our frames.
    """
    if len(data) < 14 or data[12:14] != _ETHERTYPE:
        raise Refused(MALFORMED, "not an LLDP frame")
    try:
        tlvs = list(lldp_tlvs(data))
    except Malformed as exc:
        raise Refused(MALFORMED, str(exc)) from None
    dpid = port = auth = None
    for tlv_type, value in tlvs:
        if tlv_type == 1 and value[1:].startswith(_CHASSIS_PREFIX):
            text = value[1 + len(_CHASSIS_PREFIX) :]
            if len(text) != 16 or not all(c in b"0123456789abcdef" for c in text):
                raise Refused(MALFORMED, f"chassis id {value[1:]!r} is not a dpid")
            dpid = int(text, 16)  # 16 hex digits, as probes write it: always 64 bits
        elif tlv_type == 2 and len(value) == 5 and value[0] == 2:
            port = struct.unpack_from("!I", value, 1)[0]
        elif tlv_type == 127 and value[:4] == OUI + bytes([SUBTYPE_AUTH]):
            if len(value) != _AUTH_LEN:
                raise Refused(MALFORMED, f"authentication TLV of {len(value)} bytes")
            auth = value[4:]
    if dpid is None or port is None:
        raise Refused(UNSIGNED, "no dpid chassis id or port id: not the controller's LLDP")
    if auth is None:
        raise Refused(UNSIGNED, f"claims switch {dpid:016x} port {port} without a signature")
    probe_round, stamp, seq = _AUTH.unpack_from(auth)
    return Probe(dpid, port, probe_round, stamp, seq, auth[_AUTH.size :])
