"""Desired versus installed state: the difference, as ordered OpenFlow messages.

Pure functions. The order is chosen so that while a change is being applied every packet meets
either the whole old policy or the whole new one, never a mix of the two:

1. meters and groups are added or changed (nothing uses the new ones yet);
2. new flows are added: a packet that hits one meets a flow the new policy puts first;
3. changed flows are modified in place: whatever a packet hits is first in old or new;
4. stale flows are deleted lowest priority first, so whatever old flow a packet can still hit
   has every higher old flow still above it;
5. groups and meters no flow uses any more are deleted.

A barrier fences each phase, so even a switch that reorders messages cannot mix them. Where
the change should be atomic (a config reload) and the switch takes bundles, phases 2-4 go in one
atomic bundle instead, and the order above is the fallback.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller.flows import OF13, Flow, FlowKey, Group, barrier, flow_mod, group_mod, meter_mod

_MOD = {"group": group_mod, "meter": meter_mod}
_COMMANDS = {
    "group": (ofp.OFPGC_ADD, ofp.OFPGC_MODIFY, ofp.OFPGC_DELETE),
    "meter": (ofp.OFPMC_ADD, ofp.OFPMC_MODIFY, ofp.OFPMC_DELETE),
}


@dataclass
class Plan:
    """What to send to make a switch hold what is desired: flows and numbered objects
    (groups, meters by kind) to add, modify and delete. False when there is nothing to do.
    """

    flow_adds: list[Flow] = field(default_factory=list)
    flow_mods: list[Flow] = field(default_factory=list)
    flow_deletes: list[Flow] = field(default_factory=list)
    # kind ("group", "meter") -> objects to add, modify, delete
    adds: dict[str, list] = field(default_factory=lambda: {"group": [], "meter": []})
    mods: dict[str, list] = field(default_factory=lambda: {"group": [], "meter": []})
    deletes: dict[str, list] = field(default_factory=lambda: {"group": [], "meter": []})

    def __bool__(self) -> bool:
        numbered = [*self.adds.values(), *self.mods.values(), *self.deletes.values()]
        return any((self.flow_adds, self.flow_mods, self.flow_deletes, *numbered))

    def summary(self) -> str:
        """One line for logs: "+adds ~mods -deletes" of flows, groups and meters."""
        parts = [f"+{len(self.flow_adds)} ~{len(self.flow_mods)} -{len(self.flow_deletes)} flows"]
        for kind in ("group", "meter"):
            a, m, d = len(self.adds[kind]), len(self.mods[kind]), len(self.deletes[kind])
            parts.append(f"+{a} ~{m} -{d} {kind}s")
        return ", ".join(parts)


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
    plan = Plan() if plan is None else plan  # not "or": an empty Plan is falsy
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


def diff_numbered(
    kind: str,
    installed: Mapping[int, object],
    desired: Mapping[int, object],
    numbers: Iterable[int] | None = None,
    plan: Plan | None = None,
) -> Plan:
    """Groups or meters: MODIFY carries the whole object (a group's type too), so no replaces."""
    plan = Plan() if plan is None else plan  # not "or": an empty Plan is falsy
    for have, want in _changed(installed, desired, numbers):
        if want is None:
            plan.deletes[kind].append(have)
        elif have is None:
            plan.adds[kind].append(want)
        else:
            plan.mods[kind].append(want)
    return plan


def _phases(plan: Plan) -> tuple[list, list, list]:
    """(meter and group adds/mods, flow-mods in their safe order, meter and group deletes)."""
    first, last = [], []
    for kind, mod in _MOD.items():
        add, modify, delete = _COMMANDS[kind]
        # A group may chain only to lower-numbered groups: adds go up, deletes come down.
        adds, deletes = sorted(plan.adds[kind], key=number_of), plan.deletes[kind]
        first += [mod(o, add) for o in adds] + [mod(o, modify) for o in plan.mods[kind]]
        last += [mod(o, delete) for o in sorted(deletes, key=number_of, reverse=True)]
    flows = (
        [flow_mod(f, ofp.OFPFC_ADD) for f in plan.flow_adds]
        + [flow_mod(f, ofp.OFPFC_MODIFY_STRICT) for f in plan.flow_mods]
        + [
            flow_mod(f, ofp.OFPFC_DELETE_STRICT)
            for f in sorted(plan.flow_deletes, key=lambda f: f.priority)
        ]
    )
    return first, flows, last


def _fenced(phases: list[list]) -> list:
    out: list = []
    for phase in phases:
        if phase:
            out.extend(phase)
            out.append(barrier())
    return out


def messages(plan: Plan) -> list:
    """The plan as OpenFlow messages, phase by phase, with a barrier after each phase."""
    first, flows, last = _phases(plan)
    n_adds, n_mods = len(plan.flow_adds), len(plan.flow_mods)
    return _fenced(
        [first, flows[:n_adds], flows[n_adds : n_adds + n_mods], flows[n_adds + n_mods :], last]
    )


def bundled(plan: Plan, bundle_id: int) -> list:
    """The plan with all its flow-mods in one atomic, ordered bundle (OpenFlow 1.3 bundle
    extension): packets see the old tables or the new ones, nothing in between."""
    first, flows, last = _phases(plan)
    flags = ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED
    bundle = []
    if flows:
        bundle = [parser.ONFBundleCtrlMsg(OF13, bundle_id, ofp.ONF_BCT_OPEN_REQUEST, flags, [])]
        bundle += [parser.ONFBundleAddMsg(OF13, bundle_id, flags, m, []) for m in flows]
        bundle.append(
            parser.ONFBundleCtrlMsg(OF13, bundle_id, ofp.ONF_BCT_COMMIT_REQUEST, flags, [])
        )
    return _fenced([first, bundle, last])


def number_of(obj) -> int:
    """The number of a Group (group_id) or a Meter (meter_id)."""
    return obj.group_id if isinstance(obj, Group) else obj.meter_id


def apply_plan(
    installed_flows: dict[FlowKey, Flow], installed: dict[str, dict[int, object]], plan: Plan
) -> None:
    """Update our record of a switch after sending `plan` to it."""
    for kind, table in installed.items():
        for obj in plan.deletes[kind]:
            table.pop(number_of(obj), None)
        for obj in plan.adds[kind] + plan.mods[kind]:
            table[number_of(obj)] = obj
    for f in plan.flow_deletes:
        installed_flows.pop(f.key, None)
    for f in plan.flow_adds + plan.flow_mods:
        installed_flows[f.key] = f
