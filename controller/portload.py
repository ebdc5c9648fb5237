"""Each port's load, from OpenFlow port statistics (OFPMP_PORT_STATS, OpenFlow 1.3.5 7.3.5.6).

The core asks every ready switch for its ports' byte counters every `interval` seconds; two
replies in a row give each port's rates in bits per second, received and sent. The topology
page and `GET /api/v1/topology` show a link's load as what each end sends.

>>> load = PortLoad()
>>> load.update(1, [(2, 0, 1000)], now=10.0); load.update(1, [(2, 500, 3000)], now=12.0)
>>> load.bps(1, 2)
(2000.0, 8000.0)
"""

from __future__ import annotations

from collections.abc import Iterable

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller.flows.encode import OF13

POLL_SECONDS = 2.0


def port_stats_request(xid: int):
    """An OFPPortStatsRequest for every port of a switch, numbered `xid`."""
    msg = parser.OFPPortStatsRequest(OF13, 0, ofp.OFPP_ANY)
    msg.set_xid(xid)
    return msg


class PortLoad:
    """Per (dpid, port): the last byte counters and the rates between the last two replies.

    `interval`: seconds between polls (`due`)."""

    def __init__(self, interval: float = POLL_SECONDS) -> None:
        self.interval = interval
        self._next = 0.0
        self._last: dict[tuple[int, int], tuple[float, int, int]] = {}
        self._rates: dict[tuple[int, int], tuple[float, float]] = {}

    def due(self, now: float) -> bool:
        """True once every `interval` seconds: time to ask the switches again."""
        if now < self._next:
            return False
        self._next = now + self.interval
        return True

    def update(self, dpid: int, counters: Iterable[tuple[int, int, int]], now: float) -> None:
        """Switch `dpid`'s (port, rx_bytes, tx_bytes) at `now`: rates from the last reply.
        A counter that went back (the port was re-created) starts over."""
        for port, rx, tx in counters:
            key = (dpid, port)
            last = self._last.get(key)
            self._last[key] = (now, rx, tx)
            if last is None or now <= last[0] or rx < last[1] or tx < last[2]:
                continue
            seconds = now - last[0]
            self._rates[key] = ((rx - last[1]) * 8 / seconds, (tx - last[2]) * 8 / seconds)

    def bps(self, dpid: int, port: int) -> tuple[float, float] | None:
        """(received, sent) bits per second of the port, or None before two replies."""
        return self._rates.get((dpid, port))

    def forget(self, dpid: int) -> None:
        """A switch went away: its counters mean nothing to its next connection."""
        for key in [k for k in self._last if k[0] == dpid]:
            del self._last[key]
            self._rates.pop(key, None)
