"""Active health checks of service backends, sourced by the controller through the switch.

Modelled on OVN's service monitor (ovn-controller, controller/pinctrl.c, svc_monitor): no host
runs an agent. Every `interval` the controller sends each backend, out of the port of the switch
it sits on, a TCP SYN (UDP: the configured `send` payload) from the service's VIP (source MAC the
VIP's own, compile.vip_mac) and port HEALTH_PORT. The backend answers the VIP, whose ARP entry it
has from the controller; a flow on that switch, matching the backend's port, MAC, IP and service
port and the VIP's MAC, IP and HEALTH_PORT, brings the answer to the controller:

- TCP: a SYN-ACK acknowledging our random initial sequence number is a success (the controller
  answers it with a RST so the backend forgets the half-open connection); a RST acknowledging
  it is a failure at once; nothing within `timeout` is a failure.
- UDP: a reply whose payload starts with `expect` is a success; nothing within `timeout` is a
  failure. A UDP service is checked only when its `health` sets `send` (a UDP server need not
  answer an arbitrary datagram).

`unhealthy` consecutive failures take a backend out of health, `healthy` consecutive successes
bring it back (the defaults, 3 and 2, are OVN's and Envoy's). Out of health, a backend takes
no new connections (backends.Locations.alive); its open connections are left alone.

Trust: an answer counts only if it came in on the backend's own port of its own switch (the
flow matches in_port, and the controller checks the packet-in's switch and port again), from
the backend's MAC and IP and service port, to the VIP's MAC, IP and HEALTH_PORT, while a probe
is outstanding, and (TCP) acknowledging that probe's random initial sequence number. A host
forging SYN-ACKs for a dead backend, or RSTs for a live one, from any other port never reaches
the controller, and from the backend's own port cannot guess the sequence number. The flow goes
through meter HEALTH_METER, so at most HEALTH_RATE answers per second per switch reach the
controller.

HEALTH_PORT, 65534, is outside Linux's default ephemeral port range (32768-60999): a backend's
own connections to its service (hairpin, which come back to it from the VIP) never use it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from os_ken.lib.packet import ethernet, ipv4, packet, tcp, udp

from apps.services.compile import COOKIE, PROTOCOLS, vip_mac
from apps.services.settings import WAYPOINT, Backend, HealthCheck, Service
from controller.flows import Flow, Meter, apply, flow, meter, output, packet_out, to_controller
from controller.packets import ETH_TYPE_IP
from controller.pipeline import REGISTRY

LOG = logging.getLogger("osken_suite.services")
HEALTH_PORT = 65534  # the probes' source port (see the module docstring)
HEALTH_PRIORITY = 400  # services table: above everything else that matches a backend's packets
HEALTH_METER = REGISTRY.get("meter", "services", "health").first
HEALTH_RATE = 200  # answers per second per switch the meter lets through
ETH_HEADER, UDP_HEADER = 14, 8  # bytes
# Results of one check, as the metrics label them.
SUCCESS, REFUSED, TIMEOUT = "success", "refused", "timeout"

# (dpid, port) of the switch port a backend sits on, or None when the fabric has not seen it.
Locate = Callable[[Backend], tuple[int, int] | None]


@dataclass
class Probe:
    """One check in flight: sent at `sent` (seconds), from (dpid, port), TCP ISN `isn`."""

    sent: float
    dpid: int
    port: int
    mac: str
    isn: int


@dataclass
class BackendHealth:
    """A backend's health in one service: `healthy`, the run of `failures` or `successes`
    since it last changed, the probe in flight and when the next one is due (seconds)."""

    check: HealthCheck
    healthy: bool = True
    failures: int = 0
    successes: int = 0
    probe: Probe | None = None
    next_at: float = 0.0


def checked(s: Service) -> bool:
    """Whether `s` gets active checks: not waypointed, not `health: false`, and for UDP only
    with a `send` payload."""
    if s.method == WAYPOINT or s.health is None:
        return False
    return s.protocol == "tcp" or s.health.send is not None


def probe_frame(s: Service, b: Backend, mac: str, isn: int) -> bytes:
    """The probe from the VIP (its MAC, port HEALTH_PORT) to backend `b` at `mac`: a SYN with
    sequence number `isn` (TCP), or the `send` payload (UDP)."""
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(mac, vip_mac(s.vip), ETH_TYPE_IP))
    pkt.add_protocol(ipv4.ipv4(src=s.vip, dst=b.ip, proto=PROTOCOLS[s.protocol], ttl=64))
    if s.protocol == "tcp":
        pkt.add_protocol(tcp.tcp(HEALTH_PORT, b.port, isn, 0, 0, tcp.TCP_SYN, 64240))
    else:
        pkt.add_protocol(udp.udp(HEALTH_PORT, b.port))
        pkt.add_protocol(s.health.send)
    pkt.serialize()
    return bytes(pkt.data)


def reset_frame(s: Service, b: Backend, mac: str, seq: int) -> bytes:
    """The RST that closes the half-open connection a SYN-ACK left on backend `b`."""
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(mac, vip_mac(s.vip), ETH_TYPE_IP))
    pkt.add_protocol(ipv4.ipv4(src=s.vip, dst=b.ip, proto=PROTOCOLS["tcp"], ttl=64))
    pkt.add_protocol(tcp.tcp(HEALTH_PORT, b.port, seq, 0, 0, tcp.TCP_RST, 0))
    pkt.serialize()
    return bytes(pkt.data)


def answer_flow(table: int, s: Service, b: Backend, mac: str, port: int) -> Flow:
    """The flow (on the backend's own switch) bringing its answers to a probe to the
    controller, through HEALTH_METER."""
    proto = s.protocol
    match = {
        "in_port": port,
        "eth_src": mac,
        "eth_dst": vip_mac(s.vip),
        "eth_type": ETH_TYPE_IP,
        "ipv4_src": b.ip,
        "ipv4_dst": s.vip,
        "ip_proto": PROTOCOLS[proto],
        f"{proto}_src": b.port,
        f"{proto}_dst": HEALTH_PORT,
    }
    return flow(
        table, HEALTH_PRIORITY, match, meter(HEALTH_METER), apply(to_controller()), cookie=COOKIE
    )


def health_meter() -> Meter:
    """The meter every switch with an answer flow holds: HEALTH_RATE packets/s."""
    return Meter(HEALTH_METER, "pktps", HEALTH_RATE, max(HEALTH_RATE // 10, 1))


class HealthChecker:
    """Every checked backend's health, the probes to send and what their answers mean.

    `states` maps (service name, backend key) to BackendHealth; `changed` is called with
    (service, backend, healthy) once per change and `counted` with (service, backend, result)
    once per check.
    """

    def __init__(
        self,
        changed: Callable[[Service, Backend, bool], None],
        counted: Callable[[Service, Backend, str], None],
    ) -> None:
        self.states: dict[tuple[str, str], BackendHealth] = {}
        self.changed = changed
        self.counted = counted

    def configure(self, services: Iterable[Service], now: float) -> None:
        """Check the backends of `services` (see `checked`); one kept with the same check
        keeps its state, a new one starts healthy with its first probe due at `now`."""
        states = {}
        for s in services:
            if not checked(s):
                continue
            for b in s.backends:
                old = self.states.get((s.name, b.key))
                keep = old is not None and old.check == s.health
                states[(s.name, b.key)] = old if keep else BackendHealth(s.health, next_at=now)
        self.states = states

    def unhealthy(self) -> frozenset[str]:
        """Keys of the backends out of health (in any service that checks them)."""
        return frozenset(key for (_, key), h in self.states.items() if not h.healthy)

    def flows(
        self, table: int, services: Iterable[Service], locate: Locate, mac_of
    ) -> dict[int, list[Flow]]:
        """dpid -> the answer flows of the checked backends located on it."""
        out: dict[int, list[Flow]] = {}
        for s in services:
            if not checked(s):
                continue
            for b in s.backends:
                where, mac = locate(b), mac_of(b)
                if where is not None and mac is not None:
                    out.setdefault(where[0], []).append(answer_flow(table, s, b, mac, where[1]))
        return out

    def tick(
        self,
        services: Iterable[Service],
        locate: Locate,
        mac_of,
        now: float,
        may_probe: Callable[[int], bool],
    ) -> tuple[list[tuple[int, object]], bool]:
        """(packet-outs as (dpid, message), whether any health changed) at `now`: probes past
        their timeout fail, and due probes go out to backends whose port the fabric knows, on
        switches where `may_probe(dpid)` (this controller is their master: a replica that is
        not neither sends probes nor hears answers, so it keeps the health it last knew)."""
        sends: list[tuple[int, object]] = []
        moved = False
        for s in services:
            for b in s.backends:
                h = self.states.get((s.name, b.key))
                if h is None:
                    continue
                if h.probe is not None and now >= h.probe.sent + h.check.timeout:
                    moved |= self._result(s, b, h, TIMEOUT)
                where, mac = locate(b), mac_of(b)
                if h.probe is not None or now < h.next_at or where is None or mac is None:
                    continue
                if not may_probe(where[0]):
                    continue
                isn = secrets.randbits(32)
                h.probe = Probe(now, where[0], where[1], mac, isn)
                h.next_at = now + h.check.interval
                frame = probe_frame(s, b, mac, isn)
                sends.append((where[0], packet_out(frame, [output(where[1])])))
        return sends, moved

    def on_answer(
        self, services: Iterable[Service], dpid: int, in_port: int, data: bytes
    ) -> tuple[list[tuple[int, object]], bool]:
        """(packet-outs, whether any health changed) for a frame the answer flow sent in from
        (dpid, in_port). Only the exact answer to a probe in flight counts; any other segment
        acknowledging something of ours gets a RST (a half-open probe connection the backend
        still holds, e.g. from a probe whose answer came after its timeout, would otherwise
        answer each new SYN on the same ports with its old SYN-ACK)."""
        pkt = _parse(data)
        if pkt is None:
            return [], False
        eth, ip, l4, body = pkt
        for s in services:
            if s.vip != ip.dst or eth.dst != vip_mac(s.vip):
                continue
            for b in s.backends:
                h = self.states.get((s.name, b.key))
                if h is None or (ip.src, l4.src_port, l4.dst_port) != (b.ip, b.port, HEALTH_PORT):
                    continue
                p = h.probe
                if p is not None and (p.dpid, p.port, p.mac) == (dpid, in_port, eth.src):
                    return self._answered(s, b, h, l4, body)
                return _close(s, b, dpid, in_port, eth.src, l4), False
        return [], False

    def _answered(
        self, s: Service, b: Backend, h: BackendHealth, l4, body: bytes
    ) -> tuple[list[tuple[int, object]], bool]:
        p = h.probe
        if isinstance(l4, udp.udp):
            if body.startswith(h.check.expect or b""):
                return [], self._result(s, b, h, SUCCESS)
            return [], False
        if l4.ack != (p.isn + 1) & 0xFFFFFFFF:  # not an answer to this SYN
            return _close(s, b, p.dpid, p.port, p.mac, l4), False
        if l4.has_flags(tcp.TCP_RST):
            return [], self._result(s, b, h, REFUSED)
        if l4.has_flags(tcp.TCP_SYN, tcp.TCP_ACK):
            return _close(s, b, p.dpid, p.port, p.mac, l4), self._result(s, b, h, SUCCESS)
        return [], False

    def _result(self, s: Service, b: Backend, h: BackendHealth, result: str) -> bool:
        """Count one check's `result`; True if the backend's health changed."""
        h.probe = None
        self.counted(s, b, result)
        if result == SUCCESS:
            h.successes, h.failures = h.successes + 1, 0
            if h.healthy or h.successes < h.check.healthy:
                return False
            h.healthy = True
        else:
            h.failures, h.successes = h.failures + 1, 0
            if not h.healthy or h.failures < h.check.unhealthy:
                return False
            h.healthy = False
        self.changed(s, b, h.healthy)
        return True


def _close(s: Service, b: Backend, dpid: int, port: int, mac: str, l4) -> list[tuple[int, object]]:
    """The RST that closes what a TCP segment `l4` from backend `b` (at dpid, port, MAC `mac`)
    acknowledges, if it acknowledges anything and is no RST itself (RFC 9293 3.5.2: a RST's
    sequence number is the acknowledgment it answers)."""
    if not isinstance(l4, tcp.tcp) or not l4.has_flags(tcp.TCP_ACK) or l4.has_flags(tcp.TCP_RST):
        return []
    return [(dpid, packet_out(reset_frame(s, b, mac, l4.ack), [output(port)]))]


def _parse(data: bytes):
    """(ethernet, ipv4, tcp or udp headers, the payload) of `data`, else None."""
    try:
        pkt = packet.Packet(data)
    except Exception:  # os-ken raises many kinds on a truncated or odd frame
        return None
    eth, ip = pkt.get_protocol(ethernet.ethernet), pkt.get_protocol(ipv4.ipv4)
    l4 = pkt.get_protocol(tcp.tcp) or pkt.get_protocol(udp.udp)
    if eth is None or ip is None or l4 is None:
        return None
    start = ETH_HEADER + ip.header_length * 4 + UDP_HEADER  # not os-ken's: it may read on
    return eth, ip, l4, data[start : ETH_HEADER + ip.total_length]
