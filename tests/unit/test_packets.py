"""controller/packets.py against scapy's dissection, byte for byte, on generated frames, every
prefix of them, and junk: the same fields, or nothing where a header is cut, and never a raise."""

import contextlib
import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st
from os_ken.lib.packet import arp as osken_arp
from os_ken.lib.packet import ethernet, packet
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

from controller import packets
from controller.packets import Arp

MAC = st.binary(min_size=6, max_size=6).map(lambda b: b.hex(":"))
IPV4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
IPV6 = st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))
PORT = st.integers(0, 65535)


@st.composite
def frames(draw):
    """(scapy packet, length of the headers our parse needs) for an Ethernet frame with at most
    one VLAN tag and ARP, IPv4 (options too) or IPv6 with TCP, UDP, ICMP or other payloads."""
    head = Ether(dst=draw(MAC), src=draw(MAC))
    need = 14
    tag = draw(st.sampled_from([None, Dot1Q, Dot1AD]))
    if tag is not None:
        head = head / tag(vlan=draw(st.integers(0, 4095)))
        need += 4
    kind = draw(st.sampled_from(["arp", "ipv4", "ipv6", "other"]))
    if kind == "arp":
        body = ARP(
            hwtype=draw(st.sampled_from([1, 1, 1, 6])),
            ptype=draw(st.sampled_from([0x0800, 0x0800, 0x86DD])),
            op=draw(st.integers(0, 3)),
            hwsrc=draw(MAC),
            psrc=draw(IPV4),
            hwdst=draw(MAC),
            pdst=draw(IPV4),
        )
        return head / body, need + 28
    if kind == "other":
        body = Raw(draw(st.binary(max_size=40)))
        pkt = head / body
        eth_type = draw(st.sampled_from([0x88B5, 0x0600, 0x9000, 0xFFFF]))
        pkt[Ether if tag is None else tag].type = eth_type
        return pkt, need
    l4 = draw(st.sampled_from(["tcp", "udp", "icmp", "raw"]))
    transport = {
        "tcp": lambda: TCP(sport=draw(PORT), dport=draw(PORT)),
        "udp": lambda: UDP(sport=draw(PORT), dport=draw(PORT)),
        "icmp": lambda: ICMP(type=draw(st.integers(0, 255))),
        "raw": lambda: Raw(draw(st.binary(max_size=8))),
    }[l4]()
    if kind == "ipv4":
        options = draw(st.sampled_from([b"", b"\x01\x01\x01\x00", b"\x01" * 7 + b"\x00"]))
        ip = IP(src=draw(IPV4), dst=draw(IPV4), options=options)
        ip_len = 20 + len(options)
    else:
        ip, ip_len = IPv6(src=draw(IPV6), dst=draw(IPV6)), 40
    return head / ip / transport, need + ip_len + (4 if l4 in ("tcp", "udp") else 0)


def expected(pkt) -> dict:
    """What scapy reads: the same answers our functions give (EtherTypes from 0x0600: below,
    the field is an 802.3 length and scapy reads another header)."""
    tagged = next((pkt[t] for t in (Dot1Q, Dot1AD) if t in pkt), None)
    out = {"eth": (pkt[Ether].dst, pkt[Ether].src, (tagged or pkt[Ether]).type)}
    a = pkt.getlayer(ARP)
    ok = a is not None and (a.hwtype, a.ptype, a.hwlen, a.plen) == (1, 0x0800, 6, 4)
    out["arp"] = Arp(a.op, a.hwsrc, a.psrc, a.hwdst, a.pdst) if ok else None
    ip = pkt.getlayer(IP) or pkt.getlayer(IPv6)
    out["source"] = out["arp"].src_ip if ok else (_text(ip.src) if ip is not None else None)
    l4 = next((pkt[t] for t in (TCP, UDP) if t in pkt), None)
    out["conn"] = None
    if l4 is not None:
        proto = 6 if isinstance(l4, TCP) else 17
        out["conn"] = (_text(ip.src), _text(ip.dst), proto, l4.sport, l4.dport)
    return out


def _text(address: str) -> str:
    """An address as Python writes it (scapy writes ::0.1.0.0 for ::1:0)."""
    return str(ipaddress.ip_address(address))


def ours(data: bytes) -> dict:
    return {
        "eth": packets.parse_eth(data),
        "arp": packets.parse_arp(data),
        "source": packets.source_ip(data),
        "conn": packets.connection_of(data),
    }


@settings(max_examples=400, deadline=None)
@given(frames())
def test_generated_frames_read_as_scapy_reads_them(case):
    pkt, _ = case
    data = bytes(pkt)
    assert ours(data) == expected(Ether(data))


@settings(max_examples=200, deadline=None)
@given(frames(), st.data())
def test_a_cut_frame_reads_as_nothing_or_as_the_whole(case, data_strategy):
    """A prefix long enough for the headers a function needs reads as the whole frame; a
    shorter one as nothing. Never a raise, never a field read from past the end."""
    pkt, need = case
    data = bytes(pkt)
    whole = ours(data)
    cut = data_strategy.draw(st.integers(0, len(data)))
    part = ours(data[:cut])
    if cut >= need:
        assert part == whole
    for key in ("arp", "source", "conn"):
        assert part[key] in (None, whole[key])
    assert part["eth"] == (whole["eth"] if cut >= 18 else part["eth"])
    if cut < 14:
        assert part["eth"] == ("", "", 0)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=80))
def test_junk_never_raises_and_ethernet_reads_as_scapy(data):
    got = ours(data)
    if len(data) >= 18 and int.from_bytes(data[12:14], "big") >= 0x0600:  # else 802.3 length
        eth = Ether(data)
        tagged = eth.type in packets.VLAN_TPIDS
        inner = int.from_bytes(data[16:18], "big") if tagged else eth.type
        assert got["eth"] == (eth.dst, eth.src, inner)
    with contextlib.suppress(packets.Malformed):
        list(packets.lldp_tlvs(data))


def test_malformed_ip_headers_read_as_nothing():
    tcp = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=2))
    assert packets.connection_of(tcp) == ("10.0.0.1", "10.0.0.2", 6, 1, 2)
    for at, byte in ((14, 0x44), (14, 0x65)):  # IHL 4 (< 20 bytes), version 6 in an IPv4 type
        bad = tcp[:at] + bytes([byte]) + tcp[at + 1 :]
        assert packets.connection_of(bad) is None and packets.source_ip(bad) is None


def test_arp_frames_are_byte_for_byte_os_kens():
    for op, dst_mac in ((1, "00:00:00:00:00:00"), (2, "00:00:00:00:00:02")):
        pkt = packet.Packet()
        eth_dst = dst_mac if op == 2 else "ff:ff:ff:ff:ff:ff"
        pkt.add_protocol(ethernet.ethernet(eth_dst, "00:00:00:00:00:01", 0x0806))
        pkt.add_protocol(
            osken_arp.arp(
                opcode=op,
                src_mac="00:00:00:00:00:01",
                src_ip="10.0.0.1",
                dst_mac=dst_mac,
                dst_ip="10.0.0.2",
            )
        )
        pkt.serialize()
        mine = packets.arp_frame(op, "00:00:00:00:00:01", "10.0.0.1", dst_mac, "10.0.0.2")
        assert mine == bytes(pkt.data)
