"""When a scheduled rule is in force: days of the week and a daily window in a time zone.

A window whose end is before its start runs overnight and belongs to the day it starts on, so
"fri 22:00-02:00" covers Friday night into early Saturday.

>>> s = Schedule(frozenset({4}), 22 * 3600, 2 * 3600, "UTC")   # Fridays 22:00-02:00 UTC
>>> s.active(1795737600.0 + 23 * 3600)                      # Friday 2026-11-27 23:00 UTC
True
>>> s.active(1795737600.0 + 24 * 3600 + 3600)               # Saturday 01:00: still Friday's
True
>>> s.active(1795737600.0 + 24 * 3600 + 3 * 3600)           # Saturday 03:00
False
>>> s.describe()
'fri 22:00-02:00 UTC'
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Schedule:
    days: frozenset[int]  # 0 = Monday
    start: int  # seconds after local midnight
    end: int
    timezone: str = "UTC"

    def active(self, now: float) -> bool:
        local = datetime.fromtimestamp(now, ZoneInfo(self.timezone))
        second = local.hour * 3600 + local.minute * 60 + local.second
        today = local.weekday()
        if self.start < self.end:
            return today in self.days and self.start <= second < self.end
        yesterday = (local - timedelta(days=1)).weekday()
        return (today in self.days and second >= self.start) or (
            yesterday in self.days and second < self.end
        )

    def describe(self) -> str:
        days = ",".join(DAYS[d] for d in sorted(self.days))
        return f"{days} {_clock(self.start)}-{_clock(self.end)} {self.timezone}"


def _clock(seconds: int) -> str:
    """Seconds after midnight as HH:MM, or HH:MM:SS when the seconds are not zero."""
    text = f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}"
    return text + (f":{seconds % 60:02d}" if seconds % 60 else "")


def parse_clock(text: str) -> int | None:
    """'HH:MM' or 'HH:MM:SS' as seconds after midnight, or None if not a time of day."""
    try:
        parts = [int(p) for p in text.split(":")]
    except (ValueError, AttributeError):
        return None
    if len(parts) not in (2, 3):
        return None
    h, m, s = parts + [0] * (3 - len(parts))
    return h * 3600 + m * 60 + s if 0 <= h <= 23 and 0 <= m <= 59 and 0 <= s <= 59 else None


def check_timezone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True
