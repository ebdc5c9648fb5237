"""A switch the trace cannot ask, answered from the controller's model of it: the flows and
groups the core wants there, walked as an OpenFlow 1.3 switch walks its tables.

Only where ofproto/trace cannot be run (the bridge is not on this machine, or ovs-appctl
fails), and said so: the hop's "source" is "model", and its "notes" say what the model had to
assume. The walk follows OpenFlow 1.3.5 section 5 (the highest-priority flow whose match takes
the packet, its instructions in order, goto_table, the action set at the end) and Open
vSwitch's ct() as ofproto/trace does by default: the packet resumes in the ct()'s table as a
new connection ("ct: assumed new", ct_state trk|new), committed with its translation and mark.
What only the switch knows is assumed and noted: which bucket a select group hashes the packet
to (the first live one with a weight), and which ports are live (the core's view).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from os_ken.ofproto import ofproto_v1_3 as ofp

from controller.flows import Flow, Group
from controller.flows.actions import NAT_DST, NAT_SRC
from controller.matches import CT_NEW, CT_TRK
from controller.trace.ovs import IN_PORT, Step, SwitchTrace
from controller.trace.packet import matches

MAX_STEPS = 256  # tables crossed, recirculations included: more is a loop
ASSUMED_NEW = "ct: assumed new"


def _text(action: tuple) -> str:
    """An action as ofproto/trace prints it (near enough to read, and "controller" where the
    packet goes to the controller)."""
    kind = action[0]
    if kind == "output" and action[1] == ofp.OFPP_CONTROLLER:
        return f"controller(max_len={action[2]})"
    if kind == "controller":
        return f"controller(max_len={action[1]},meter_id={action[2]})"
    if kind == "output":
        return "output:IN_PORT" if action[1] == ofp.OFPP_IN_PORT else f"output:{action[1]}"
    if kind == "set_field":
        return f"set_field:{action[2]}->{action[1]}"
    if kind == "group":
        return f"group:{action[1]}"
    if kind == "ct":
        flags, zone, table, nested = action[1:]
        parts = (["commit"] if flags & 1 else []) + [f"zone={zone}"]
        if table != ofp.OFPTT_ALL:
            parts.append(f"table={table}")
        parts += [_text(a) for a in nested]
        return f"ct({','.join(parts)})"
    if kind == "nat":
        flag, address, port = action[1:]
        side = "dst" if flag & NAT_DST else "src" if flag & NAT_SRC else ""
        return f"nat({side}={address}{f':{port}' if port else ''})" if side else "nat"
    return ":".join(str(x) for x in action)


def _match_text(f: Flow) -> str:
    def value(v):
        return f"{v[0]}/{v[1]}" if isinstance(v, tuple) else str(v)

    return ",".join(f"{name}={value(v)}" for name, v in f.match)


@dataclass
class _Walk:
    """What the walk has found so far."""

    tables: dict[int, list[Flow]]
    groups: Mapping[int, Group]
    live: set[int]
    steps: list[Step] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    controller: bool = False
    final: dict[str, Any] = field(default_factory=dict)  # the packet as it last left
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def run(self, pkt: dict[str, Any], table: int | None) -> None:
        """Cross the tables from `table` (OpenFlow 1.3.5 5.1)."""
        action_set: dict[str, tuple] = {}
        while table is not None and len(self.steps) < MAX_STEPS:
            f = next((f for f in self.tables.get(table, ()) if matches(f.match, pkt)), None)
            if f is None:
                self.steps.append(Step(table, None, 0, "", ("drop",), dict(pkt)))
                return
            shown = [_text(a) for ins in f.instructions if ins[0] == "apply" for a in ins[1]]
            next_table = None
            for ins in f.instructions:
                if ins[0] == "goto":
                    next_table = ins[1]
                    shown.append(f"goto_table:{ins[1]}")
            shown = shown or ["drop"]
            self.steps.append(
                Step(table, f.priority, f.cookie, _match_text(f), tuple(shown), dict(pkt), f)
            )
            for ins in f.instructions:
                if ins[0] == "apply" and self.actions(ins[1], pkt):
                    return  # recirculated: the walk went on from the ct()'s table
                if ins[0] == "clear":
                    action_set.clear()
                elif ins[0] == "write":
                    action_set.update({a[0]: a for a in ins[1]})
                elif ins[0] == "meta":
                    meta = pkt.get("metadata", 0)
                    pkt["metadata"] = (meta & ~ins[2]) | (ins[1] & ins[2])
            if next_table is None and self.actions(tuple(action_set.values()), pkt):
                return
            table = next_table
        if table is not None:
            self.note(f"more than {MAX_STEPS} tables crossed: a loop, not followed further")

    def actions(self, actions: Iterable[tuple], pkt: dict[str, Any]) -> bool:
        """Do `actions` on `pkt`; True when a ct() recirculated it."""
        for a in actions:
            kind = a[0]
            if kind == "output":
                self.output(a[1], pkt)
            elif kind == "set_field":
                pkt[a[1]] = a[2]
            elif kind == "group":
                self.group(a[1], pkt)
            elif kind == "push_vlan":
                pkt["vlan_vid"] = ofp.OFPVID_PRESENT
            elif kind == "pop_vlan":
                pkt["vlan_vid"] = 0
            elif kind == "ct" and self.conntrack(a, pkt):
                return True
        return False

    def output(self, port: int, pkt: dict[str, Any]) -> None:
        if port == ofp.OFPP_CONTROLLER:
            self.controller = True
        elif port == ofp.OFPP_IN_PORT:
            self.outputs.append(IN_PORT)
        elif port in (ofp.OFPP_ALL, ofp.OFPP_FLOOD):
            self.outputs += sorted(p for p in self.live if p != pkt.get("in_port"))
        elif port != pkt.get("in_port"):  # OpenFlow sends to the in_port only as IN_PORT
            self.outputs.append(port)
        self.final = dict(pkt)

    def group(self, gid: int, pkt: dict[str, Any]) -> None:
        g = self.groups.get(gid)
        if g is None:
            self.note(f"group {gid}: not in the model, dropped")
            return
        live = [b for b in g.buckets if b.watch_port in (ofp.OFPP_ANY, *self.live)]
        if g.type in ("all", "indirect"):
            chosen = list(g.buckets)
        elif g.type == "select":
            chosen = [b for b in live if b.weight][:1]
            if len(live) > 1:
                self.note(f"select group {gid}: the first live bucket assumed (the switch hashes)")
        else:
            chosen = live[:1]
        for bucket in chosen:
            self.actions(bucket.actions, dict(pkt))

    def conntrack(self, a: tuple, pkt: dict[str, Any]) -> bool:
        """ct(): the packet as a new connection, committed as the action says (translation
        and mark), on from the ct()'s table; False when it does not recirculate."""
        flags, zone, table, nested = a[1:]
        if table == ofp.OFPTT_ALL:
            return False
        self.note(ASSUMED_NEW)
        after = {**pkt, "ct_state": CT_TRK | CT_NEW, "ct_zone": zone, "ct_mark": 0}
        for n in nested if flags & 1 else ():
            if n[0] == "set_field" and n[1] == "ct_mark":
                after["ct_mark"] = n[2]
            elif n[0] == "nat" and n[2] is not None:
                _translate(after, "dst" if n[1] & NAT_DST else "src", n[2], n[3])
        self.run(after, table)
        return True


def _translate(pkt: dict[str, Any], side: str, address: str, port: int | None) -> None:
    pkt[f"ipv4_{side}"] = address
    for l4 in ("tcp", "udp"):
        if port and f"{l4}_{side}" in pkt:
            pkt[f"{l4}_{side}"] = port


def model_trace(
    flows: Iterable[Flow],
    groups: Mapping[int, Group],
    live: Iterable[int],
    pkt: dict[str, Any],
    group: int | None = None,
    actions: tuple | None = None,
) -> SwitchTrace:
    """Where the controller's model of a switch sends `pkt` (with its in_port): `flows` and
    `groups` as the core wants them there, `live` the switch's live port numbers (for
    floods and the buckets that watch a port); from table 0, or from group `group` (where
    ofproto/trace stopped: a select group the datapath hashes), or from a packet-out's
    `actions` (what an app would send a packet-in back with). Returns a SwitchTrace with
    source "model" and the assumptions made in `notes`."""
    tables: dict[int, list[Flow]] = {}
    for f in sorted(flows, key=lambda f: (f.table, -f.priority, f.match)):
        tables.setdefault(f.table, []).append(f)
    walk = _Walk(tables, groups, set(live))
    start = {"metadata": 0, "ct_state": 0, "ct_zone": 0, "ct_mark": 0, **pkt}
    walk.final = dict(start)
    if actions is not None:
        walk.actions(actions, start)
    elif group is None:
        walk.run(start, 0)
    else:
        walk.group(group, start)
    return SwitchTrace(
        tuple(walk.steps),
        tuple(walk.outputs),
        walk.controller,
        walk.final,
        source="model",
        notes=tuple(walk.notes),
    )


def completed(asked: SwitchTrace, modelled: SwitchTrace) -> SwitchTrace:
    """A switch's own trace that stopped at a hashed select group, with the model's walk
    from that group after it (source "switch+model", the steps from the model carrying
    their flow)."""
    note = (
        f"select group {asked.hashed_group} is hashed in the datapath, which ofproto/trace "
        "does not follow: the rest from the controller's model"
    )
    return continued(asked, modelled, note)


def continued(asked: SwitchTrace, modelled: SwitchTrace, note: str) -> SwitchTrace:
    """`asked` (a switch's own trace, or the model's) followed by the model's walk after it,
    `note` saying why: source "switch+model" ("model" when `asked` was the model's too)."""
    return SwitchTrace(
        asked.steps + modelled.steps,
        asked.outputs + modelled.outputs,
        asked.controller or modelled.controller,
        modelled.final,
        source="model" if asked.source == "model" else "switch+model",
        text=asked.text,
        notes=(*asked.notes, note, *modelled.notes),
    )
