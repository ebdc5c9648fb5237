"""Fake switches wired into a network and driven by a real Core, with a clock the test controls.

Frames travel for real through the fake switches' tables: out of one port, into the peer's. LLDP
packet-outs reach neighbours, packet-ins reach the core, and the core's replies are applied to the
switches. Switches read the core's messages as bytes; their answers to its requests (port, flow,
group and meter descriptions) are bytes parsed by os-ken and read as controller/shim.py reads a
real switch's. A frame visiting more switches than STORM_LIMIT is a broadcast storm: the test fails.

Hosts and VNFs treat VLAN-tagged frames as the lab's do (measured on the VNF lab, see
docs/security.md, "Hosts and VLAN tags"): a host, a Linux network namespace with no 802.1Q
device, discards a frame tagged with a non-zero VID (the kernel marks it PACKET_OTHERHOST) and
takes a priority-tagged one (VID 0) as untagged; the firewall VNF lets only untagged IPv4 and ARP
cross (vnf/firewall/agent.py), so a tagged frame never crosses it.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import Counter, deque
from dataclasses import dataclass, field

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller.core import Core
from controller.flows import group_from_desc, meter_from_config
from controller.shim import port_info
from controller.switch import FlowStat, GroupStat, PortInfo
from tests.fakeswitch import FakeSwitch
from tests.ofwire import Request, multipart_reply, port_body

STORM_LIMIT = 500
BROADCAST = "ff:ff:ff:ff:ff:ff"


class StormError(AssertionError):
    pass


TPID = 0x8100  # 802.1Q; 0x88A8 (802.1ad) is read as a tag too, as Open vSwitch does
TAG_TYPES = (0x8100, 0x88A8)


def frame(
    dst: str,
    src: str,
    eth_type: int = 0x0800,
    payload: bytes = b"\x00" * 46,
    tags: tuple[int, ...] = (),
) -> bytes:
    """An Ethernet frame; `tags` are 802.1Q VIDs, outermost first."""
    return (
        bytes.fromhex(dst.replace(":", ""))
        + bytes.fromhex(src.replace(":", ""))
        + b"".join(struct.pack("!HH", TPID, vid & 0xFFF) for vid in tags)
        + eth_type.to_bytes(2, "big")
        + payload
    )


def payload_for(eth_type: int, fields: dict) -> bytes:
    """Enough of an ARP, IP, TCP or UDP header for the controller to read a packet-in and for
    a packet-out of it to travel on with the same fields."""
    if eth_type == 0x0806:
        sha = bytes.fromhex(fields.get("arp_sha", "00:00:00:00:00:00").replace(":", ""))
        spa = ipaddress.IPv4Address(fields.get("arp_spa", "0.0.0.0")).packed
        tha = bytes.fromhex(fields.get("arp_tha", "00:00:00:00:00:00").replace(":", ""))
        tpa = ipaddress.IPv4Address(fields.get("arp_tpa", "0.0.0.0")).packed
        op = fields.get("arp_op", 1).to_bytes(2, "big")
        return b"\x00\x01\x08\x00\x06\x04" + op + sha + spa + tha + tpa
    if eth_type == 0x0800 and "ipv4_src" in fields:
        src = ipaddress.IPv4Address(fields["ipv4_src"]).packed
        dst = ipaddress.IPv4Address(fields.get("ipv4_dst", "0.0.0.0")).packed
        proto = fields.get("ip_proto", 0)
        ports = b""
        if proto in (6, 17):
            name = "tcp" if proto == 6 else "udp"
            ports = struct.pack("!HH", fields.get(f"{name}_src", 0), fields.get(f"{name}_dst", 0))
        return b"\x45" + b"\x00" * 8 + bytes([proto]) + b"\x00" * 2 + src + dst + ports
    if eth_type == 0x86DD and "ipv6_src" in fields:
        src = ipaddress.IPv6Address(fields["ipv6_src"]).packed
        dst = ipaddress.IPv6Address(fields.get("ipv6_dst", "::")).packed
        return b"\x60" + b"\x00" * 5 + bytes([fields.get("ip_proto", 0), 64]) + src + dst
    return b"\x00" * 46


def fields_of(data: bytes) -> dict:
    """A frame's header fields, as a switch would match them (what payload_for writes): the
    outermost VLAN tag as `vlan_vid` (OFPVID_PRESENT | VID), any below it in "_inner_vlans",
    and `eth_type` the type after the tags, as in OpenFlow 1.3."""
    out = {"eth_dst": data[0:6].hex(":"), "eth_src": data[6:12].hex(":"), "_data": data}
    vids = []
    while int.from_bytes(data[12:14], "big") in TAG_TYPES:
        vids.append(ofp.OFPVID_PRESENT | int.from_bytes(data[14:16], "big") & 0xFFF)
        data = data[:12] + data[16:]
    if vids:
        out["vlan_vid"] = vids[0]
    if vids[1:]:
        out["_inner_vlans"] = tuple(vids[1:])
    out["eth_type"] = int.from_bytes(data[12:14], "big")
    if out["eth_type"] == 0x0806 and len(data) >= 42:
        out |= {
            "arp_op": int.from_bytes(data[20:22], "big"),
            "arp_sha": data[22:28].hex(":"),
            "arp_spa": str(ipaddress.IPv4Address(data[28:32])),
            "arp_tha": data[32:38].hex(":"),
            "arp_tpa": str(ipaddress.IPv4Address(data[38:42])),
        }
    elif out["eth_type"] == 0x0800 and len(data) >= 34:
        proto = data[23]
        out |= {
            "ip_proto": proto,
            "ipv4_src": str(ipaddress.IPv4Address(data[26:30])),
            "ipv4_dst": str(ipaddress.IPv4Address(data[30:34])),
        }
        if proto in (6, 17) and len(data) >= 38:
            name = "tcp" if proto == 6 else "udp"
            out[f"{name}_src"], out[f"{name}_dst"] = struct.unpack_from("!HH", data, 34)
        if proto == 6 and len(data) >= 48:  # a whole TCP header: its flags too
            out["tcp_flags"] = int.from_bytes(data[46:48], "big") & 0x0FFF
    return out


def host_takes(fields: dict) -> bool:
    """Does a lab host take this frame in? Untagged and priority-tagged (VID 0) frames, yes; a
    tagged one, no: it has no 802.1Q device (Linux, net/core/dev.c, __netif_receive_skb_core)."""
    return fields.get("vlan_vid", ofp.OFPVID_NONE) & 0xFFF == 0


@dataclass
class Delivery:
    hosts: list[str] = field(default_factory=list)  # hosts that took the frame in
    visits: Counter = field(default_factory=Counter)
    frames: list[tuple[str, dict]] = field(default_factory=list)  # (host, fields on its wire)
    bumps: list[tuple[int, int]] = field(default_factory=list)  # (switch, port) of VNFs crossed
    # (switch, in_port, the tables the frame went through there in order), one per arrival
    walks: list[tuple[int, int, list[int]]] = field(default_factory=list)

    @property
    def max_visits(self) -> int:
        return max(self.visits.values(), default=0)


class FakeNetwork:
    def __init__(self, core: Core) -> None:
        self.core = core
        core.strict_pipeline = True  # a flow that breaks the pipeline's contract fails the test
        self.switches: dict[int, FakeSwitch] = {}
        self.wires: dict[tuple[int, int], tuple] = {}
        self.hosts: dict[str, tuple[int, int]] = {}
        self.connected: set[int] = set()
        self.now = 1000.0
        self.messages_sent: Counter = Counter()
        self.connections: dict = {}  # one conntrack for every bridge, as in one ovs-vswitchd
        self.port_names: dict[tuple[int, int], str] = {}
        self.addresses: dict[str, str] = {}  # host MAC -> the IPv4 address it answers ARP for

    # --- building ------------------------------------------------------------------------------

    def add_switch(self, dpid: int, n_ports: int) -> FakeSwitch:
        sw = FakeSwitch(dpid, self.core.pipeline.n_tables, {p: True for p in range(1, n_ports + 1)})
        # Mininet's bridges share one userspace datapath, hence one connection-tracking table.
        sw.connections = self.connections
        sw.contract = (
            self.core.pipeline.check
        )  # what arrives on the wire keeps its table's contract
        self.switches[dpid] = sw
        return sw

    def link(self, d1: int, p1: int, d2: int, p2: int) -> None:
        self.wires[(d1, p1)] = ("switch", d2, p2)
        self.wires[(d2, p2)] = ("switch", d1, p1)

    def add_bump(self, dpid: int, a: int, b: int, names: tuple[str, str], passes=None) -> None:
        """A transparent VNF between two ports of a switch: what leaves one comes back in at
        the other, if `passes` lets it. LLDP never crosses (as with a Linux bridge), nor does
        a tagged frame (the firewall VNF's bridge chain passes only untagged IPv4 and ARP)."""
        ok = passes or (lambda pkt: True)
        self.wires[(dpid, a)] = ("bump", b, ok)
        self.wires[(dpid, b)] = ("bump", a, ok)
        self.port_names[(dpid, a)], self.port_names[(dpid, b)] = names

    def add_host(self, mac: str, dpid: int, port: int) -> None:
        self.hosts[mac] = (dpid, port)
        self.wires[(dpid, port)] = ("host", mac)

    def port_infos(self, dpid: int) -> list[PortInfo]:
        sw = self.switches[dpid]
        return [
            PortInfo(p, self.port_names.get((dpid, p), f"s{dpid}-eth{p}"), sw.hw_addr(p), live)
            for p, live in sw.ports.items()
        ]

    # --- control channel -----------------------------------------------------------------------

    def connect(self, *dpids: int) -> None:
        for dpid in dpids or tuple(self.switches):
            self.connected.add(dpid)
            self.deliver(self.core.switch_connected(dpid, self.now))

    def disconnect(self, dpid: int) -> None:
        self.connected.discard(dpid)
        self.deliver(self.core.switch_disconnected(dpid, self.now))

    def start(self, settle: float = 3.0) -> None:
        self.connect()
        self.advance(settle)

    def advance(self, seconds: float, step: float = 0.5) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step)
            self.deliver(self.core.tick(self.now))

    def deliver(self, outbox: dict[int, list], delivery: Delivery | None = None) -> None:
        """Apply the core's messages to the switches; answer requests; carry packet-outs
        (the hosts they reach are added to `delivery`)."""
        work = deque(outbox.items())
        while work:
            dpid, msgs = work.popleft()
            if dpid not in self.connected:
                continue
            sw = self.switches[dpid]
            self.messages_sent[dpid] += len(msgs)
            for msg in sw.apply(msgs):
                for reply in self._answer(dpid, msg, delivery):
                    work.extend(reply.items())
            for xid, err_type, code in sw.errors:
                work.extend(self.core.error(dpid, err_type, code, self.now, xid).items())
            sw.errors.clear()

    def _answer(self, dpid: int, msg, delivery: Delivery | None = None) -> list[dict]:
        """The core's answer to what the switch replies to `msg` (as it decoded it). Replies
        are bytes parsed by os-ken and read as controller/shim.py reads them."""
        sw, core, now = self.switches[dpid], self.core, self.now
        if isinstance(msg, parser.OFPPacketOut):
            pkt = fields_of(msg.data)
            return self._forward(dpid, msg.in_port, pkt, delivery or Delivery(), msg.actions)
        if not isinstance(msg, Request) or msg.mp_type is None:
            return []
        if msg.mp_type == ofp.OFPMP_PORT_DESC:
            reply = multipart_reply(ofp.OFPMP_PORT_DESC, msg.xid, self._port_bodies(dpid))
            return [core.ports_reply(dpid, msg.xid, [port_info(p) for p in reply.body], False, now)]
        if msg.mp_type == ofp.OFPMP_FLOW:
            reply = sw.flow_stats_reply(msg.xid, msg.table_id, msg.cookie, msg.cookie_mask)
            stats = [FlowStat(None, s.packet_count, s.byte_count, raw=s) for s in reply.body]
            return [core.flows_reply(dpid, msg.xid, stats, False, now)]
        if msg.mp_type == ofp.OFPMP_GROUP_DESC:
            groups = [group_from_desc(d) for d in sw.group_desc_reply(msg.xid).body]
            return [core.groups_reply(dpid, msg.xid, groups, False, now)]
        if msg.mp_type == ofp.OFPMP_GROUP:
            stats = [GroupStat.of(s) for s in sw.group_stats_reply(msg.xid).body]
            return [core.group_stats_reply(dpid, msg.xid, stats, False, now)]
        if msg.mp_type == ofp.OFPMP_METER_CONFIG:
            meters = [meter_from_config(c) for c in sw.meter_config_reply(msg.xid).body]
            return [core.meters_reply(dpid, msg.xid, meters, False, now)]
        return []

    def _port_bodies(self, dpid: int) -> list[bytes]:
        return [port_body(p.port_no, p.hw_addr, p.name, p.live) for p in self.port_infos(dpid)]

    # --- data plane ----------------------------------------------------------------------------

    def _forward(
        self, dpid: int, in_port: int, pkt: dict, delivery: Delivery, actions: list | None = None
    ) -> list[dict]:
        """Run a frame through the network from (dpid, in_port), or, for a packet-out, through
        `actions` on `dpid` first; return the core's replies."""
        queue = deque([(dpid, in_port, pkt)])
        packet_ins = []
        while queue:
            d, p, frame_fields = queue.popleft()
            sw = self.switches[d]
            if actions is None and not sw.ports.get(p):
                continue
            delivery.visits[d] += 1
            if sum(delivery.visits.values()) > STORM_LIMIT:
                raise StormError(f"frame {frame_fields} visited {dict(delivery.visits)}")
            if actions is None:
                result = sw.lookup({**frame_fields, "in_port": p})
                delivery.walks.append((d, p, [f.table for f in result.matched]))
            else:
                result, actions = sw.execute({**frame_fields, "in_port": p}, actions), None
            if d in self.connected:
                for table, cookie, at in result.to_controller:
                    meta = at.get("metadata", 0)
                    packet_ins.append((d, p, frame_fields["_data"], table, cookie, meta))
            for out_port, sent in result.outputs:
                wire = self.wires.get((d, out_port))
                if wire is None:
                    continue
                if wire[0] == "host":
                    if host_takes(sent):
                        delivery.hosts.append(wire[1])
                        answer = self._arp_answer(wire[1], sent)
                        if answer is not None:
                            queue.append((d, out_port, answer))
                    delivery.frames.append((wire[1], sent))
                elif wire[0] == "bump":
                    _, other, passes = wire
                    if sent.get("eth_type") != 0x88CC and "vlan_vid" not in sent and passes(sent):
                        delivery.bumps.append((d, out_port))
                        queue.append((d, other, {k: v for k, v in sent.items() if k != "in_port"}))
                elif self.switches[wire[1]].ports.get(wire[2]):
                    queue.append(
                        (wire[1], wire[2], {k: v for k, v in sent.items() if k != "in_port"})
                    )
        return [
            self.core.packet_in(d, p, data, t, c, self.now, meta)
            for d, p, data, t, c, meta in packet_ins
        ]

    def _arp_answer(self, host: str, pkt: dict) -> dict | None:
        """A host with an address (`addresses`) answers an ARP request for it, RFC 5227
        probes from 0.0.0.0 too, as Linux does (net/ipv4/arp.c, arp_process)."""
        ip = self.addresses.get(host)
        if ip is None or pkt.get("arp_op") != 1 or pkt.get("arp_tpa") != ip:
            return None
        fields = {"arp_op": 2, "arp_sha": host, "arp_spa": ip}
        fields |= {"arp_tha": pkt["arp_sha"], "arp_tpa": pkt["arp_spa"]}
        return fields_of(frame(pkt["arp_sha"], host, 0x0806, payload_for(0x0806, fields)))

    def send(
        self, src: str, dst: str, eth_type: int = 0x0800, tags: tuple[int, ...] = (), **fields
    ) -> Delivery:
        """Host `src` sends one frame to `dst` (with any extra header fields, e.g. ip_proto, and
        802.1Q `tags`, outermost first); returns which hosts got it and where it went."""
        if eth_type == 0x0806:
            fields.setdefault("arp_sha", src)
        data = frame(dst, src, eth_type, payload_for(eth_type, fields), tags)
        return self._from_host(src, {**fields_of(data), **fields})

    def inject(self, src: str, data: bytes) -> Delivery:
        """Host `src` sends a frame it crafted byte by byte (e.g. a forged LLDP frame)."""
        return self._from_host(src, fields_of(data))

    def _from_host(self, src: str, pkt: dict) -> Delivery:
        dpid, port = self.hosts[src]
        delivery = Delivery()
        for reply in self._forward(dpid, port, pkt, delivery):
            self.deliver(reply, delivery)
        return delivery

    def converse(self, a: str, b: str) -> bool:
        """ARP-like exchange: a broadcasts, b answers, both send unicast. True if it got through."""
        self.send(a, BROADCAST, 0x0806)
        self.send(b, a)
        return self.send(a, b).hosts == [b] and self.send(b, a).hosts == [a]

    def plug(self, mac: str, dpid: int, port: int) -> None:
        """Move a host's cable to (dpid, port): the old port loses it, the new one comes up."""
        old = self.hosts.get(mac)
        if old is not None:
            del self.wires[old]
        self.add_host(mac, dpid, port)
        self.switches[dpid].ports[port] = True
        info = PortInfo(port, f"s{dpid}-eth{port}", self.switches[dpid].hw_addr(port), True)
        self.deliver(self.core.port_status(dpid, ofp.OFPPR_ADD, info, self.now))
        self.advance(self.core.discovery.probation + 0.5)

    def set_link(self, d1: int, p1: int, up: bool) -> None:
        """Take both ends of a wire up or down, as carrier loss would, and tell the core."""
        ends = [(d1, p1)]
        wire = self.wires.get((d1, p1))
        if wire and wire[0] == "switch":
            ends.append((wire[1], wire[2]))
        for d, p in ends:
            self.switches[d].ports[p] = up
            if d in self.connected:
                info = PortInfo(p, f"s{d}-eth{p}", self.switches[d].hw_addr(p), up)
                self.deliver(self.core.port_status(d, ofp.OFPPR_MODIFY, info, self.now))
