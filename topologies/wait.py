"""Waiting for something to become true, bounded in time: the one poll loop of the labs,
tests and benchmarks.

>>> until(lambda: 42, timeout=1.0)
42
>>> until(lambda: None, timeout=0.05, interval=0.01) is None
True
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def until(predicate: Callable[[], T], timeout: float, interval: float = 0.05) -> T | None:
    """The first truthy value of `predicate()`, called every `interval` seconds until
    `timeout` seconds have passed (on the monotonic clock); None if it never was truthy.

    `predicate` is called at least once, and once more at the deadline, so a slow predicate
    still gets its last chance. Exceptions from it propagate.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        time.sleep(min(interval, left))


def seconds_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05):
    """Seconds from the call until `predicate()` was first truthy (see until), or None."""
    start = time.monotonic()
    if until(predicate, timeout, interval) is None:
        return None
    return time.monotonic() - start
