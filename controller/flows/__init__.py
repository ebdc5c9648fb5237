"""Canonical flows, groups and meters, and their translation to and from OpenFlow 1.3.

One job per module; this package re-exports their public names, so ``from controller.flows import
flow, flow_mod`` works for every caller:

- `controller.flows.model`: the values (`Flow`, `Group`, `Bucket`, `Meter`) and match
  normalisation (`norm_match`);
- `controller.flows.actions`: constructors of actions and instructions (`output`, `goto`,
  `conntrack`, `nat`...);
- `controller.flows.encode`: canonical values to os-ken messages and wire bytes (`flow_mod`,
  `group_mod`, `WireMatch`...);
- `controller.flows.decode`: what a switch reports back to canonical values (`flow_from_stats`...).

>>> f = flow(4, 10, {"eth_dst": "00:00:00:00:00:01"}, apply(output(2)))
>>> flow_from_stats(flow_mod(f)) == f
True
"""

from controller.flows.actions import (
    CONTROLLER,
    NAT_DST,
    NAT_SRC,
    NO_BUFFER,
    apply,
    conntrack,
    controller_copy,
    goto,
    group_action,
    meter,
    nat,
    output,
    set_field,
    to_controller,
    write_metadata,
)
from controller.flows.decode import (
    action_from_of,
    flow_from_stats,
    group_from_desc,
    instruction_from_of,
    meter_from_config,
)
from controller.flows.encode import (
    GROUP_TYPES,
    METER_FLAGS,
    NX_VENDOR_ID,
    NXT_CT_FLUSH_ZONE,
    OF13,
    WireFlowMod,
    WireMatch,
    barrier,
    ct_flush_zone,
    flow_mod,
    group_mod,
    meter_mod,
    of_action,
    of_instruction,
    oxm_bytes,
    packet_out,
)
from controller.flows.model import (
    Action,
    Bucket,
    Flow,
    FlowKey,
    Group,
    Instruction,
    Match,
    Meter,
    flow,
    group,
    norm_match,
)

__all__ = [
    "CONTROLLER",
    "GROUP_TYPES",
    "METER_FLAGS",
    "NAT_DST",
    "NAT_SRC",
    "NO_BUFFER",
    "NXT_CT_FLUSH_ZONE",
    "NX_VENDOR_ID",
    "OF13",
    "Action",
    "Bucket",
    "Flow",
    "FlowKey",
    "Group",
    "Instruction",
    "Match",
    "Meter",
    "WireFlowMod",
    "WireMatch",
    "action_from_of",
    "apply",
    "barrier",
    "conntrack",
    "controller_copy",
    "ct_flush_zone",
    "flow",
    "flow_from_stats",
    "flow_mod",
    "goto",
    "group",
    "group_action",
    "group_from_desc",
    "group_mod",
    "instruction_from_of",
    "meter",
    "meter_from_config",
    "meter_mod",
    "nat",
    "norm_match",
    "of_action",
    "of_instruction",
    "output",
    "oxm_bytes",
    "packet_out",
    "set_field",
    "to_controller",
    "write_metadata",
]
