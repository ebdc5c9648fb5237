"""Ask Open vSwitch where a packet goes: `ovs-appctl ofproto/trace` on one bridge, read.

ofproto/trace runs the bridge's real tables on a packet we describe (ovs-vswitchd(8),
"OFPROTO COMMANDS"), following conntrack recirculations with ct_state `trk|new`, and prints
each table it crossed with the flow that matched (match, priority, cookie) and its actions.
`parse_trace` reads that text into a `SwitchTrace`; `OvsSwitches` finds each switch's bridge
by datapath id and runs the command.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from typing import Any

from controller.flows import Flow
from controller.trace.packet import ovs_flow, parse_ovs_flow

TIMEOUT = 5.0  # seconds per ovs-appctl / ovs-vsctl call
_STEP = re.compile(r"^\s*(\d+)\. (?:(.*?),? ?)?priority (\d+)(?:, cookie (0x[0-9a-f]+))?$")
_NO_MATCH = re.compile(r"^\s*(\d+)\. No match")
_OUTPUT = re.compile(r"^\s*output:(\d+|IN_PORT)\b")
_META = re.compile(r"^\s*write_metadata:(0x[0-9a-f]+)(?:/(0x[0-9a-f]+))?")
_GROUP = re.compile(r"^\s*group:(\d+)$")
_SET = re.compile(r"^\s*set_field:([^-]+)->(\w+)")


class SwitchUnreachable(Exception):
    """The switch cannot be asked (no such bridge here, or ovs-appctl failed); the text says
    why."""


@dataclass(frozen=True)
class Step:
    """One table a packet crossed: the flow that matched it (None: no flow matched, the
    packet was dropped) and its actions as Open vSwitch printed them. `packet` is the packet
    as that table saw it (fields in OXM names); `flow` the flow itself where the one asked
    knows it exactly (a model of the switch), else None."""

    table: int
    priority: int | None
    cookie: int
    match: str
    actions: tuple[str, ...]
    packet: dict[str, Any] = field(default_factory=dict, compare=False)
    flow: Flow | None = field(default=None, compare=False)


@dataclass(frozen=True)
class SwitchTrace:
    """What one switch did with the packet: the steps in order (recirculations included),
    the OpenFlow ports it was output to ("IN_PORT" as 0xfffffff8), whether it went to the
    controller, the packet as it left, where the answer came from ("switch": its own
    ofproto/trace; "model": the controller's model of it, controller/trace/model.py;
    "switch+model": the switch up to a select group hashed in the datapath, `hashed_group`,
    which ofproto/trace cannot follow, the model after it) and what that answer had to
    assume (`notes`)."""

    steps: tuple[Step, ...]
    outputs: tuple[int, ...]
    controller: bool
    final: dict[str, Any]
    source: str = "switch"
    text: str = ""
    notes: tuple[str, ...] = ()
    hashed_group: int | None = None  # a select group the datapath hashes: not followed
    picked: dict[str, Any] | None = None  # an app's predicted packet-out (Tracer._predicted)


IN_PORT = 0xFFFFFFF8


def _apply(pkt: dict[str, Any], line: str) -> None:
    """Keep the packet's metadata and registers as the actions before this line set them."""
    meta = _META.match(line)
    if meta:
        value, mask = int(meta.group(1), 16), int(meta.group(2) or "0x" + "f" * 16, 16)
        pkt["metadata"] = (pkt.get("metadata", 0) & ~mask) | (value & mask)
        return
    set_field = _SET.match(line)
    if set_field and set_field.group(2) in ("reg0", "reg1", "ct_mark"):
        pkt[set_field.group(2)] = int(set_field.group(1), 0)


@dataclass
class _Reading:
    """What parse_trace has read so far."""

    steps: list[Step] = field(default_factory=list)
    actions: list[str] | None = None  # the current step's, while its lines come
    outputs: list[int] = field(default_factory=list)
    controller: bool = False
    pkt: dict[str, Any] = field(default_factory=dict)
    final: dict[str, Any] = field(default_factory=dict)
    datapath: bool = False
    group: int | None = None  # the last group an action sent the packet to
    hashed: bool = False  # ...and the datapath hashes it (dp_hash select): not followed

    def step(self, table: int, priority: int | None, cookie: int, match: str) -> None:
        self.actions = [] if priority is not None else ["drop"]
        self.steps.append(Step(table, priority, cookie, match, (), dict(self.pkt)))

    def action(self, line: str) -> None:
        action = line.strip()
        if self.actions is None or not action or action.startswith("->"):
            return
        self.actions.append(action)
        last = self.steps[-1]
        self.steps[-1] = Step(
            last.table, last.priority, last.cookie, last.match, tuple(self.actions), last.packet
        )
        _apply(self.pkt, line)
        group = _GROUP.match(line)
        if group:
            self.group = int(group.group(1))
        out = _OUTPUT.match(line)
        if out:
            self.outputs.append(IN_PORT if out.group(1) == "IN_PORT" else int(out.group(1)))
        self.controller |= action.startswith(("controller", "CONTROLLER"))


def parse_trace(text: str) -> SwitchTrace:
    """Read ofproto/trace's text (Open vSwitch 2.8 and later).

    Raises:
        ValueError: the text holds no table step and no datapath actions (not a trace).
    """
    r = _Reading()
    for line in text.splitlines():
        if line.startswith("Flow: "):
            r.pkt = parse_ovs_flow(line[len("Flow: ") :])
        elif line.startswith("Final flow: "):
            rest = line[len("Final flow: ") :]
            r.final = dict(r.pkt) if rest == "unchanged" else parse_ovs_flow(rest)
        elif line.startswith("Datapath actions: "):
            r.datapath = True
            r.hashed = "hash(" in line and r.group is not None
        elif step := _STEP.match(line):
            r.step(int(step[1]), int(step[3]), int(step[4] or "0", 16), step[2] or "")
        elif miss := _NO_MATCH.match(line):
            r.step(int(miss[1]), None, 0, "")
        elif line.startswith("    "):
            r.action(line)
        else:
            r.actions = None
    if not r.steps and not r.datapath:
        raise ValueError("not an ofproto/trace answer")
    hashed = r.group if r.hashed else None
    final = r.final or dict(r.pkt)
    return SwitchTrace(
        tuple(r.steps), tuple(r.outputs), r.controller, final, text=text, hashed_group=hashed
    )


class OvsSwitches:
    """The switches of this machine's Open vSwitch, asked with ovs-appctl and ovs-vsctl."""

    def __init__(self, run=subprocess.run) -> None:
        self._run = run
        self._bridges: dict[int, str] = {}

    def bridge(self, dpid: int) -> str:
        """The name of the bridge with datapath id `dpid` (asked again when unknown).

        Raises:
            SwitchUnreachable: ovs-vsctl fails or no bridge here has that datapath id.
        """
        if dpid not in self._bridges:
            out = self._call(
                ["ovs-vsctl", "--format=json", "--", "--columns=name,datapath_id", "list", "Bridge"]
            )
            try:
                rows = json.loads(out)["data"]
                self._bridges = {int(d, 16): n for n, d in rows if isinstance(d, str) and d}
            except (ValueError, KeyError, TypeError) as exc:
                raise SwitchUnreachable(f"ovs-vsctl: unexpected answer ({exc})") from None
        if dpid not in self._bridges:
            raise SwitchUnreachable(f"no Open vSwitch bridge here has datapath id {dpid:016x}")
        return self._bridges[dpid]

    def trace(self, dpid: int, pkt: dict[str, Any]) -> SwitchTrace:
        """ofproto/trace of `pkt` (with its in_port) on switch `dpid`.

        Raises:
            SwitchUnreachable: the bridge is not here, or ovs-appctl fails or times out.
        """
        text = self._call(["ovs-appctl", "ofproto/trace", self.bridge(dpid), ovs_flow(pkt)])
        try:
            return parse_trace(text)
        except ValueError as exc:
            raise SwitchUnreachable(f"ofproto/trace: {exc}") from None

    def _call(self, argv: list[str]) -> str:
        try:
            done = self._run(argv, capture_output=True, text=True, timeout=TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SwitchUnreachable(f"{argv[0]}: {exc}") from None
        if done.returncode:
            raise SwitchUnreachable(f"{argv[0]}: {(done.stderr or done.stdout).strip()}")
        return done.stdout
