"""What every app wants on every switch, kept by owner so a change touches only its own flows.

An owner is any hashable name an app picks ("l2/host/00:00:00:00:00:01", "core/pipeline"). `put`
replaces that owner's whole contribution and marks only the keys that really changed as dirty; the
core then diffs just those keys against the switch. Two owners asking for the same entry with
different contents is a bug in an app: the first owner keeps it and the conflict is reported.

A config reload changes the desired state inside `transaction()`: every store it changes is
journalled, so a reload that fails half-way is rolled back to exactly what was there before,
at the cost of the entries it touched, not of the whole state.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Hashable, Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

from controller.flows import Flow, FlowKey, Group, Meter

LOG = logging.getLogger("osken_suite.desired")
NUMBERED = ("group", "meter")
_ABSENT = object()


class DesiredState:
    """The flows, groups and meters every app wants, by switch and by owner.

    Attributes
    ----------
    flows : dict
        dpid to flow key to Flow: the union of every owner's flows.
    numbered : dict
        "group" / "meter" to dpid to number to Group / Meter.
    dirty_flows, dirty_numbered : dict
        What changed since the core last took it (`take_dirty`).
    conflicts : int
        Times two owners asked for different contents of one entry.
    version : int
        Grows whenever any switch's desired flows change (for indexes kept over `flows`).
    """

    def __init__(self) -> None:
        self._flows_by_owner: dict[Hashable, dict[int, dict[FlowKey, Flow]]] = {}
        self.flows: dict[int, dict[FlowKey, Flow]] = defaultdict(dict)
        self._flow_owner: dict[tuple[int, FlowKey], Hashable] = {}
        self.dirty_flows: dict[int, set[FlowKey]] = defaultdict(set)
        # Groups and meters, by kind: dpid -> number -> object, and who owns each number.
        self.numbered = {k: defaultdict(dict) for k in NUMBERED}
        self._numbered_owner: dict[str, dict[tuple[int, int], Hashable]] = {k: {} for k in NUMBERED}
        self._numbered_by_owner: dict[str, dict] = {k: {} for k in NUMBERED}
        self.dirty_numbered = {k: defaultdict(set) for k in NUMBERED}
        self.conflicts = 0
        self.version = 0
        self._journal: list[tuple[MutableMapping, Any, Any]] | None = None

    # --- transactions --------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Changes made inside stay only if the block ends normally; an exception rolls every
        store back to what it held on entry (then propagates). Not reentrant: a nested
        transaction raises RuntimeError.

        Keys left dirty by a rolled-back change are harmless: diffing them finds nothing.
        """
        if self._journal is not None:
            raise RuntimeError("DesiredState.transaction is not reentrant")
        self._journal = []
        try:
            yield
        except BaseException:
            for store, key, old in reversed(self._journal):
                if old is _ABSENT:
                    store.pop(key, None)
                else:
                    store[key] = old
            self.version += 1
            raise
        finally:
            self._journal = None

    def _set(self, store: MutableMapping, key, value) -> None:
        if self._journal is not None:
            self._journal.append((store, key, store.get(key, _ABSENT)))
        store[key] = value

    def _del(self, store: MutableMapping, key) -> None:
        if key in store:
            if self._journal is not None:
                self._journal.append((store, key, store[key]))
            del store[key]

    # --- flows ---------------------------------------------------------------------------------

    def put(self, owner: Hashable, flows_by_dpid: Mapping[int, Iterable[Flow]]) -> None:
        """Make `flows_by_dpid` the whole of `owner`'s flows (switches not named lose theirs)."""
        new = {dpid: {f.key: f for f in flows} for dpid, flows in flows_by_dpid.items()}
        old = self._flows_by_owner.get(owner, {})
        for dpid in old.keys() | new.keys():
            self._replace_flows(owner, dpid, old.get(dpid, {}), new.get(dpid, {}))
        if any(new.values()):
            self._set(self._flows_by_owner, owner, {d: t for d, t in new.items() if t})
        else:
            self._del(self._flows_by_owner, owner)

    def drop(self, owner: Hashable) -> None:
        """Remove everything `owner` asked for: its flows, groups and meters."""
        self.put(owner, {})
        self.put_groups(owner, {})
        self.put_meters(owner, {})

    @property
    def groups(self) -> dict[int, dict[int, Group]]:
        """dpid to group id to Group: every owner's groups."""
        return self.numbered["group"]

    @property
    def meters(self) -> dict[int, dict[int, Meter]]:
        """dpid to meter id to Meter: every owner's meters."""
        return self.numbered["meter"]

    def _replace_flows(self, owner, dpid, old: dict[FlowKey, Flow], new: dict[FlowKey, Flow]):
        table = self.flows[dpid]
        for key in old.keys() - new.keys():
            if self._flow_owner.get((dpid, key)) == owner:
                self._del(self._flow_owner, (dpid, key))
                self._del(table, key)
                self.dirty_flows[dpid].add(key)
                self.version += 1
        for key, f in new.items():
            holder = self._flow_owner.get((dpid, key))
            if holder is None or holder == owner:
                if table.get(key) != f:
                    self._set(table, key, f)
                    self.dirty_flows[dpid].add(key)
                    self.version += 1
                if holder is None:
                    self._set(self._flow_owner, (dpid, key), owner)
            elif table[key] != f:
                self.conflicts += 1
                LOG.error(
                    "dpid %s: %r and %r want different entries for %r; keeping the first",
                    dpid,
                    holder,
                    owner,
                    key,
                )

    # --- groups and meters: numbered objects, kept the same way ---------------------------------

    def put_groups(self, owner: Hashable, groups_by_dpid: Mapping[int, Iterable[Group]]) -> None:
        """Replace `owner`'s groups: dpid to the groups it wants there (as `put` does flows)."""
        self._put_numbered(
            "group", owner, {d: {g.group_id: g for g in gs} for d, gs in groups_by_dpid.items()}
        )

    def put_meters(self, owner: Hashable, meters_by_dpid: Mapping[int, Iterable[Meter]]) -> None:
        """Replace `owner`'s meters: dpid to the meters it wants there (as `put` does flows)."""
        self._put_numbered(
            "meter", owner, {d: {m.meter_id: m for m in ms} for d, ms in meters_by_dpid.items()}
        )

    def _put_numbered(self, kind: str, owner: Hashable, new: dict[int, dict[int, object]]) -> None:
        store, holders = self.numbered[kind], self._numbered_owner[kind]
        by_owner, dirty = self._numbered_by_owner[kind], self.dirty_numbered[kind]
        old = by_owner.get(owner, {})
        for dpid in old.keys() | new.keys():
            table = store[dpid]
            for num in old.get(dpid, {}).keys() - new.get(dpid, {}).keys():
                if holders.get((dpid, num)) == owner:
                    self._del(holders, (dpid, num))
                    self._del(table, num)
                    dirty[dpid].add(num)
            for num, obj in new.get(dpid, {}).items():
                holder = holders.get((dpid, num))
                if holder not in (None, owner):
                    self.conflicts += 1
                    LOG.error("dpid %s: %r and %r both want %s %d", dpid, holder, owner, kind, num)
                    continue
                if table.get(num) != obj:
                    self._set(table, num, obj)
                    dirty[dpid].add(num)
                if holder is None:
                    self._set(holders, (dpid, num), owner)
        if any(new.values()):
            self._set(by_owner, owner, {d: t for d, t in new.items() if t})
        else:
            self._del(by_owner, owner)

    # --- queries -------------------------------------------------------------------------------

    def dirty_switches(self) -> set[int]:
        """The dpids with a flow, group or meter changed since the last `take_dirty`."""
        out = set(self.dirty_flows)
        for dirty in self.dirty_numbered.values():
            out |= dirty.keys()
        return out

    def take_dirty(self, dpid: int) -> tuple[set[FlowKey], dict[str, set[int]]]:
        """What changed on `dpid` since the last call (flow keys; group and meter numbers)."""
        numbered = {k: d.pop(dpid, set()) for k, d in self.dirty_numbered.items()}
        return self.dirty_flows.pop(dpid, set()), numbered
