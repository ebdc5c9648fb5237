"""The packet a trace follows: its fields in os-ken's OXM names, as Open vSwitch spells them,
and the test of a flow's match against it.

A trace packet is a dict of OXM field name to value (MAC and IP as text, the rest as ints),
the same shape `controller.flows` matches use, so a flow of ours can be tested against it.

>>> p = probe("10.0.0.1", "10.0.0.3", "tcp", 22, 40000, "00:00:00:00:00:01", "00:00:00:00:00:03")
>>> ovs_flow({**p, "in_port": 1})
'tcp,in_port=1,dl_src=00:00:00:00:00:01,dl_dst=00:00:00:00:00:03,nw_src=10.0.0.1,nw_dst=10.0.0.3,tp_src=40000,tp_dst=22,tcp_flags=syn'
>>> matches((("ip_proto", 6), ("tcp_dst", (16, 0xFFF0))), p)
True
"""

from __future__ import annotations

import ipaddress
from typing import Any

from os_ken.ofproto import ofproto_v1_3 as ofp

from controller.flows import Match
from controller.matches import CT_EST, CT_INV, CT_NEW, CT_REL, CT_RPL, CT_TRK, IP_PROTOCOLS
from controller.packets import ETH_TYPE_ARP, ETH_TYPE_IP, ETH_TYPE_IPV6

TCP_SYN = 0x002
PROTOCOLS = ("tcp", "udp", "icmp")
ICMP_ECHO_REQUEST = 8
ICMPV6_ECHO_REQUEST = 128
EPHEMERAL_PORT = 40000  # the source port of a traced connection when none is given

# ct_state flag names as Open vSwitch prints them (lib/odp-util.c ct_state_to_string).
CT_FLAGS = {"new": CT_NEW, "est": CT_EST, "rel": CT_REL, "rpl": CT_RPL, "inv": CT_INV}
CT_FLAGS["trk"] = CT_TRK
# Open vSwitch's protocol shorthands (ovs-fields(7)) -> (eth_type, ip_proto).
_SHORTHANDS = {
    "ip": (ETH_TYPE_IP, None),
    "icmp": (ETH_TYPE_IP, IP_PROTOCOLS["icmp"]),
    "tcp": (ETH_TYPE_IP, IP_PROTOCOLS["tcp"]),
    "udp": (ETH_TYPE_IP, IP_PROTOCOLS["udp"]),
    "sctp": (ETH_TYPE_IP, IP_PROTOCOLS["sctp"]),
    "arp": (ETH_TYPE_ARP, None),
    "ipv6": (ETH_TYPE_IPV6, None),
    "tcp6": (ETH_TYPE_IPV6, IP_PROTOCOLS["tcp"]),
    "udp6": (ETH_TYPE_IPV6, IP_PROTOCOLS["udp"]),
    "icmp6": (ETH_TYPE_IPV6, IP_PROTOCOLS["icmpv6"]),
}
_PROTO_NAMES = {v: k for k, v in IP_PROTOCOLS.items()}
# Fields every packet enters the pipeline with at 0 (no VLAN tag: OFPVID_NONE).
_ZERO_AT_START = frozenset(
    {"vlan_vid", "metadata", "ct_state", "ct_zone", "ct_mark", "reg0", "reg1"}
)
_INTS = ("in_port", "metadata", "ct_zone", "ct_mark", "reg0", "reg1", "icmp_type", "icmp_code")


class PacketError(ValueError):
    """A trace request that names no packet we can build (bad address, protocol or port)."""


def probe(
    src: str, dst: str, proto: str, dport: int | None, sport: int | None, src_mac: str, dst_mac: str
) -> dict[str, Any]:
    """The first packet of a new connection from `src` to `dst` (both IPv4 or both IPv6): a
    TCP SYN, a UDP datagram or an ICMP echo request (ICMPv6 for IPv6), with the given MACs;
    `sport` defaults to EPHEMERAL_PORT.

    Raises:
        PacketError: as `check` does.
    """
    family = check(src, dst, proto, dport, sport)
    v6 = family == 6
    pkt: dict[str, Any] = {
        "eth_src": src_mac,
        "eth_dst": dst_mac,
        "eth_type": ETH_TYPE_IPV6 if v6 else ETH_TYPE_IP,
        "ip_proto": IP_PROTOCOLS["icmpv6" if v6 and proto == "icmp" else proto],
        f"ipv{family}_src": str(ipaddress.ip_address(src)),
        f"ipv{family}_dst": str(ipaddress.ip_address(dst)),
    }
    if proto == "icmp":
        echo = ICMPV6_ECHO_REQUEST if v6 else ICMP_ECHO_REQUEST
        return {**pkt, f"icmpv{family}_type": echo, f"icmpv{family}_code": 0}
    sport = EPHEMERAL_PORT if sport is None else sport
    pkt.update({f"{proto}_src": sport, f"{proto}_dst": dport})
    return {**pkt, "tcp_flags": TCP_SYN} if proto == "tcp" else pkt


def check(src: str, dst: str, proto: str, dport: int | None, sport: int | None) -> int:
    """The address family (4 or 6) of a trace request that names a packet `probe` can build.

    Raises:
        PacketError: an address that is not IPv4 or IPv6 (an IPv6 scope "%zone" included: a
            switch's flow has none), addresses of two families, an unknown protocol, or a port
            outside 1-65535 (a TCP or UDP trace needs `dport`).
    """
    family = _family("src", src)
    if _family("dst", dst) != family:
        raise PacketError(f"src {src} and dst {dst}: one is IPv4, the other IPv6")
    if proto not in PROTOCOLS:
        raise PacketError(f"proto: {proto!r} is not one of {', '.join(PROTOCOLS)}")
    if proto != "icmp":
        sport = EPHEMERAL_PORT if sport is None else sport
        for name, port in (("dport", dport), ("sport", sport)):
            if port is None or not 1 <= port <= 65535:
                raise PacketError(f"{name}: {port!r} is not a port (1-65535); {proto} needs one")
    return family


def _family(name: str, value: str) -> int:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise PacketError(f"{name}: {value!r} is not an IPv4 or IPv6 address") from None
    if getattr(address, "scope_id", None) is not None:
        raise PacketError(f"{name}: {value!r} has a scope (%zone); give the address alone")
    return address.version


def ovs_flow(pkt: dict[str, Any]) -> str:
    """The packet as an ofproto/trace flow (ovs-fields(7) syntax): "tcp6", "ipv6_src" and
    ICMPv6's type for IPv6.

    >>> macs = "00:00:00:00:00:01", "00:00:00:00:00:03"
    >>> ovs_flow({**probe("fd00::1", "fd00::3", "icmp", None, None, *macs), "in_port": 1})
    'icmp6,in_port=1,dl_src=00:00:00:00:00:01,dl_dst=00:00:00:00:00:03,ipv6_src=fd00::1,ipv6_dst=fd00::3,icmp_type=128,icmp_code=0'
    """
    v6 = "ipv6_src" in pkt
    proto = _PROTO_NAMES.get(pkt.get("ip_proto", -1), "ip")
    proto = {"icmpv6": "icmp"}.get(proto, proto)
    parts = [f"{proto}6" if v6 and proto != "ip" else "ipv6" if v6 else proto]
    parts.append(f"in_port={pkt['in_port']}")
    vid = pkt.get("vlan_vid", 0)
    if vid & ofp.OFPVID_PRESENT:
        parts.append(f"dl_vlan={vid & 0xFFF}")
    parts += [f"dl_src={pkt['eth_src']}", f"dl_dst={pkt['eth_dst']}"]
    if v6:
        parts += [f"ipv6_src={pkt['ipv6_src']}", f"ipv6_dst={pkt['ipv6_dst']}"]
    else:
        parts += [f"nw_src={pkt['ipv4_src']}", f"nw_dst={pkt['ipv4_dst']}"]
    if proto in ("tcp", "udp"):
        parts += [f"tp_src={pkt[proto + '_src']}", f"tp_dst={pkt[proto + '_dst']}"]
    if proto == "tcp" and pkt.get("tcp_flags", 0) & TCP_SYN:
        parts.append("tcp_flags=syn")
    if proto == "icmp":
        icmp = "icmpv6" if v6 else "icmpv4"
        parts += [f"icmp_type={pkt[icmp + '_type']}", f"icmp_code={pkt[icmp + '_code']}"]
    return ",".join(parts)


def parse_ovs_flow(text: str) -> dict[str, Any]:
    """A packet from Open vSwitch's flow text (the "Flow:" and "Final flow:" lines of
    ofproto/trace): the fields a flow of ours may match, in OXM names. Fields it does not
    know are left out."""
    pkt: dict[str, Any] = {}
    proto = None
    for token in text.split(","):
        name, _, value = token.partition("=")
        if not _:
            if name in _SHORTHANDS:
                proto = name
                eth_type, ip_proto = _SHORTHANDS[name]
                pkt["eth_type"] = eth_type
                if ip_proto is not None:
                    pkt["ip_proto"] = ip_proto
            continue
        _field(pkt, proto, name, value)
    return pkt


def _field(pkt: dict[str, Any], proto: str | None, name: str, value: str) -> None:
    v6 = proto is not None and (proto.endswith("6") or proto == "ipv6")
    l4 = (proto or "").rstrip("6")
    if name in _INTS:
        key = {"icmp_type": "icmpv4_type", "icmp_code": "icmpv4_code"}.get(name, name)
        if v6 and name.startswith("icmp_"):
            key = key.replace("v4", "v6")
        pkt[key] = int(value, 0)
    elif name in ("dl_src", "dl_dst"):
        pkt["eth_" + name[3:]] = value
    elif name in ("nw_src", "nw_dst") and proto == "arp":
        pkt["arp_spa" if name == "nw_src" else "arp_tpa"] = value
    elif name in ("nw_src", "nw_dst", "ipv6_src", "ipv6_dst"):
        pkt[("ipv6_" if v6 else "ipv4_") + name[-3:]] = value
    elif name in ("tp_src", "tp_dst") and l4 in ("tcp", "udp", "sctp"):
        pkt[f"{l4}_{name[3:]}"] = int(value, 0)
    elif name == "ct_state":
        pkt["ct_state"] = sum(CT_FLAGS.get(f, 0) for f in value.split("|"))
    elif name == "vlan_tci":
        tci = int(value, 0)
        pkt["vlan_vid"] = (tci & 0xFFF) | ofp.OFPVID_PRESENT if tci & 0x1000 else 0
    elif name == "tcp_flags":
        pkt["tcp_flags"] = TCP_SYN if "syn" in value.split("|") else 0


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, int):
        return value
    text = str(value)
    if text.count(":") == 5 and len(text) == 17:
        return int(text.replace(":", ""), 16)
    return int(ipaddress.ip_address(text))


def matches(match: Match, pkt: dict[str, Any]) -> bool:
    """Does a flow's (canonical) match take this packet? A field the packet lacks fails,
    except those every packet starts with at 0 (metadata, registers, conntrack, no tag)."""
    for name, want in match:
        value, mask = want if isinstance(want, tuple) else (want, None)
        have = pkt.get(name, 0 if name in _ZERO_AT_START else None)
        if have is None:
            return False
        a, b = _as_int(name, have), _as_int(name, value)
        m = -1 if mask is None else _as_int(name, mask)
        if (a ^ b) & m:
            return False
    return True
