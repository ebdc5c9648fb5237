"""When a MAC seen at another edge port may leave its learned one (apps/l2_learning.py).

A source MAC is whatever a host writes in its frames, so one frame from any port must not move
another host. The rules, in the field's terms (FAUCET's `permanent_learn` and learn ban, switch
vendors' port security with sticky MACs and MAC-move limits, Open vSwitch's MAC-move counters):

- **Pinned MACs never move.** A MAC the config binds (an endpoint with a `mac`) stays at the port
  it was first learned on until that port goes down or the config stops pinning it; a claim
  from any other port is refused (reason "pinned").
- **A live host is not moved.** A claim from another edge port for a MAC learned at a port that
  is up is held for `hold` seconds while the old location is asked: an ARP probe (RFC 5227: from
  0.0.0.0, so no host caches the controller) for the MAC's IPv4 address goes out of its port
  only, and the learned entry's packet count is read twice, `STATS_SETTLE` seconds into the
  hold and at its end.
  An answer from the MAC at its old port, or a count that grew, refuses the move (reason
  "live"); silence confirms it. The old port going down, or its entry ageing out, confirms it
  at once.
- **Flapping is damped.** A MAC that moved `limit` times in the last `window` seconds is not
  moved again until the oldest of those moves leaves the window (reason "flapping").
- **A refusal bans the claim** (port, MAC) for `ban` seconds: the caller drops that source at
  that port meanwhile, as port security's "restrict" does, so a host repeating the claim costs
  one probe per ban.

Plain Python: every call takes `now` (seconds) and returns what the caller must do.

>>> g = MoveGuard()
>>> g.claim("00:00:00:00:00:01", (1, 1), (1, 2), pinned=False, now=0.0)
'held'
>>> g.claim("00:00:00:00:00:01", (1, 1), (1, 2), pinned=False, now=0.5) is None
True
>>> g.due(1.0), g.checked(1, {("00:00:00:00:00:01", 1): 7}, 1.0)
(({1}, []), [])
>>> g.due(3.0), [(v.moved, v.reason) for v in g.checked(1, {("00:00:00:00:00:01", 1): 8}, 3.0)]
(({1}, []), [(False, 'live')])
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

Location = tuple[int, int]  # (dpid, port)

MOVE_HOLD = 3.0  # seconds a claim waits for the old location to show it is still there
# Open vSwitch pushes datapath counters to its OpenFlow rules from revalidator threads, about
# every 0.5 s (other_config:max-revalidator), so a count read at the claim would miss the last
# frames sent before it, and count them later as traffic during the hold: read it this late.
STATS_SETTLE = 1.0
STATS_WAIT = 1.0  # seconds to wait for the old switch's counters before deciding without them
MOVE_LIMIT = 3  # confirmed moves of one MAC...
MOVE_WINDOW = 60.0  # ...within this many seconds; more is flapping
BAN_TIME = 5.0  # seconds a refused (port, MAC) is dropped at that port
LOG_INTERVAL = 10.0  # seconds between refusal log lines for one MAC
REASONS = ("pinned", "live", "flapping")


@dataclass
class Hold:
    """A claim waiting: `mac` learned at `old`, seen at `new` since `since` (seconds).

    `baseline`: the packet count of the learned entry at `old` STATS_SETTLE seconds in (None:
    not read yet, or no entry); `asked`: it was asked for. `checking`: when the count at the
    end was asked for."""

    mac: str
    old: Location
    new: Location
    since: float
    baseline: int | None = None
    asked: bool = False
    checking: float | None = None


class Verdict(NamedTuple):
    """The end of a hold: `moved` (go to `hold.new`) or refused for `reason` (one of REASONS)."""

    hold: Hold
    moved: bool
    reason: str = ""


class MoveGuard:
    """Holds, bans and move history of every MAC; times in seconds on the caller's clock."""

    def __init__(
        self,
        hold: float = MOVE_HOLD,
        limit: int = MOVE_LIMIT,
        window: float = MOVE_WINDOW,
        ban: float = BAN_TIME,
    ) -> None:
        self.hold, self.limit, self.window, self.ban_time = hold, limit, window, ban
        self.holds: dict[str, Hold] = {}
        self.bans: dict[tuple[str, Location], float] = {}  # (mac, where) -> until
        self._moves: dict[str, deque[float]] = {}
        self._logged: dict[str, tuple[float, int]] = {}  # mac -> (last logged, suppressed)

    # --- claims --------------------------------------------------------------------------------

    def claim(self, mac: str, old: Location, new: Location, pinned: bool, now: float) -> str | None:
        """`mac`, learned at `old` (a live edge port), was seen at edge port `new`.

        Returns "held" (a new hold: probe `old` and read its counters), a reason of REASONS
        (refused at once: ban `new`), or None (already held or banned: nothing to do)."""
        if mac in self.holds or self.bans.get((mac, new), float("-inf")) > now:
            return None
        if pinned:
            return "pinned"
        if self._flapping(mac, now):
            return "flapping"
        self.holds[mac] = Hold(mac, old, new, now)
        return "held"

    def moved(self, mac: str, now: float) -> None:
        """`mac` moved (a confirmed hold, or relearned after its old port went): count it."""
        self.holds.pop(mac, None)
        self._moves.setdefault(mac, deque()).append(now)

    def gone(self, mac: str) -> tuple[Hold | None, list[Location]]:
        """`mac`'s old location is gone (port down, entry aged out): its hold, to confirm at
        once, and the locations of its bans, lifted (they protected a location that is no
        more)."""
        lifted = [at for m, at in self.bans if m == mac]
        for at in lifted:
            del self.bans[(mac, at)]
        return self.holds.pop(mac, None), lifted

    # --- evidence from the old location --------------------------------------------------------

    def answered(self, mac: str, at: Location) -> Verdict | None:
        """A frame from `mac` arrived at `at` (a probe's answer): if `mac` is held and `at` is
        its old location, the claim is refused as "live"."""
        h = self.holds.get(mac)
        if h is None or h.old != at:
            return None
        del self.holds[mac]
        return Verdict(h, False, "live")

    def due(self, now: float) -> tuple[set[int], list[Verdict]]:
        """The switches whose learned entries' counters holds need read now (STATS_SETTLE into
        a hold, and at its end), and the holds whose end count never came, decided without it:
        confirmed (nothing showed the host is still there)."""
        switches, out = set(), []
        for h in list(self.holds.values()):
            if not h.asked and now - h.since >= STATS_SETTLE:
                h.asked = True
                switches.add(h.old[0])
            if h.checking is None and now - h.since >= self.hold:
                h.checking = now
                switches.add(h.old[0])
            elif h.checking is not None and now - h.checking >= STATS_WAIT:
                out.append(self._decide(h, None, now))
        return switches, out

    def checked(
        self, dpid: int, counts: Mapping[tuple[str, int], int], now: float
    ) -> list[Verdict]:
        """Switch `dpid`'s learned entries' packet counts, keyed (mac, port) -> packets.

        Holds on `dpid` that asked for a baseline take it; holds checking are decided: "live"
        if the count grew, else moved."""
        out = []
        for h in list(self.holds.values()):
            if h.old[0] != dpid:
                continue
            count = counts.get((h.mac, h.old[1]))
            if h.checking is None:
                h.baseline = count if h.asked and h.baseline is None else h.baseline
            else:
                out.append(self._decide(h, count, now))
        return out

    def _decide(self, h: Hold, count: int | None, now: float) -> Verdict:
        del self.holds[h.mac]
        if h.baseline is not None and count is not None and count > h.baseline:
            return Verdict(h, False, "live")
        self.moved(h.mac, now)
        return Verdict(h, True)

    def _flapping(self, mac: str, now: float) -> bool:
        moves = self._moves.get(mac)
        while moves and now - moves[0] >= self.window:
            moves.popleft()
        return bool(moves) and len(moves) >= self.limit

    # --- bans and logs -------------------------------------------------------------------------

    def ban(self, mac: str, at: Location, now: float) -> None:
        """Refuse `mac` at `at` until `now` + the ban time."""
        self.bans[(mac, at)] = now + self.ban_time

    def expired(self, now: float) -> list[tuple[str, Location]]:
        """Bans that ended by `now` (forgotten here; the caller lifts their drops)."""
        ended = [k for k, until in self.bans.items() if until <= now]
        for k in ended:
            del self.bans[k]
        return ended

    def log_due(self, mac: str, now: float) -> int | None:
        """None if a refusal of `mac` was logged less than LOG_INTERVAL ago (this one is
        counted as suppressed), else how many were suppressed since the last line."""
        last, suppressed = self._logged.get(mac, (float("-inf"), 0))
        if now - last < LOG_INTERVAL:
            self._logged[mac] = (last, suppressed + 1)
            return None
        self._logged[mac] = (now, 0)
        return suppressed
