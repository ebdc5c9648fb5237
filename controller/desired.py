"""What every app wants on every switch, kept by owner so a change touches only its own flows.

An owner is any hashable name an app picks ("l2/host/00:00:00:00:00:01", "core/pipeline"). `put`
replaces that owner's whole contribution and marks only the keys that really changed as dirty; the
core then diffs just those keys against the switch. Two owners asking for the same entry with
different contents is a bug in an app: the first owner keeps it and the conflict is reported.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping

from controller.flows import Flow, FlowKey, Group

LOG = logging.getLogger("osken_suite.desired")


class DesiredState:
    def __init__(self) -> None:
        self._flows_by_owner: dict[Hashable, dict[int, dict[FlowKey, Flow]]] = {}
        self._groups_by_owner: dict[Hashable, dict[int, dict[int, Group]]] = {}
        self.flows: dict[int, dict[FlowKey, Flow]] = defaultdict(dict)
        self.groups: dict[int, dict[int, Group]] = defaultdict(dict)
        self._flow_owner: dict[tuple[int, FlowKey], Hashable] = {}
        self._group_owner: dict[tuple[int, int], Hashable] = {}
        self.dirty_flows: dict[int, set[FlowKey]] = defaultdict(set)
        self.dirty_groups: dict[int, set[int]] = defaultdict(set)
        self.conflicts = 0

    # --- flows ---------------------------------------------------------------------------------

    def put(self, owner: Hashable, flows_by_dpid: Mapping[int, Iterable[Flow]]) -> None:
        """Make `flows_by_dpid` the whole of `owner`'s flows (switches not named lose theirs)."""
        new = {dpid: {f.key: f for f in flows} for dpid, flows in flows_by_dpid.items()}
        old = self._flows_by_owner.get(owner, {})
        for dpid in old.keys() | new.keys():
            self._replace_flows(owner, dpid, old.get(dpid, {}), new.get(dpid, {}))
        if any(new.values()):
            self._flows_by_owner[owner] = {d: t for d, t in new.items() if t}
        else:
            self._flows_by_owner.pop(owner, None)

    def drop(self, owner: Hashable) -> None:
        self.put(owner, {})
        self.put_groups(owner, {})

    def _replace_flows(self, owner, dpid, old: dict[FlowKey, Flow], new: dict[FlowKey, Flow]):
        table = self.flows[dpid]
        for key in old.keys() - new.keys():
            if self._flow_owner.get((dpid, key)) == owner:
                del self._flow_owner[(dpid, key)]
                del table[key]
                self.dirty_flows[dpid].add(key)
        for key, f in new.items():
            holder = self._flow_owner.get((dpid, key))
            if holder is None or holder == owner:
                if table.get(key) != f:
                    table[key] = f
                    self.dirty_flows[dpid].add(key)
                self._flow_owner[(dpid, key)] = owner
            elif table[key] != f:
                self.conflicts += 1
                LOG.error(
                    "dpid %s: %r and %r want different entries for %r; keeping the first",
                    dpid,
                    holder,
                    owner,
                    key,
                )

    # --- groups --------------------------------------------------------------------------------

    def put_groups(self, owner: Hashable, groups_by_dpid: Mapping[int, Iterable[Group]]) -> None:
        new = {dpid: {g.group_id: g for g in groups} for dpid, groups in groups_by_dpid.items()}
        old = self._groups_by_owner.get(owner, {})
        for dpid in old.keys() | new.keys():
            table = self.groups[dpid]
            for gid in old.get(dpid, {}).keys() - new.get(dpid, {}).keys():
                if self._group_owner.get((dpid, gid)) == owner:
                    del self._group_owner[(dpid, gid)]
                    del table[gid]
                    self.dirty_groups[dpid].add(gid)
            for gid, g in new.get(dpid, {}).items():
                holder = self._group_owner.get((dpid, gid))
                if holder not in (None, owner):
                    self.conflicts += 1
                    LOG.error("dpid %s: %r and %r both want group %d", dpid, holder, owner, gid)
                    continue
                if table.get(gid) != g:
                    table[gid] = g
                    self.dirty_groups[dpid].add(gid)
                self._group_owner[(dpid, gid)] = owner
        if any(new.values()):
            self._groups_by_owner[owner] = {d: t for d, t in new.items() if t}
        else:
            self._groups_by_owner.pop(owner, None)

    # --- queries -------------------------------------------------------------------------------

    def owned(self, owner: Hashable) -> dict[int, dict[FlowKey, Flow]]:
        return self._flows_by_owner.get(owner, {})

    def take_dirty(self, dpid: int) -> tuple[set[FlowKey], set[int]]:
        """The keys changed on `dpid` since the last call; the caller diffs and sends them."""
        return self.dirty_flows.pop(dpid, set()), self.dirty_groups.pop(dpid, set())
