"""Turning relative weights into choices: exactly per connection, or as a switch would.

`SmoothWeighted` is nginx's smooth weighted round-robin: deterministic, and after any number of
picks each backend's count is within one pick of its exact share, so 2,000 connections split
90/10 come out 1,800/200, not "about" that. The controller uses it for new connections.

`ovs_select_shares` is what Open vSwitch makes of bucket weights in a select group (its
dp_hash table of 16 to 256 Webster-apportioned hash values); `switch_buckets` chooses the
buckets whose table is the closest to a split that 256 values allow (method "switch").

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


def largest_remainder(weights: list[float | Fraction], seats: int) -> list[int]:
    """Apportion `seats` in proportion to `weights` by largest remainder (Hamilton): each gets
    the whole part of its quota, the seats left go to the largest fractions (the first of
    equals). Each count is within one seat of its quota, which Webster's method, with many
    small weights, is not.

    >>> largest_remainder([70, 30], 16)
    [11, 5]
    >>> largest_remainder([33, 33, 34], 256)
    [85, 84, 87]
    """
    total = sum(Fraction(w) for w in weights if w > 0)
    if not total:
        return [0] * len(weights)
    quotas = [Fraction(max(w, 0)) * seats / total for w in weights]
    out = [math.floor(q) for q in quotas]
    order = sorted(range(len(weights)), key=lambda i: (out[i] - quotas[i], i))
    for i in order[: seats - sum(out)]:
        out[i] += 1
    return out


def dp_hash_slots(weights: list[int], per_bucket: int = 0) -> int | None:
    """How many hash values Open vSwitch gives a select group's dp_hash table, or None when it
    needs more than 256 and falls back to its default (biased) hash method.

    Follows ofproto-dpif.c group_setup_dp_hash_table: enough values for the smallest non-zero
    weight to get one (total / min, rounded up), a power of two, at least 16. `per_bucket` is
    the later floor of 4 per bucket (up to 256) from Open vSwitch 3.1.6, 3.2.4, 3.3.3, 3.4.1
    and 3.5 (commit cb6423478); the 3.1.0 this suite runs on has none (0).

    >>> dp_hash_slots([9, 1]), dp_hash_slots([1] * 10), dp_hash_slots([1] * 10, per_bucket=4)
    (16, 16, 64)
    """
    live = [w for w in weights if w > 0]
    if not live:
        return None
    slots = max(-(-sum(live) // min(live)), min(len(weights) * per_bucket, DP_HASH_MAX_SLOTS))
    slots = max(16, 1 << (slots - 1).bit_length())
    return slots if slots <= DP_HASH_MAX_SLOTS else None


def ovs_hash_map(weights: list[int], per_bucket: int = 0) -> list[int] | None:
    """Open vSwitch's dp_hash table for buckets of these weights: for each hash value (the
    packet's dp_hash masked to the table), the index of the bucket it goes to; None when it
    falls back to its default hash method (`dp_hash_slots`).

    The loop of group_setup_dp_hash_table, in the same double arithmetic: each value goes to
    the bucket of the highest weight / divisor (divisors 1, 3, 5, ...: Webster), the first of
    equals. A hash value whose bucket is dead goes to the next value's bucket that is live
    (ofproto-dpif-xlate.c pick_dp_hash_select_group).

    >>> ovs_hash_map([9, 1])
    [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    """
    slots = dp_hash_slots(weights, per_bucket)
    if slots is None:
        return None
    divisor = [1] * len(weights)
    value = [float(w) for w in weights]
    table = []
    for _ in range(slots):
        winner = 0
        for i in range(1, len(weights)):
            if value[i] > value[winner]:
                winner = i
        divisor[winner] += 2
        value[winner] = weights[winner] / divisor[winner]
        table.append(winner)
    return table


def ovs_select_shares(weights: list[int], per_bucket: int = 0) -> list[float] | None:
    """The share of new flows each bucket gets from Open vSwitch's dp_hash select group."""
    table = ovs_hash_map(weights, per_bucket)
    if table is None:
        return None
    return [table.count(i) / len(table) for i in range(len(weights))]


def switch_buckets(weights: list[Fraction]) -> list[tuple[int, int]]:
    """Select-group buckets for a split whose dp_hash table is the closest to `weights` that
    256 hash values allow: (index into `weights`, bucket weight) pairs, in order.

    Each weight gets its largest-remainder share of 256 values as its bucket weight, so the bucket
    weights total 256; a weight-1 bucket (split off the first weight, which then has two
    buckets) makes Open vSwitch size the table at 256 / 1 = 256 values, and with quotas that
    are whole numbers its Webster loop hands each bucket exactly its weight. So each share is
    within one value (0.39 points) of its weight, mostly half of one (33/33/34 is
    33.20/32.81/33.98), and a weight under one value may get none. The same
    table with or without the later 4-per-bucket floor (`dp_hash_slots`). One weight: one
    bucket.

    >>> switch_buckets([Fraction(90), Fraction(10)])
    [(0, 229), (0, 1), (1, 26)]
    >>> ovs_select_shares([229, 1, 26])
    [0.89453125, 0.00390625, 0.1015625]
    """
    seats = largest_remainder(list(weights), DP_HASH_MAX_SLOTS)
    out = [(i, n) for i, n in enumerate(seats) if n]
    if len(out) == 1:
        return [(out[0][0], 1)]
    if not out or any(n == 1 for _, n in out):
        return out
    first, n = out[0]
    return [(first, n - 1), (first, 1), *out[1:]]


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
