"""Which MAC answers for which IP address, as heard in packet-ins (ARP senders, IP sources).

The L2 app learns hosts by MAC; a trace (controller/trace) and the topology page are asked
about IP addresses. The core tells this table about every frame a switch sent it, so an
address is known once its host has sent a packet-in (its first ARP, usually). Bounded: the
oldest addresses go first past `limit`.

>>> n = Neighbours(limit=2)
>>> n.heard("10.0.0.1", "00:00:00:00:00:01"); n.heard("10.0.0.2", "00:00:00:00:00:02")
>>> n.heard("10.0.0.3", "00:00:00:00:00:03"); sorted(n.macs)
['10.0.0.2', '10.0.0.3']
"""

from __future__ import annotations

from controller.packets import source_ip


class Neighbours:
    """IP address (text) -> the MAC last heard sending from it."""

    def __init__(self, limit: int = 65536) -> None:
        self.limit = limit
        self.macs: dict[str, str] = {}

    def heard(self, ip: str, mac: str) -> None:
        """`mac` sent a frame from `ip`: remember it (moved to the newest end)."""
        self.macs.pop(ip, None)
        self.macs[ip] = mac
        while len(self.macs) > self.limit:
            del self.macs[next(iter(self.macs))]

    def frame(self, data: bytes, eth_src: str) -> None:
        """Learn from a frame a switch sent us: its ARP sender or IP source, if any."""
        ip = source_ip(data)
        if ip is not None:
            self.heard(ip, eth_src)
