"""topologies/wait.py: the one bounded poll loop."""

import time

from topologies.wait import seconds_until, until


def test_until_returns_the_first_truthy_value():
    calls = iter([0, None, "", "ready", "later"])
    assert until(lambda: next(calls), timeout=5, interval=0) == "ready"


def test_until_gives_up_after_the_timeout_having_tried_at_the_deadline():
    calls = []
    start = time.monotonic()
    assert until(lambda: calls.append(time.monotonic()), timeout=0.2, interval=0.05) is None
    assert 0.2 <= time.monotonic() - start < 1.0
    assert calls[-1] - start >= 0.2 and 4 <= len(calls) <= 8


def test_a_zero_timeout_still_asks_once():
    assert until(lambda: 7, timeout=0) == 7
    assert seconds_until(lambda: True, timeout=0) is not None


def test_seconds_until_counts_from_the_call():
    start = time.monotonic()
    took = seconds_until(lambda: time.monotonic() - start > 0.1, timeout=2, interval=0.01)
    assert took is not None and 0.1 <= took < 0.5
    assert seconds_until(lambda: False, timeout=0.05, interval=0.01) is None
