"""Turning relative weights into choices: exactly per connection, or as a switch would.

`SmoothWeighted` is nginx's smooth weighted round-robin: deterministic, and after any number of
picks each backend's count is within one pick of its exact share, so 2,000 connections split
90/10 come out 1,800/200, not "about" that. The controller uses it for new connections.

`ovs_select_shares` is what Open vSwitch makes of the same weights in a select group (its
dp_hash table of 16 to 256 Webster-apportioned slots), the baseline we measure against.

>>> rr = SmoothWeighted({"v1": 90, "v2": 10})
>>> picks = [rr.pick() for _ in range(2000)]
>>> picks.count("v1"), picks.count("v2")
(1800, 200)
>>> ovs_select_shares([90, 10])
[0.875, 0.125]
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from fractions import Fraction

DP_HASH_MAX_SLOTS = 256
U16 = 0xFFFF


class SmoothWeighted:
    """Weighted round-robin that interleaves (5:1:1 gives a a b a c a a, not a a a a a b c).

    Weight 0 members are never picked. Weights are relative: any non-negative numbers.
    """

    def __init__(self, weights: Mapping[Hashable, float | Fraction]) -> None:
        self.weights = {k: w for k, w in weights.items() if w > 0}
        self.total = sum(self.weights.values())
        self.current = {k: 0 for k in self.weights}

    def __bool__(self) -> bool:
        return bool(self.weights)

    def pick(self, allowed=None) -> Hashable | None:
        """The next member; with `allowed`, only among those (the others keep their turn)."""
        members = [k for k in self.weights if allowed is None or k in allowed]
        if not members:
            return None
        total = sum(self.weights[k] for k in members)
        for k in members:
            self.current[k] += self.weights[k]
        best = max(members, key=lambda k: self.current[k])
        self.current[best] -= total
        return best


def webster(weights: list[float | Fraction], seats: int) -> list[int]:
    """Apportion `seats` in proportion to `weights` (Sainte-Lague/Webster, first wins ties).

    >>> webster([70, 30], 16)
    [11, 5]
    >>> webster([33, 33, 34], 16)
    [5, 5, 6]
    """
    out = [0] * len(weights)
    for _ in range(seats):
        best = max(
            (i for i, w in enumerate(weights) if w > 0),
            key=lambda i: (Fraction(weights[i]) / (2 * out[i] + 1), -i),
            default=None,
        )
        if best is None:
            break
        out[best] += 1
    return out


def dp_hash_slots(weights: list[int]) -> int | None:
    """How many hash slots Open vSwitch gives a select group, or None if it gives up (>256).

    Follows ofproto-dpif.c group_setup_dp_hash_table: enough slots for the smallest weight to
    get one, at least four per bucket (up to 256), a power of two, at least 16.
    """
    live = [w for w in weights if w > 0]
    if not live:
        return None
    slots = max(math.ceil(sum(live) / min(live)), min(len(live) * 4, DP_HASH_MAX_SLOTS))
    slots = max(16, 1 << (slots - 1).bit_length())
    return slots if slots <= DP_HASH_MAX_SLOTS else None


def ovs_select_shares(weights: list[int]) -> list[float] | None:
    """The share of new flows each bucket gets from Open vSwitch's dp_hash select group."""
    slots = dp_hash_slots(weights)
    if slots is None:
        return None
    return [s / slots for s in webster([max(w, 0) for w in weights], slots)]


def bucket_weights(weights: list[Fraction]) -> list[int]:
    """Relative weights as OpenFlow bucket weights (integers up to 65535), ratios kept as
    closely as 16 bits allow.

    >>> bucket_weights([Fraction(45), Fraction(45), Fraction(10)])
    [9, 9, 2]
    """
    if not any(weights):
        return [0] * len(weights)
    scale = math.lcm(*(Fraction(w).denominator for w in weights))
    ints = [int(w * scale) for w in weights]
    common = math.gcd(*ints)
    ints = [i // common for i in ints]
    if max(ints) <= U16:
        return ints
    return [max(1, round(i * U16 / max(ints))) if i else 0 for i in ints]
