"""ARP for the services: answers for the VIPs, backend MACs learned from ARP, probes for the rest.

Clients only ever see a VIP, so the controller answers ARP for it (RFC 826) with the VIP's own
MAC (compile.vip_mac). Backends are known by the MAC they speak ARP with; one that never spoke
is asked, from the VIP, every ARP_PROBE_INTERVAL seconds.
"""

from __future__ import annotations

from collections.abc import Iterable

from apps.services.compile import vip_mac
from apps.services.settings import Backend, Service
from controller.app import CoreView
from controller.flows import Flow, output, packet_out
from controller.packets import ARP_REPLY, ARP_REQUEST, Arp, arp_frame
from controller.topology import Topology

ARP_PROBE_INTERVAL = 2.0  # seconds between probes for backends whose MAC is unknown
MAX_LEARNED = 65536  # IP -> MAC entries kept from ARP


class MacTable:
    """IP -> MAC of the backends heard in ARP at the services stage (after the firewall and
    microseg: a spoofed claim to a bound backend's address never arrives).

    `learned` maps a dotted-quad IPv4 address to an "aa:bb:..:ff" MAC, oldest first; at most
    `limit` entries (the oldest goes first). A backend's configured MAC wins over it.
    """

    def __init__(self, limit: int = MAX_LEARNED) -> None:
        self.learned: dict[str, str] = {}
        self.limit = limit

    def mac_of(self, b: Backend) -> str | None:
        """The backend's configured MAC, else the one learned for its IP, else None."""
        return b.mac or self.learned.get(b.ip)

    def learn(self, ip: str, mac: str) -> bool:
        """Record that `ip` speaks from unicast `mac`; True if that is news."""
        if self.learned.get(ip) == mac or int(mac[:2], 16) & 1:
            return False
        self.learned.pop(ip, None)
        if len(self.learned) >= self.limit:
            del self.learned[next(iter(self.learned))]  # the oldest goes
        self.learned[ip] = mac
        return True

    def restore(self, ips: set[str], installed: Iterable[Flow], cookie: int, table: int) -> None:
        """Take back the MACs of `ips` from a switch's steering flows (cookie `cookie` in
        `table`, which set eth_dst for an ipv4_dst), so a restarted controller keeps
        connections in flight on their way; what was learned since wins."""
        for f in installed:
            if f.cookie != cookie or f.table != table:
                continue
            ip = f.match_dict().get("ipv4_dst")
            mac = next(
                (
                    a[2]
                    for ins in f.instructions
                    if ins[0] == "apply"
                    for a in ins[1]
                    if a[:2] == ("set_field", "eth_dst")
                ),
                None,
            )
            if ip in ips and mac and ip not in self.learned:
                self.learned[ip] = mac


def vip_reply(a: Arp, services: Iterable[Service]) -> bytes | None:
    """The ARP reply frame for a request `a` asking for a VIP of `services`, else None."""
    vip = next((s for s in services if s.vip == a.dst_ip), None)
    if a.opcode != ARP_REQUEST or vip is None:
        return None
    return arp_frame(ARP_REPLY, vip_mac(vip.vip), vip.vip, a.src_mac, a.src_ip)


class ArpProber:
    """Asks, from the VIP, for backends whose MAC nobody told us: their reply comes back to the
    VIP's ARP entry and to us. `next_probe` is when the next round is due (seconds, the core's
    clock)."""

    def __init__(self, core: CoreView, topology: Topology) -> None:
        self.core = core
        self.topology = topology
        self.next_probe = 0.0

    def restart(self, now: float) -> None:
        """The next round after this one is ARP_PROBE_INTERVAL from `now`."""
        self.next_probe = now + ARP_PROBE_INTERVAL

    def due(self, now: float) -> bool:
        """True (and the round after is scheduled) if a round is due at `now`."""
        if now < self.next_probe:
            return False
        self.restart(now)
        return True

    def probe(self, services: Iterable[Service], macs: MacTable) -> None:
        """Broadcast an ARP request for each backend without a MAC out of every edge port of
        every ready switch."""
        for s in services:
            for b in s.backends:
                if macs.mac_of(b) is not None:
                    continue
                frame = arp_frame(ARP_REQUEST, vip_mac(s.vip), s.vip, "00:00:00:00:00:00", b.ip)
                for dpid in self.topology.switches():
                    if self.core.ready(dpid):
                        ports = sorted(self.topology.edge_ports(dpid))
                        if ports:
                            self.core.send(dpid, [packet_out(frame, [output(p) for p in ports])])
