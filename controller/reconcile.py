"""Desired versus installed state: the difference, as ordered OpenFlow messages.

Pure functions. The order makes every intermediate state safe: groups exist before flows point at
them, new and changed flows go in before stale ones come out, and groups go last. A barrier fences
each phase so a switch never reorders across it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from os_ken.ofproto import ofproto_v1_3 as ofp

from controller.flows import Flow, FlowKey, Group, barrier, flow_mod, group_mod


@dataclass
class Plan:
    group_adds: list[Group] = field(default_factory=list)
    group_mods: list[Group] = field(default_factory=list)
    flow_adds: list[Flow] = field(default_factory=list)
    flow_mods: list[Flow] = field(default_factory=list)
    flow_deletes: list[Flow] = field(default_factory=list)
    group_deletes: list[Group] = field(default_factory=list)

    def __bool__(self) -> bool:
        return any(
            (
                self.group_adds,
                self.group_mods,
                self.flow_adds,
                self.flow_mods,
                self.flow_deletes,
                self.group_deletes,
            )
        )

    def summary(self) -> str:
        flows = f"+{len(self.flow_adds)} ~{len(self.flow_mods)} -{len(self.flow_deletes)} flows"
        groups = f"+{len(self.group_adds)} ~{len(self.group_mods)} -{len(self.group_deletes)}"
        return f"{flows}, {groups} groups"


def _changed(installed: Mapping, desired: Mapping, keys: Iterable | None):
    """(have, want) for each key whose entry differs; None stands for absent."""
    for key in installed.keys() | desired.keys() if keys is None else keys:
        have, want = installed.get(key), desired.get(key)
        if have != want:
            yield have, want


def diff_flows(
    installed: Mapping[FlowKey, Flow],
    desired: Mapping[FlowKey, Flow],
    keys: Iterable[FlowKey] | None = None,
    plan: Plan | None = None,
) -> Plan:
    """Compare the given keys (all keys of both when None) and record what must change."""
    plan = plan or Plan()
    for have, want in _changed(installed, desired, keys):
        if want is None:
            plan.flow_deletes.append(have)
        elif have is None:
            plan.flow_adds.append(want)
        elif (have.cookie, have.idle_timeout, have.hard_timeout, have.flags) == (
            want.cookie,
            want.idle_timeout,
            want.hard_timeout,
            want.flags,
        ):
            plan.flow_mods.append(want)
        else:
            # MODIFY cannot change timeouts or flags; an ADD on the same key replaces in place.
            plan.flow_adds.append(want)
    return plan


def diff_groups(
    installed: Mapping[int, Group],
    desired: Mapping[int, Group],
    ids: Iterable[int] | None = None,
    plan: Plan | None = None,
) -> Plan:
    plan = plan or Plan()
    for have, want in _changed(installed, desired, ids):
        if want is None:
            plan.group_deletes.append(have)
        elif have is None:
            plan.group_adds.append(want)
        else:
            # OFPGC_MODIFY carries the type too, so even a type change is done in place.
            plan.group_mods.append(want)
    return plan


def messages(plan: Plan) -> list:
    """The plan as OpenFlow messages, phase by phase, with a barrier after each phase."""
    phases = [
        [group_mod(g, ofp.OFPGC_ADD) for g in plan.group_adds]
        + [group_mod(g, ofp.OFPGC_MODIFY) for g in plan.group_mods],
        [flow_mod(f, ofp.OFPFC_ADD) for f in plan.flow_adds]
        + [flow_mod(f, ofp.OFPFC_MODIFY_STRICT) for f in plan.flow_mods],
        [flow_mod(f, ofp.OFPFC_DELETE_STRICT) for f in plan.flow_deletes],
        [group_mod(g, ofp.OFPGC_DELETE) for g in plan.group_deletes],
    ]
    out: list = []
    for phase in phases:
        if phase:
            out.extend(phase)
            out.append(barrier())
    return out


def apply_plan(
    installed_flows: dict[FlowKey, Flow], installed_groups: dict[int, Group], plan: Plan
) -> None:
    """Update our record of a switch after sending `plan` to it."""
    for g in plan.group_deletes:
        installed_groups.pop(g.group_id, None)
    for g in plan.group_adds + plan.group_mods:
        installed_groups[g.group_id] = g
    for f in plan.flow_deletes:
        installed_flows.pop(f.key, None)
    for f in plan.flow_adds + plan.flow_mods:
        installed_flows[f.key] = f
