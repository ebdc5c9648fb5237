"""The table pipeline, declared as data.

Every switch gets the same tables in the same order. Each stage belongs to one app; the core
installs each stage's table-miss flow, so a stage whose app is not loaded passes packets on.

>>> PIPELINE.table("forwarding")
10
>>> [s.name for s in PIPELINE.stages][:3]
['classify', 'firewall', 'microseg']
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.flows import Flow, flow, goto

MISS_PRIORITY = 0

# Metadata bits, written in classify and read by later stages.
FROM_FABRIC = 1 << 0  # arrived from another switch: ingress policy was applied where it entered


@dataclass(frozen=True)
class Stage:
    """One table: its name, the app that owns it, and what happens to packets nothing matched."""

    name: str
    owner: str
    description: str
    miss: str = "next"  # "next": go to the following table; "drop": end of pipeline


@dataclass(frozen=True)
class Pipeline:
    stages: tuple[Stage, ...]

    def table(self, name: str) -> int:
        for table_id, stage in enumerate(self.stages):
            if stage.name == name:
                return table_id
        raise KeyError(f"no pipeline stage named {name!r}")

    def after(self, name: str) -> int:
        """The table that follows a stage: where an app sends what it has finished with, so a
        stage added later in between is never skipped."""
        return self.table(name) + 1

    @property
    def n_tables(self) -> int:
        return len(self.stages)

    def miss_flows(self) -> list[Flow]:
        """Table-miss entries: on to the next stage, or drop at the end."""
        flows = []
        for table_id, stage in enumerate(self.stages):
            if stage.miss == "next" and table_id + 1 < len(self.stages):
                flows.append(flow(table_id, MISS_PRIORITY, {}, goto(table_id + 1)))
            else:
                flows.append(flow(table_id, MISS_PRIORITY, {}))
        return flows


PIPELINE = Pipeline(
    (
        Stage("classify", "core", "trap LLDP, learn sources at edge ports, tag identities"),
        Stage("firewall", "firewall", "ordered IP rules, blocked sources, rate limits"),
        Stage("microseg", "microseg", "source identity, bound to port and address; spoofs drop"),
        Stage("microseg_track", "microseg", "destination identity"),
        Stage("microseg_dst", "microseg", "conntrack; replies to allowed connections pass"),
        Stage("microseg_egress", "microseg", "per source identity: deny, allow, default deny"),
        Stage("microseg_ingress", "microseg", "per destination identity; commit what passes"),
        Stage("chains", "sfc", "service chains: steer a traffic class through VNFs in order"),
        Stage("services", "canary", "virtual IPs: answer ARP, send through conntrack with NAT"),
        Stage("services_track", "canary", "new connections pick a backend; MACs follow the NAT"),
        Stage(
            "forwarding",
            "l2_learning",
            "known destinations along paths; flood along the tree",
            miss="drop",
        ),
    )
)
