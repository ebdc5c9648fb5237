"""The table pipeline, declared as a contract.

Every switch gets the same tables in the same order. Each stage belongs to one app and declares
what its flows may do: the match fields they may read, the actions they may take (and which
fields they may set, which metadata bits they may write), the stages they may go to and which
apps may put flows in it. Gotos come from here (`Pipeline.goto`), never from table arithmetic,
and `Pipeline.check` refuses a flow that breaks its table's contract or uses a cookie, group,
meter, conntrack zone, register, metadata bit or VLAN id its app does not own
(controller/resources.py). The idea is FAUCET's (`faucet_pipeline.py`, `valve_table.py`).

The core installs each stage's table-miss flow, so a stage whose app is not loaded passes
packets on.

>>> PIPELINE.table("forwarding")
12
>>> [s.name for s in PIPELINE.stages][:3]
['classify', 'firewall', 'microseg']
>>> PIPELINE.goto("firewall", "microseg")
('goto', 2)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from types import MappingProxyType

from os_ken.ofproto import ofproto_v1_3 as ofp

from controller.flows import Action, Flow, Group, Meter, flow, goto
from controller.resources import COOKIE_SHIFT, Allocation, Registry


def _cookie(owner: str, byte: int) -> Allocation:
    """An app's cookie byte; its group ids, where it has any, start with the same byte."""
    return Allocation("cookie", owner, byte, byte, purpose="marks its flows")


# Who owns which numbers on a switch (controller/resources.py). A new app adds its cookie byte
# here, and any ids it needs, beside its stage below.
REGISTRY = Registry(
    [
        _cookie("core", 0x01),
        _cookie("l2_learning", 0x02),
        _cookie("firewall", 0x03),
        _cookie("microseg", 0x04),
        _cookie("services", 0x05),
        _cookie("chains", 0x06),
        _cookie("mirror", 0x07),
        Allocation("group", "l2_learning", 0x0200_0000, 0x02FF_FFFF, "", "ECMP select groups"),
        Allocation("group", "services", 0x0500_0000, 0x05FF_FFFF, "", "backends, route splits"),
        Allocation("group", "chains", 0x0600_0000, 0x06FF_FFFF, "", "chain hops' replica groups"),
        Allocation("meter", "firewall", 1, 0xFFFF, "", "rate limits (id: the rule's priority)"),
        Allocation("meter", "services", 0x1_0001, 0x1_0001, "health", "health check answers"),
        Allocation(
            "meter", "core", ofp.OFPM_CONTROLLER, ofp.OFPM_CONTROLLER, "", "packet-in limit"
        ),
        Allocation(
            "meter",
            "core",
            0x1_0000,
            0x1_0000,
            "flow_log",
            "flow log: denied connections to the controller",
            users=("firewall", "microseg"),
        ),
        Allocation("ct_zone", "firewall", 7, 7, "", "stateful rules"),
        Allocation("ct_zone", "microseg", 8, 8, "", "allowed connections and their replies"),
        Allocation("ct_zone", "services", 9, 9, "", "VIP to backend translation"),
        Allocation("ct_zone", "services", 10, 10, "snat", "hairpin: backend to VIP translation"),
        Allocation(
            "ct_zone", "services", 0x1000, 0x1FFF, "limit", "per-service connection counts (cap)"
        ),
        Allocation("metadata", "core", 0, 0, "from_fabric", "FROM_FABRIC: came from a switch"),
        Allocation("metadata", "microseg", 8, 23, "src", "source identity"),
        Allocation("metadata", "microseg", 24, 39, "dst", "destination identity"),
        Allocation("register", "microseg", 0, 31, "", "policy generation", field="reg0"),
        Allocation("register", "services", 0, 31, "", "the service's VIP (hairpin)", field="reg1"),
        Allocation("vlan_vid", "chains", 1, 1920, "", "chain transport tags between switches"),
    ]
)

# The suite's own apps (apps/): the module that runs each and the config sections it reads, so
# that a section of one that is not loaded is a warning naming it, not an unknown key
# (controller/sections.py). An app of your own, outside apps/, needs no line here.
SUITE_APPS = MappingProxyType(
    {
        "l2_learning": ("apps.l2_learning", ("l2",)),
        "firewall": ("apps.firewall", ("firewall",)),
        "microseg": ("apps.microseg", ("policies",)),
        "services": ("apps.services", ("services", "routing", "mesh", "policies")),
        "chains": ("apps.chains", ("chains",)),
        "mirror": ("apps.mirror", ("mirror",)),
    }
)

MISS_PRIORITY = 0
NO_TABLE = 0xFF  # OFPTT_ALL: a ct() that does not recirculate

# Metadata bits, written in classify and read by later stages.
FROM_FABRIC = REGISTRY.get("metadata", "core", "from_fabric").mask  # arrived from another switch

# Output ports no flow may name: OFPP_TABLE resubmits the packet to table 0 (a goto backwards,
# and a loop if it comes back; Open vSwitch takes it in a flow-mod, not only in a packet-out),
# and OFPP_NORMAL hands it to the switch's own L2 switching, outside every stage.
_NO_OUTPUT = MappingProxyType(
    {ofp.OFPP_TABLE: "OFPP_TABLE (back to table 0)", ofp.OFPP_NORMAL: "OFPP_NORMAL"}
)
_INSTRUCTIONS = frozenset({"goto", "apply", "write", "clear", "meta", "meter"})

_IP = frozenset({"eth_type", "ip_proto", "ipv4_src", "ipv4_dst", "ipv6_src", "ipv6_dst"})
_L4 = frozenset(f"{p}_{d}" for p in ("tcp", "udp", "sctp") for d in ("src", "dst"))


def _fields(*groups: Iterable[str]) -> frozenset[str]:
    return frozenset().union(*map(frozenset, groups))


@dataclass(frozen=True)
class Stage:
    """One table and its contract.

    `match`: the OXM fields its flows may match on. `actions`: action kinds its flows may
    apply ("output", "group", "ct", "nat", "push_vlan", "pop_vlan", "set_field", "controller":
    a metered copy to the controller) and "meter" for the meter instruction. `set_fields`:
    the fields set_field may write (in a ct() too).
    `metadata`: the metadata bits write_metadata may change. `goes_to`: the stages a goto may
    name; `recirculates`: the stages a ct() may send the packet back to. `writers`: apps other
    than `owner` that may put flows here (the core writes every table's miss flow).
    `miss`: "next" (go to the following stage, which must be in `goes_to`) or "drop" (end
    of the pipeline).
    """

    name: str
    owner: str
    description: str
    match: frozenset[str] = frozenset()
    actions: frozenset[str] = frozenset()
    set_fields: frozenset[str] = frozenset()
    metadata: int = 0
    goes_to: tuple[str, ...] = ()
    recirculates: tuple[str, ...] = ()
    writers: tuple[str, ...] = ()
    miss: str = "next"

    @property
    def apps(self) -> tuple[str, ...]:
        """The apps whose flows this table may hold: the owner, then the writers."""
        return (self.owner, *self.writers)


class PipelineError(ValueError):
    """The declaration itself is inconsistent, or an app asked for an undeclared goto."""


class PipelineViolation(ValueError):
    """A flow, a group's bucket or a meter breaks the contract. `table` (None for a group or
    meter), `stage`, `app` (from the cookie or id, or the app that stated it), `flow` (the
    Flow, Group or Meter) and `breach` say which and how."""

    def __init__(self, f: Flow | Group | Meter, stage: str, app: str, breach: str) -> None:
        self.flow, self.stage, self.app, self.breach = f, stage, app, breach
        self.table = f.table if isinstance(f, Flow) else None
        if isinstance(f, Flow):
            where, what = f"table {f.table}", f"flow {f}"
        elif isinstance(f, Group):
            where, what = f"group {f.group_id:#x}", str(f)
        else:
            where, what = f"meter {f.meter_id:#x}", str(f)
        super().__init__(f"{where} ({stage}), app {app}: {breach}; {what}")


@dataclass(frozen=True)
class _Contract:
    """A stage's contract in table numbers, ready for a cheap check of each flow."""

    stage: Stage
    gotos: frozenset[int]
    recirc: frozenset[int]
    apps: dict[int, str]  # cookie byte -> app


@dataclass(frozen=True)
class Pipeline:
    """The stages in table order, and the registry their apps' numbers come from.

    Raises:
        PipelineError: at construction, for a goto backwards or to a stage that does not
            exist, a "next" miss whose following stage is not declared, or a writer the
            registry gives no cookie.
    """

    stages: tuple[Stage, ...]
    registry: Registry = REGISTRY
    _contracts: tuple[_Contract, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise PipelineError(f"stage names repeat: {names}")
        contracts = []
        for table_id, s in enumerate(self.stages):
            gotos = {self._target(s, name, table_id + 1) for name in s.goes_to}
            recirc = {self._target(s, name, table_id) for name in s.recirculates}
            if s.miss == "next" and table_id + 1 not in gotos:
                raise PipelineError(f"stage {s.name}: a 'next' miss needs the following stage")
            try:
                apps = {self.registry.value("cookie", app): app for app in ("core", *s.apps)}
            except KeyError as exc:
                raise PipelineError(f"stage {s.name}: {exc.args[0]}") from None
            contracts.append(_Contract(s, frozenset(gotos), frozenset(recirc | {NO_TABLE}), apps))
        object.__setattr__(self, "_contracts", tuple(contracts))

    def _target(self, stage: Stage, name: str, lowest: int) -> int:
        try:
            table = self.table(name)
        except KeyError:
            raise PipelineError(f"stage {stage.name} names no stage {name!r}") from None
        if table < lowest:
            raise PipelineError(f"stage {stage.name} may not go back to {name}")
        return table

    def table(self, name: str) -> int:
        """The table id (0-254) of stage `name`. Raises KeyError for an unknown stage."""
        for table_id, stage in enumerate(self.stages):
            if stage.name == name:
                return table_id
        raise KeyError(f"no pipeline stage named {name!r}")

    def stage(self, table: int) -> Stage:
        """The stage at table id `table`. Raises IndexError past the last table."""
        return self.stages[table]

    def following(self, name: str) -> str:
        """The name of the stage after `name` (KeyError at the end of the pipeline)."""
        table = self.table(name) + 1
        if table >= len(self.stages):
            raise KeyError(f"stage {name!r} is the last")
        return self.stages[table].name

    def goto(self, src: str, dst: str) -> tuple:
        """The goto instruction from stage `src` to stage `dst`.

        Raises:
            PipelineError: `src` does not declare `dst` in its `goes_to`.
        """
        if dst not in self.stages[self.table(src)].goes_to:
            raise PipelineError(f"stage {src} does not declare a goto to {dst}")
        return goto(self.table(dst))

    def go_on(self, src: str) -> tuple:
        """The goto from `src` to the stage that follows it: what a stage does with what it
        has finished with, so a stage added later in between is never skipped."""
        return self.goto(src, self.following(src))

    @property
    def n_tables(self) -> int:
        """How many tables every switch gets, one per stage."""
        return len(self.stages)

    def miss_flows(self) -> list[Flow]:
        """Table-miss entries: on to the next stage, or drop at the end."""
        return [
            flow(t, MISS_PRIORITY, {}, self.go_on(s.name))
            if s.miss == "next"
            else flow(t, MISS_PRIORITY, {})
            for t, s in enumerate(self.stages)
        ]

    def markdown(self) -> str:
        """The declaration as a Markdown table (docs/architecture.md holds this text)."""
        rows = [
            "| table | stage | owner (+ writers) | may go to | actions | description |",
            "|---|---|---|---|---|---|",
        ]
        for t, s in enumerate(self.stages):
            apps = s.owner + "".join(f" + {w}" for w in s.writers)
            miss = self.stages[t + 1].name if s.miss == "next" else None
            goes = ", ".join(f"{n} (miss)" if n == miss else n for n in s.goes_to)
            extra = [f"ct -> {r}" for r in s.recirculates]
            extra += [f"set {f}" for f in sorted(s.set_fields)]
            extra += [f"metadata {s.metadata:#x}"] if s.metadata else []
            acts = ", ".join([*sorted(s.actions), *extra]) or "-"
            rows.append(
                f"| {t} | {s.name} | {apps} | {goes or 'drop'} | {acts} | {s.description} |"
            )
        return "\n".join(rows) + "\n"

    def app_of(self, f: Flow) -> str:
        """The app a flow's cookie names, or "unknown"."""
        return self.registry.owner("cookie", f.cookie >> COOKIE_SHIFT) or "unknown"

    def check(self, f: Flow) -> None:
        """Refuse a flow that breaks its table's contract.

        Raises:
            PipelineViolation: naming table, stage, app and the breach: a table outside the
                pipeline, a cookie of an app that may not write there, a match field, action,
                set_field or metadata bit the stage does not declare, a goto or recirculation
                to an undeclared stage, an output to OFPP_TABLE or OFPP_NORMAL (each leaves
                the pipeline's order), an instruction of unknown kind, or a group, meter,
                zone, register or VLAN id its app does not own.
        """
        if not 0 <= f.table < len(self._contracts):
            raise PipelineViolation(f, "?", self.app_of(f), "no such table in the pipeline")
        c = self._contracts[f.table]
        app = c.apps.get(f.cookie >> COOKIE_SHIFT)
        if app is None:
            who = self.app_of(f)
            raise PipelineViolation(f, c.stage.name, who, f"{who} may not write this table")
        for name, _ in f.match:
            if name not in c.stage.match:
                raise PipelineViolation(f, c.stage.name, app, f"match field {name} not declared")
        for ins in f.instructions:
            self._check_instruction(f, c, app, ins)

    def check_author(self, app: str, item: Flow | Group | Meter) -> None:
        """Refuse a flow, group or meter that `app` states under another app's number: a
        flow's cookie byte, a group's or a meter's id must be one `app` holds in the registry,
        or `check` would judge (and log and count) it as the other app's.

        Raises:
            PipelineViolation: naming `app`, the number and its owner.
        """
        if isinstance(item, Flow):
            kind, number = "cookie", item.cookie >> COOKIE_SHIFT
        elif isinstance(item, Group):
            kind, number = "group", item.group_id
        else:
            kind, number = "meter", item.meter_id
        if any(number in a for a in self.registry.of(kind, app)):
            return
        owner = self.registry.owner(kind, number) or "nobody"
        inside = isinstance(item, Flow) and 0 <= item.table < len(self.stages)
        stage = self.stages[item.table].name if inside else "?"
        raise PipelineViolation(item, stage, app, f"{kind} {number:#x} is {owner}'s, not {app}'s")

    def check_group(self, g: Group) -> None:
        """Refuse a group whose buckets do what no table that may use it allows.

        The group's id names its app (the registry's group ranges); its buckets run as the
        actions of a flow in a table where that app may write and use groups, so every bucket
        must pass one such table's contract, as `check` reads a flow's apply-actions.

        Raises:
            PipelineViolation: the id is no app's, or no stage of its app takes every bucket
                (the breach named is the one in the last such stage).
        """
        app = self.registry.owner("group", g.group_id)
        if app is None:
            raise PipelineViolation(g, "?", "unknown", "group id in no app's range")
        last = PipelineViolation(g, "?", app, "no stage where it may use groups")
        for c in self._contracts:
            if app not in c.stage.apps or "group" not in c.stage.actions:
                continue
            try:
                for bucket in g.buckets:
                    self._check_actions(g, c, app, bucket.actions)
            except PipelineViolation as exc:
                last = exc
            else:
                return
        raise last

    def _check_instruction(self, f: Flow, c: _Contract, app: str, ins: tuple) -> None:
        kind = ins[0]
        if kind not in _INSTRUCTIONS:
            raise PipelineViolation(f, c.stage.name, app, f"instruction {kind} unknown")
        if kind == "goto" and ins[1] not in c.gotos:
            raise PipelineViolation(f, c.stage.name, app, f"goto table {ins[1]} not declared")
        if kind in ("apply", "write"):
            self._check_actions(f, c, app, ins[1])
        elif kind == "meta" and ins[2] & ~(c.stage.metadata & self.registry.bits("metadata", app)):
            raise PipelineViolation(
                f, c.stage.name, app, f"write_metadata mask {ins[2]:#x} not declared"
            )
        elif kind == "meter":
            if "meter" not in c.stage.actions:
                raise PipelineViolation(f, c.stage.name, app, "meter not declared")
            self._own(f, c, app, "meter", ins[1])

    def _check_actions(self, f: Flow | Group, c: _Contract, app: str, actions: tuple[Action, ...]):
        for a in actions:
            kind = a[0]
            if kind not in c.stage.actions:
                raise PipelineViolation(f, c.stage.name, app, f"action {kind} not declared")
            if kind == "output" and a[1] in _NO_OUTPUT:
                raise PipelineViolation(f, c.stage.name, app, f"output to {_NO_OUTPUT[a[1]]}")
            if kind == "set_field":
                if a[1] not in c.stage.set_fields:
                    raise PipelineViolation(f, c.stage.name, app, f"set_field {a[1]} not declared")
                if a[1].startswith("reg") and self.registry.bits("register", app, a[1]) == 0:
                    raise PipelineViolation(f, c.stage.name, app, f"{a[1]} is not {app}'s")
                if a[1] == "vlan_vid":
                    self._own(f, c, app, "vlan_vid", a[2] & 0xFFF)
            elif kind == "group":
                self._own(f, c, app, "group", a[1])
            elif kind == "controller":
                self._own(f, c, app, "meter", a[2])
            elif kind == "ct":
                self._own(f, c, app, "ct_zone", a[2])
                if a[3] not in c.recirc:
                    raise PipelineViolation(
                        f, c.stage.name, app, f"ct recirculation to table {a[3]} not declared"
                    )
                self._check_actions(f, c, app, a[4])

    def _own(self, f: Flow | Group, c: _Contract, app: str, kind: str, number: int) -> None:
        if not any(number in a for a in self.registry.usable(kind, app)):
            owner = self.registry.owner(kind, number) or "nobody"
            raise PipelineViolation(
                f, c.stage.name, app, f"{kind} {number:#x} is {owner}'s, not {app}'s"
            )


PIPELINE = Pipeline(
    (
        Stage(
            "classify",
            "core",
            "trap LLDP, learn sources at edge ports, tag identities",
            match=frozenset({"in_port", "eth_src", "eth_dst", "eth_type", "vlan_vid"}),
            actions=frozenset({"output"}),
            metadata=FROM_FABRIC,
            goes_to=("firewall", "chains"),  # chains: frames from VNF replicas skip the policy
            writers=("l2_learning", "chains"),
        ),
        Stage(
            "firewall",
            "firewall",
            "ordered IP rules, blocked sources, rate limits",
            match=_fields(_IP, _L4, {"metadata", "ct_state", "icmpv4_type", "icmpv6_type"}),
            actions=frozenset({"ct", "meter", "output"}),  # output: the flow log's packet-ins
            goes_to=("microseg",),
            recirculates=("firewall",),
        ),
        Stage(
            "microseg",
            "microseg",
            "source identity, bound to port and address; spoofs drop",
            match=_fields(_IP, {"in_port", "eth_src", "arp_spa", "icmpv6_type", "metadata"}),
            actions=frozenset({"output"}),
            metadata=REGISTRY.get("metadata", "microseg", "src").mask,
            goes_to=("microseg_track", "flow_log"),  # flow_log: fabric, ARP, ND skip microseg
        ),
        Stage(
            "microseg_track",
            "microseg",
            "destination identity",
            match=_IP,
            metadata=REGISTRY.get("metadata", "microseg", "dst").mask,
            goes_to=("microseg_dst",),
        ),
        Stage(
            "microseg_dst",
            "microseg",
            "conntrack; replies to allowed connections pass",
            match=_fields(_IP, {"ct_state", "ct_zone", "tcp_flags"}),
            actions=frozenset({"ct", "set_field"}),
            set_fields=frozenset({"reg0"}),
            goes_to=("microseg_egress", "flow_log"),  # flow_log: replies to allowed connections
            recirculates=("microseg_dst",),
        ),
        Stage(
            "microseg_egress",
            "microseg",
            "per source identity: deny, allow, default deny",
            # eth_src: the waypoint's replicas, known by address and MAC (controller/guards.py)
            match=_fields(_IP, _L4, {"metadata", "eth_src"}),
            actions=frozenset({"meter", "output"}),  # the flow log's packet-ins
            goes_to=("microseg_ingress",),
        ),
        Stage(
            "microseg_ingress",
            "microseg",
            "per destination identity; commit what passes",
            match=_fields(_IP, _L4, {"metadata"}),
            actions=frozenset({"ct", "meter", "output"}),  # meter, output: the flow log
            goes_to=("flow_log",),
        ),
        Stage(
            "flow_log",
            "core",
            "allowed new connections: a metered copy to the flow log, then on",
            match=_fields(_IP, {"metadata", "ct_state", "tcp_flags"}),
            actions=frozenset({"controller"}),
            goes_to=("chains",),
        ),
        Stage(
            "chains",
            "chains",
            "service chains: steer a traffic class through VNFs in order",
            match=_fields(_IP, _L4, {"in_port", "metadata", "vlan_vid"}),
            actions=frozenset({"output", "group", "push_vlan", "pop_vlan", "set_field"}),
            set_fields=frozenset({"vlan_vid"}),
            goes_to=("services",),
        ),
        Stage(
            "services",
            "services",
            "virtual IPs: answer ARP, send through conntrack with NAT; health check answers",
            match=_fields(
                _IP, _L4, {"arp_tpa", "arp_spa", "in_port", "eth_src", "eth_dst", "tcp_flags"}
            ),
            actions=frozenset({"output", "ct", "nat", "set_field", "meter"}),
            set_fields=frozenset({"reg1", "ct_mark"}),  # ct_mark: a connection the cap counted
            goes_to=("services_track",),
            recirculates=("services_track",),
        ),
        Stage(
            "services_track",
            "services",
            "new connections pick a backend; MACs follow the NAT",
            match=_fields(_IP, _L4, {"ct_state", "ct_mark", "ct_zone", "reg1", "in_port"}),
            actions=frozenset({"output", "group", "ct", "nat", "set_field"}),
            set_fields=frozenset({"ct_mark", "eth_src", "eth_dst"}),
            goes_to=("mirror",),
            recirculates=("services_track",),
        ),
        Stage(
            "mirror",
            "mirror",
            "copies of what ports receive, to monitor ports",
            match=frozenset({"in_port"}),
            actions=frozenset({"output"}),
            goes_to=("forwarding",),
        ),
        Stage(
            "forwarding",
            "l2_learning",
            "known destinations along paths; flood along the tree",
            match=frozenset({"in_port", "eth_dst"}),
            actions=frozenset({"output", "group"}),
            miss="drop",
        ),
    )
)
