"""Match pieces that several apps build the same way: address prefixes and port ranges.

OpenFlow matches a port range only as masked values, so a range becomes the few aligned blocks
that cover it exactly (Open vSwitch accepts masks on tcp/udp/sctp ports).

>>> port_masks(8000, 8080)
[(8000, 65472), (8064, 65520), (8080, 65535)]
>>> prefix_match("ipv4_src", ipaddress.ip_network("10.0.0.0/8"))
{'ipv4_src': ('10.0.0.0', '255.0.0.0')}
"""

from __future__ import annotations

import ipaddress

from controller.packets import (
    ETH_TYPE_IP,
    ETH_TYPE_IPV6,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
)

ETH_TYPES = {4: ETH_TYPE_IP, 6: ETH_TYPE_IPV6}
IP_PROTOCOLS = {
    "tcp": IPPROTO_TCP,
    "udp": IPPROTO_UDP,
    "sctp": IPPROTO_SCTP,
    "icmp": IPPROTO_ICMP,
    "icmpv6": IPPROTO_ICMPV6,
}
PROTOCOL_NAMES = {number: name for name, number in IP_PROTOCOLS.items()}
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
ND_TYPES = (133, 134, 135, 136, 137)  # ICMPv6 neighbour discovery: IPv6 cannot work without it
CT_NEW, CT_EST, CT_REL, CT_RPL, CT_INV, CT_TRK = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20  # ct_state
CT_SNAT, CT_DNAT = 0x40, 0x80  # ct_state: the packet was translated (source, destination)
TCP_SYN, TCP_ACK = 0x002, 0x010  # tcp_flags (RFC 9293 section 3.1)


def port_masks(lo: int, hi: int) -> list[tuple[int, int]]:
    """Aligned (value, mask) blocks that cover lo..hi exactly, fewest first."""
    out = []
    while lo <= hi:
        size = lo & -lo if lo else 1 << 16
        while size > hi - lo + 1:
            size >>= 1
        out.append((lo, 0xFFFF ^ (size - 1)))
        lo += size
    return out


def port_matches(field: str, ports: tuple[int, int] | None) -> list[dict]:
    """One match dict per block of the range (one empty dict when every port is meant)."""
    if ports is None or ports == (0, 65535):
        return [{}]
    return [
        {field: value if mask == 0xFFFF else (value, mask)} for value, mask in port_masks(*ports)
    ]


def prefix_match(field: str, net: IPNetwork) -> dict:
    """{field: address} for a host route, {field: (network, netmask)} for a prefix, {} for /0."""
    if not net.prefixlen:
        return {}
    if net.prefixlen == net.max_prefixlen:
        return {field: str(net.network_address)}
    return {field: (str(net.network_address), str(net.netmask))}
