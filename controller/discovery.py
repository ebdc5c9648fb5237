"""Link discovery with signed LLDP, and the probation that keeps unknown ports from looking like
edges.

A port is not trusted as an edge (host) port until it has been up for `probation` seconds without
an LLDP frame from another switch arriving on it. Until then nothing is learned on it and nothing is
flooded to it, so a looped fabric cannot storm while its links are still being found.

Hosts can send LLDP too, so a frame changes the topology only if it is one of this controller's
probes (controller/lldp.py): signed with the key, stamped within `freshness` of now, newer than the
last one accepted on the port it came in on, and not looped back onto the port that sent it. A
port where hosts have been learned, or that stayed an edge port through a whole probe round,
becomes a link end only on probes from CONFIRM_ROUNDS different rounds; so does a sighting that
would move an existing link. Every refused frame is counted in osken_lldp_refused_total{dpid,
port,reason} and logged (at most once per LOG_EVERY seconds per port). docs/security.md says what
remains possible.

>>> t = Topology()
>>> t.add_switch(1, {1: True}); t.add_switch(2, {1: True})
>>> d = Discovery(t)
>>> d.heard(2, 1, d.probe(1, 1, "02:00:00:00:00:01", now=10.0), now=10.001)
True
>>> d.heard(2, 1, lldp_frame(bytes(32), 1, 1, "02:00:00:00:00:01", 0, 0, 0), now=10.002)
False
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from controller.lldp import (
    BAD_SIGNATURE,
    KEY_BYTES,
    LOOPED,
    REPLAYED,
    STALE,
    Probe,
    Refused,
    lldp_frame,
    parse_lldp,
)
from controller.metrics import Metrics
from controller.topology import Link, Topology

LOG = logging.getLogger("osken_suite.discovery")

MIN_KEY_BYTES = 16
MIN_FRESHNESS = 1.0  # seconds: a probe crosses a wire in milliseconds; slack for a busy controller
CONFIRM_ROUNDS = 2  # probe rounds a suspect port needs before it becomes a link end
LOG_EVERY = 10.0  # seconds between log lines about refused frames on one port
MISSED_PROBES = 3  # a link not heard for this many intervals (and a second) is gone

Port = tuple[int, int]  # (dpid, port number)


@dataclass
class _Candidate:
    """Signed probes from `sender` seen on a suspect port, not yet enough to make a link."""

    sender: Port
    since: float
    rounds: set[int] = field(default_factory=set)


@dataclass
class Discovery:
    """Which ports are on probation, when each link was last heard, and when to probe again.

    `key` signs and checks probes: made at random per Discovery (one controller run) unless
    given; replicas that share one pass the same key (at least MIN_KEY_BYTES bytes, else
    ValueError). `interval` and `probation` are seconds, `now` everywhere is seconds since the
    epoch (replicas compare each other's stamps).
    """

    topology: Topology
    probation: float = 1.0
    interval: float = 5.0
    link_timeout: float = 16.0
    key: bytes | None = field(default=None, repr=False)  # a secret: never in a log line
    metrics: Metrics = field(default_factory=Metrics)
    port_since: dict[Port, float] = field(default_factory=dict)
    link_seen: dict[Link, float] = field(default_factory=dict)
    next_probe: float = 0.0
    probe_round: int = 0
    host_ports: set[Port] = field(default_factory=set)  # where hosts have been learned
    edge_history: set[Port] = field(default_factory=set)  # edge through a whole probe round
    candidates: dict[Port, _Candidate] = field(default_factory=dict)  # by receiving port
    _edges_last_round: set[Port] = field(default_factory=set)
    _last_accepted: dict[Port, tuple[int, int]] = field(default_factory=dict)  # (stamp, seq)
    _seq: int = 0
    _quiet: dict[Port, tuple[float, int]] = field(default_factory=dict)  # next log, suppressed

    def __post_init__(self) -> None:
        if self.key is None:
            self.key = os.urandom(KEY_BYTES)
        elif len(self.key) < MIN_KEY_BYTES:
            raise ValueError(
                f"LLDP key of {len(self.key)} bytes: at least {MIN_KEY_BYTES} are needed"
            )

    @property
    def freshness(self) -> float:
        """Seconds a probe stays acceptable after (or before, for clock skew) its stamp."""
        return max(self.interval, MIN_FRESHNESS)

    @property
    def max_silence(self) -> float:
        """Seconds after which a link not heard from is dropped."""
        return max(self.link_timeout, MISSED_PROBES * self.interval + 1.0)

    # --- ports ---------------------------------------------------------------------------------

    def port_up(self, dpid: int, port: int, now: float) -> None:
        """Port (dpid, port) came up at `now` (seconds): its probation starts."""
        self.port_since[(dpid, port)] = now

    def port_down(self, dpid: int, port: int) -> None:
        """Port (dpid, port) went down: forget when it came up and any unconfirmed link on it."""
        self.port_since.pop((dpid, port), None)
        self.candidates.pop((dpid, port), None)

    def forget_switch(self, dpid: int) -> None:
        """Switch `dpid` disconnected: forget when its ports came up."""
        self.port_since = {k: v for k, v in self.port_since.items() if k[0] != dpid}

    # --- probes --------------------------------------------------------------------------------

    def probe(self, dpid: int, port: int, hw_addr: str, now: float) -> bytes:
        """A signed LLDP frame to send out of (dpid, port) now, in the current probe round."""
        self._seq += 1
        return lldp_frame(
            self.key, dpid, port, hw_addr, int(now * 1e9), self._seq, self.probe_round
        )

    def due(self, now: float) -> bool:
        """Time for the periodic probe on every port: a new probe round starts."""
        if now < self.next_probe:
            return False
        self.next_probe = now + self.interval
        self.probe_round = (self.probe_round + 1) & 0xFFFF_FFFF
        edges = {(d, p) for d in self.topology.switches() for p in self.topology.edge_ports(d)}
        self.edge_history |= edges & self._edges_last_round
        self._edges_last_round = edges
        return True

    def heard(self, dpid: int, port: int, frame: bytes, now: float) -> bool:
        """An LLDP frame arrived on (dpid, port). True if it told us about a new link.

        A frame that is not a fresh, signed probe from another port is refused: counted,
        logged, and otherwise ignored.
        """
        try:
            probe = self._check(dpid, port, frame, now)
        except Refused as exc:
            self._refuse(dpid, port, exc, now)
            return False
        return self._sighted((dpid, port), (probe.dpid, probe.port), probe.probe_round, now)

    def _check(self, dpid: int, port: int, frame: bytes, now: float) -> Probe:
        probe = parse_lldp(frame)
        claim = f"claims switch {probe.dpid:016x} port {probe.port}"
        if not probe.signed_by(self.key):
            raise Refused(BAD_SIGNATURE, f"{claim}; not signed with this controller's key")
        now_ns, window = int(now * 1e9), int(self.freshness * 1e9)
        if abs(now_ns - probe.stamp) > window:
            raise Refused(
                STALE,
                f"{claim}, stamped {(now_ns - probe.stamp) / 1e9:.3f} s ago; "
                f"fresh is within {self.freshness:g} s",
            )
        if (probe.dpid, probe.port) == (dpid, port):
            raise Refused(LOOPED, f"{claim}: the port it came in on")
        last = self._last_accepted.get((dpid, port))
        # A last stamp ahead of the clock means the clock went back: that ordering is void.
        if last is not None and last[0] <= now_ns + window and (probe.stamp, probe.seq) <= last:
            raise Refused(REPLAYED, f"{claim}; not newer than the last probe accepted here")
        self._last_accepted[(dpid, port)] = (probe.stamp, probe.seq)
        return probe

    def _refuse(self, dpid: int, port: int, exc: Refused, now: float) -> None:
        self.metrics.lldp_refused.labels(f"{dpid:016x}", str(port), exc.reason).inc()
        next_log, suppressed = self._quiet.get((dpid, port), (float("-inf"), 0))
        if now < next_log:
            self._quiet[(dpid, port)] = (next_log, suppressed + 1)
            return
        self._quiet[(dpid, port)] = (now + LOG_EVERY, 0)
        more = f" ({suppressed} more refused here since the last report)" if suppressed else ""
        LOG.warning("switch %016x port %d: LLDP frame refused, %s%s", dpid, port, exc, more)

    # --- links ---------------------------------------------------------------------------------

    def _sighted(self, here: Port, sender: Port, probe_round: int, now: float) -> bool:
        """A signed probe from `sender` arrived on `here`. True if a link was added."""
        new = False
        if not any(
            {(lk.a, lk.a_port), (lk.b, lk.b_port)} == {here, sender} for lk in self.topology.links
        ):
            why = self._suspect(here, sender)
            if why and not self._confirmed(here, sender, probe_round, why, now):
                return False
            new = self.topology.add_link(*sender, *here)
        for link in self.topology.links:
            if here in link.ends:
                self.link_seen[link] = now
        return new

    def _suspect(self, here: Port, sender: Port) -> str | None:
        """Why a link between these ports needs probes from several rounds, or None."""
        hosts = self.host_ports | set(self.topology.hosts().values())
        for dpid, port in (here, sender):
            if (dpid, port) in hosts:
                return f"hosts were learned on switch {dpid:016x} port {port}"
            if (dpid, port) in self.edge_history:
                return f"switch {dpid:016x} port {port} has been an edge port"
            if port in self.topology.isl_ports(dpid):
                return f"it would move the link on switch {dpid:016x} port {port}"
        return None

    def _confirmed(self, here: Port, sender: Port, probe_round: int, why: str, now: float) -> bool:
        candidate = self.candidates.get(here)
        if candidate is None or candidate.sender != sender:
            candidate = self.candidates[here] = _Candidate(sender, now)
            LOG.info(
                "switch %016x port %d: signed probe from switch %016x port %d; %s, so it "
                "becomes a link only on probes from %d rounds",
                *here,
                *sender,
                why,
                CONFIRM_ROUNDS,
            )
        candidate.rounds.add(probe_round)
        if len(candidate.rounds) < CONFIRM_ROUNDS:
            return False
        del self.candidates[here]
        LOG.warning(
            "switch %016x port %d is a link end to switch %016x port %d on probes from %d "
            "rounds, although %s",
            *here,
            *sender,
            len(candidate.rounds),
            why,
        )
        return True

    def expire(self, now: float, connected: set[int]) -> None:
        """Settle ports whose probation is over; drop links not heard for max_silence.

        A link to a switch that is disconnected from us is kept: its data plane still forwards, and
        a dead link shows up as a port going down, which removes it at once.
        """
        self.host_ports |= set(self.topology.hosts().values())
        for (dpid, port), since in list(self.port_since.items()):
            if now - since >= self.probation:
                self.topology.settle_port(dpid, port)
                del self.port_since[(dpid, port)]
        for link in list(self.topology.links):
            seen = self.link_seen.setdefault(link, now)
            if now - seen > self.max_silence and {link.a, link.b} <= connected:
                self.topology.remove_link(link)
                del self.link_seen[link]
        for port, candidate in list(self.candidates.items()):
            if now - candidate.since > self.max_silence:
                del self.candidates[port]
