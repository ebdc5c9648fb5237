"""Packet bytes, read in one place: the header fields the packet-in path and the apps need.

Numbers are os-ken's (`os_ken.lib.packet.ether_types`, `in_proto`), named once here. Parsing
is by hand with `struct` on purpose: it runs for every packet-in, and os-ken's `Packet()`
builds an object per header, about 20 times slower on an ARP frame (25 us against 1.1 us).
tests/unit/test_packets.py checks every function byte for byte against scapy's dissection, on
generated, truncated and malformed frames.

Frames are read as an OpenFlow 1.3 switch (Open vSwitch, vlan-limit 1) matches them: one VLAN
tag (802.1Q 0x8100 or 802.1ad 0x88a8) is looked through, and `eth_type` is the type after it.
Nothing here raises on short or malformed bytes: a function returns "" / None / 0 instead
(lldp_tlvs, whose caller must tell a cut frame from ours, raises Malformed).

>>> frame = arp_frame(1, "00:00:00:00:00:01", "10.0.0.1", "00:00:00:00:00:00", "10.0.0.2")
>>> parse_eth(frame)
('ff:ff:ff:ff:ff:ff', '00:00:00:00:00:01', 2054)
>>> parse_arp(frame)
Arp(opcode=1, src_mac='00:00:00:00:00:01', src_ip='10.0.0.1', dst_mac='00:00:00:00:00:00', \
dst_ip='10.0.0.2')
>>> source_ip(frame), connection_of(frame)
('10.0.0.1', None)
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator
from typing import NamedTuple

from os_ken.lib.packet import ether_types, in_proto

ETH_TYPE_IP = ether_types.ETH_TYPE_IP  # 0x0800
ETH_TYPE_ARP = ether_types.ETH_TYPE_ARP  # 0x0806
ETH_TYPE_IPV6 = ether_types.ETH_TYPE_IPV6  # 0x86dd
ETH_TYPE_LLDP = ether_types.ETH_TYPE_LLDP  # 0x88cc
ETH_TYPE_8021Q = ether_types.ETH_TYPE_8021Q  # 0x8100, a customer VLAN tag
ETH_TYPE_8021AD = ether_types.ETH_TYPE_8021AD  # 0x88a8, a service VLAN tag
VLAN_TPIDS = (ETH_TYPE_8021Q, ETH_TYPE_8021AD)
IPPROTO_ICMP = in_proto.IPPROTO_ICMP  # 1
IPPROTO_TCP = in_proto.IPPROTO_TCP  # 6
IPPROTO_UDP = in_proto.IPPROTO_UDP  # 17
IPPROTO_ICMPV6 = in_proto.IPPROTO_ICMPV6  # 58
IPPROTO_SCTP = in_proto.IPPROTO_SCTP  # 132
ARP_REQUEST, ARP_REPLY = 1, 2  # RFC 826 opcodes
BROADCAST = "ff:ff:ff:ff:ff:ff"

_L4_NAMES = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_SCTP: "sctp"}
_U16 = struct.Struct("!H")
_PORTS = struct.Struct("!HH")
_ARP = struct.Struct("!HHBBH6s4s6s4s")  # RFC 826 for Ethernet and IPv4
_ARP_HEAD = (1, ETH_TYPE_IP, 6, 4)  # hardware Ethernet, protocol IPv4, their lengths


class Arp(NamedTuple):
    """An ARP packet for Ethernet and IPv4 (RFC 826): opcode 1 request, 2 reply; MACs as
    "aa:bb:..:ff" text, addresses as dotted quads.
    """

    opcode: int
    src_mac: str
    src_ip: str
    dst_mac: str
    dst_ip: str


class Malformed(ValueError):
    """Bytes that claim a structure they do not have (a TLV running past the frame)."""


def parse_eth(data: bytes) -> tuple[str, str, int]:
    """(eth_dst, eth_src, eth_type) as "aa:bb:..:ff" strings and the type after one VLAN tag;
    ("", "", 0) for fewer than 14 bytes. The hot path: one call per packet-in."""
    if len(data) < 14:
        return "", "", 0
    eth_type = _U16.unpack_from(data, 12)[0]
    if eth_type in VLAN_TPIDS and len(data) >= 18:
        eth_type = _U16.unpack_from(data, 16)[0]
    return data[0:6].hex(":"), data[6:12].hex(":"), eth_type


def payload(data: bytes) -> tuple[int, int]:
    """(eth_type, offset of the bytes after the Ethernet header and one VLAN tag); (0, 0) for a
    frame too short to have a type."""
    if len(data) < 14:
        return 0, 0
    eth_type = _U16.unpack_from(data, 12)[0]
    if eth_type in VLAN_TPIDS:
        if len(data) < 18:
            return 0, 0
        return _U16.unpack_from(data, 16)[0], 18
    return eth_type, 14


def parse_arp(data: bytes) -> Arp | None:
    """The ARP message of an Ethernet/IPv4 ARP frame (RFC 826), else None."""
    eth_type, at = payload(data)
    if eth_type != ETH_TYPE_ARP or len(data) < at + _ARP.size:
        return None
    hw, proto, hlen, plen, op, sha, spa, tha, tpa = _ARP.unpack_from(data, at)
    if (hw, proto, hlen, plen) != _ARP_HEAD:
        return None
    return Arp(op, sha.hex(":"), _ipv4(spa), tha.hex(":"), _ipv4(tpa))


def _ipv4(raw: bytes) -> str:
    return ".".join(map(str, raw))


def _ip_header(data: bytes) -> tuple[int, int, str, str, int] | None:
    """(version, protocol, source, destination, offset of the transport header) of an IPv4 or
    IPv6 frame; IPv6 extension headers are not walked (the protocol is the next header)."""
    eth_type, at = payload(data)
    if eth_type == ETH_TYPE_IP and len(data) >= at + 20:
        ihl = (data[at] & 0x0F) * 4
        if data[at] >> 4 != 4 or ihl < 20:
            return None
        src, dst = _ipv4(data[at + 12 : at + 16]), _ipv4(data[at + 16 : at + 20])
        return 4, data[at + 9], src, dst, at + ihl
    if eth_type == ETH_TYPE_IPV6 and len(data) >= at + 40 and data[at] >> 4 == 6:
        src = str(ipaddress.IPv6Address(data[at + 8 : at + 24]))
        dst = str(ipaddress.IPv6Address(data[at + 24 : at + 40]))
        return 6, data[at + 6], src, dst, at + 40
    return None


def source_ip(data: bytes) -> str | None:
    """The address a frame claims to come from: ARP's sender address, or the IPv4 or IPv6
    source; None for anything else or a cut header."""
    arp = parse_arp(data)
    if arp is not None:
        return arp.src_ip
    ip = _ip_header(data)
    return ip[2] if ip is not None else None


def connection_of(data: bytes) -> tuple[str, str, int, int, int] | None:
    """(source IP, destination IP, IP protocol, source port, destination port) of a TCP or UDP
    frame over IPv4 or IPv6, else None (also for a cut transport header)."""
    ip = _ip_header(data)
    if ip is None or ip[1] not in (IPPROTO_TCP, IPPROTO_UDP) or len(data) < ip[4] + 4:
        return None
    sport, dport = _PORTS.unpack_from(data, ip[4])
    return ip[2], ip[3], ip[1], sport, dport


def header_fields(data: bytes) -> dict[str, str | int]:
    """The header fields a flow may match in a frame, in os-ken's OXM names (MACs and
    addresses as text, the rest as ints): eth_dst, eth_src, eth_type; for IPv4 and IPv6
    ip_proto and the addresses; TCP, UDP and SCTP ports (and tcp_flags); ICMP's type and
    code. A cut header ends the dict where it is cut; an empty dict for under 14 bytes."""
    eth_dst, eth_src, eth_type = parse_eth(data)
    if not eth_src:
        return {}
    out: dict[str, str | int] = {"eth_dst": eth_dst, "eth_src": eth_src, "eth_type": eth_type}
    ip = _ip_header(data)
    if ip is None:
        return out
    version, proto, src, dst, at = ip
    out.update({"ip_proto": proto, f"ipv{version}_src": src, f"ipv{version}_dst": dst})
    if proto in _L4_NAMES and len(data) >= at + 4:
        name = _L4_NAMES[proto]
        out[f"{name}_src"], out[f"{name}_dst"] = _PORTS.unpack_from(data, at)
        if proto == IPPROTO_TCP and len(data) >= at + 14:
            out["tcp_flags"] = _U16.unpack_from(data, at + 12)[0] & 0x0FFF
    elif proto in (IPPROTO_ICMP, IPPROTO_ICMPV6) and len(data) >= at + 2:
        icmp = "icmpv4" if proto == IPPROTO_ICMP else "icmpv6"
        out[f"{icmp}_type"], out[f"{icmp}_code"] = data[at], data[at + 1]
    return out


def lldp_tlvs(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(type, value) of each TLV of an untagged LLDP frame (IEEE 802.1AB), up to the End TLV.

    Raises Malformed when a TLV runs past the frame or there is no End TLV; yields nothing
    from a frame that is not LLDP."""
    if len(data) < 14 or _U16.unpack_from(data, 12)[0] != ETH_TYPE_LLDP:
        return
    offset = 14
    while offset + 2 <= len(data):
        header = _U16.unpack_from(data, offset)[0]
        tlv_type, length = header >> 9, header & 0x1FF
        if tlv_type == 0:
            return
        if offset + 2 + length > len(data):
            raise Malformed(f"TLV type {tlv_type} at byte {offset} runs past the frame")
        yield tlv_type, data[offset + 2 : offset + 2 + length]
        offset += 2 + length
    raise Malformed("no End TLV")


def arp_frame(op: int, src_mac: str, src_ip: str, dst_mac: str, dst_ip: str) -> bytes:
    """An untagged Ethernet/IPv4 ARP frame (RFC 826), padded to Ethernet's 60-byte minimum: a
    request is broadcast, a reply goes to dst_mac. Raises ValueError for a malformed MAC or
    IPv4 address."""
    eth_dst = dst_mac if op == ARP_REPLY else BROADCAST
    frame = (
        _mac(eth_dst)
        + _mac(src_mac)
        + _U16.pack(ETH_TYPE_ARP)
        + _ARP.pack(
            *_ARP_HEAD,
            op,
            _mac(src_mac),
            ipaddress.IPv4Address(src_ip).packed,
            _mac(dst_mac),
            ipaddress.IPv4Address(dst_ip).packed,
        )
    )
    return frame + bytes(60 - len(frame))


def _mac(text: str) -> bytes:
    raw = bytes.fromhex(text.replace(":", ""))
    if len(raw) != 6:
        raise ValueError(f"{text!r} is not a MAC address")
    return raw
