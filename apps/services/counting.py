"""Connections per backend for method "switch", from the select groups' bucket counters.

With method "switch" no connection reaches the controller: each route's select group picks the
backend. Only a connection's first packet crosses that group (the new-connection flow matches
conntrack's +new; the bucket commits the connection, and its later packets are +est), so a
bucket's packet count (OFPMP_GROUP bucket_stats, OpenFlow 1.3.5 7.3.5.9) is the number of
connections it committed. Each bucket is read by what the group declares it commits to (the
backend its fast-failover group or its ct(nat) names, `explain.bucket_backend`), never by its
position, and a backend's buckets are summed: a group may give one backend several buckets.

Accuracy: a counted connection is a first packet the switch committed, whether or not the
backend answered; a TCP SYN sent again before the commit's reply is +est, not counted again; a
UDP "connection" is a 5-tuple within conntrack's lifetime. A fast-failover group that falls
back to a backup before the controller moves the split counts for the backend the bucket names.
Open vSwitch starts a group's counters again when the group is modified (its duration starts
again too); a poll that finds a group younger or lower than before counts from zero. A group
with a bucket whose counter the switch does not have (all ones) is not counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from apps.services.compile import select_group_id
from apps.services.explain import bucket_backend
from apps.services.settings import Service
from controller.flows import Group
from controller.switch import GroupStat

STATS_INTERVAL = 2.0  # seconds between group counter polls (the page refreshes every 2 s)
# A counter the switch does not have: "its value must be set to the maximum field value (the
# unsigned equivalent of -1)" (OpenFlow 1.3.5 7.3.5: counters, uint64).
UNAVAILABLE = 2**64 - 1


@dataclass(frozen=True)
class _Seen:
    duration: float
    packets: tuple[int, ...]


class GroupCounts:
    """The bucket counters each switch's select groups reported last, turned into new
    connections per (service, backend endpoint) as they grow.

    `count(s, endpoint, n)` is called with each increase (ServicesMetrics.connected_many).
    """

    def __init__(self, count: Callable[[Service, str, int], None]) -> None:
        self._count = count
        self._seen: dict[int, dict[int, _Seen]] = {}  # dpid -> group id -> last counters
        self._polled_at: dict[int, float] = {}  # dpid -> when its last reply came

    def forget(self, live: Iterable[int]) -> None:
        """Drop what switches not in `live` reported: their next reply is a new baseline."""
        live = set(live)
        for dpid in set(self._seen) - live:
            del self._seen[dpid]
            self._polled_at.pop(dpid, None)

    def add(
        self,
        dpid: int,
        stats: list[GroupStat],
        more: bool,
        now: float,
        services: list[Service],
        groups: dict[int, Group],
        ff: dict[str, dict[str, int]],
    ) -> None:
        """One part of switch `dpid`'s group stats reply. `services` in config order (their
        index numbers the groups), `groups` the switch's desired groups by id, `ff` its
        fast-failover group ids (service name -> backend key -> group id)."""
        by_gid = _select_groups(services)
        seen = self._seen.setdefault(dpid, {})
        since = self._polled_at.get(dpid)
        for st in stats:
            s = by_gid.get(st.group_id)
            if s is None or UNAVAILABLE in st.bucket_packets:
                continue  # not ours, or a bucket without a counter: nothing to count
            last = seen.get(st.group_id)
            seen[st.group_id] = _Seen(st.duration, st.bucket_packets)
            grown = _growth(last, st, None if since is None else now - since)
            g = groups.get(st.group_id)
            if not any(grown) or g is None or len(g.buckets) != len(grown):
                continue  # no bucket the declared group can name: not counted
            by_ff = {gid: key for key, gid in ff.get(s.name, {}).items()}
            per_backend: dict[str, int] = {}
            for bucket, n in zip(g.buckets, grown, strict=True):
                named = bucket_backend(s, bucket.actions, by_ff)["backend"]
                if named is not None and n:
                    per_backend[named["endpoint"]] = per_backend.get(named["endpoint"], 0) + n
            for endpoint, n in per_backend.items():
                self._count(s, endpoint, n)
        if not more:
            self._polled_at[dpid] = now


def _select_groups(services: list[Service]) -> dict[int, Service]:
    """Select group id -> its service, for the services of method "switch"."""
    return {
        select_group_id(i, r): s
        for i, s in enumerate(services)
        if s.method == "switch"
        for r in range(len(s.routes))
    }


def _growth(last: _Seen | None, st: GroupStat, window: float | None) -> list[int]:
    """Each bucket's new packets since `last`. A group not seen before counts whole when it
    is younger than the time since the switch's previous reply (`window`), else it is the
    baseline (a controller started after it: what came before is not ours to count). A group
    younger than before, or with a bucket lower than before, was replaced: counted from 0."""
    if last is None:
        fresh = window is not None and st.duration <= window
        return list(st.bucket_packets) if fresh else [0] * len(st.bucket_packets)
    replaced = st.duration < last.duration or len(st.bucket_packets) != len(last.packets)
    if replaced or any(n < m for n, m in zip(st.bucket_packets, last.packets, strict=True)):
        return list(st.bucket_packets)
    return [n - m for n, m in zip(st.bucket_packets, last.packets, strict=True)]
