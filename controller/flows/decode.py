"""The decoder: os-ken OpenFlow 1.3 stats, descriptions and messages back to canonical values.

What a switch reports (flow stats, group descriptions, meter configs) is read into the same form
apps build, so the reconciler compares like with like. Anything the controller never sends reads
as ``("unknown", ...)``, which equals nothing an app wants.
"""

from __future__ import annotations

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller.flows.actions import (
    NAT_DST,
    NAT_SRC,
    controller_copy,
    goto,
    group_action,
    meter,
    output,
    set_field,
    write_metadata,
)
from controller.flows.encode import GROUP_TYPES
from controller.flows.model import Action, Bucket, Flow, Group, Instruction, Meter, flow, group
from controller.flows.nxcontroller import NXActionControllerMeter

_GROUP_TYPE_NAMES = {v: k for k, v in GROUP_TYPES.items()}


def action_from_of(a) -> Action:
    """The canonical action for an os-ken action object; ``("unknown", repr)`` for others."""
    if isinstance(a, parser.OFPActionOutput):
        return output(a.port, a.max_len)
    if isinstance(a, NXActionControllerMeter) and a.meter_id is not None:
        return controller_copy(a.meter_id, a.max_len)
    if isinstance(a, parser.OFPActionGroup):
        return group_action(a.group_id)
    if isinstance(a, parser.OFPActionSetField):
        return set_field(a.key, a.value)
    if isinstance(a, parser.OFPActionPushVlan):
        return ("push_vlan", a.ethertype)
    if isinstance(a, parser.OFPActionPopVlan):
        return ("pop_vlan",)
    if isinstance(a, parser.NXActionCT) and not a.zone_src and not a.alg:
        nested = tuple(action_from_of(n) for n in a.actions)
        return ("ct", a.flags, a.zone_ofs_nbits, a.recirc_table, nested)
    if isinstance(a, parser.NXActionNAT) and _is_our_nat(a):
        return ("nat", a.flags, a.range_ipv4_min or None, a.range_proto_min)
    return ("unknown", repr(a))  # nothing we send: never equal to what we want


def _is_our_nat(a) -> bool:
    """Is this NXActionNAT one `nat()` makes: IPv4, src or dst, one address and one port at
    most (an absent maximum is the minimum, as Open vSwitch decodes it)?"""
    ip, port = a.range_ipv4_min or None, a.range_proto_min
    pmax = a.range_proto_max if a.range_proto_max is not None else port
    return (
        (a.range_ipv4_max or ip) == ip
        and pmax == port
        and not a.range_ipv6_min
        and not a.flags & ~(NAT_SRC | NAT_DST)
    )


def instruction_from_of(i) -> Instruction:
    """The canonical instruction for an os-ken instruction object; ``("unknown", type)`` else."""
    if isinstance(i, parser.OFPInstructionActions):
        acts = tuple(action_from_of(a) for a in i.actions)
        if i.type == ofp.OFPIT_APPLY_ACTIONS:
            return ("apply", acts)
        if i.type == ofp.OFPIT_WRITE_ACTIONS:
            return ("write", acts)
        return ("clear",)
    if isinstance(i, parser.OFPInstructionGotoTable):
        return goto(i.table_id)
    if isinstance(i, parser.OFPInstructionWriteMetadata):
        return write_metadata(i.metadata, i.metadata_mask)
    if isinstance(i, parser.OFPInstructionMeter):
        return meter(i.meter_id)
    return ("unknown", type(i).__name__)


def flow_from_stats(s) -> Flow:
    """A flow as a switch reports it (OpenFlow 1.3.5 sections 7.4.2, 7.5.2.1).

    Parameters
    ----------
    s : OFPFlowStats, OFPFlowMod or OFPFlowRemoved
        A removed-flow message carries no instructions or flags, only the entry's key, cookie
        and timeouts (seconds).

    Returns
    -------
    Flow
        Built by `controller.flows.model.flow`, so it compares equal to the flow asked for;
        ValueError if a match value does not parse.
    """
    instructions = [instruction_from_of(i) for i in (getattr(s, "instructions", None) or [])]
    return flow(
        s.table_id,
        s.priority,
        s.match._fields2,
        *instructions,
        cookie=s.cookie,
        idle_timeout=s.idle_timeout,
        hard_timeout=s.hard_timeout,
        flags=getattr(s, "flags", 0) or 0,
    )


def group_from_desc(d) -> Group:
    """A group as a switch reports it in an OFPGroupDescStats entry (OpenFlow 1.3.5 7.5.2.8).

    Raises
    ------
    KeyError
        A group type outside OpenFlow 1.3's four.
    """
    buckets = [
        Bucket(tuple(action_from_of(a) for a in b.actions), b.weight, b.watch_port, b.watch_group)
        for b in d.buckets
    ]
    return group(d.group_id, _GROUP_TYPE_NAMES[d.type], buckets)


def meter_from_config(c) -> Meter:
    """A meter as a switch reports it in an OFPMeterConfigStats entry (or a MeterMod we sent).

    OpenFlow 1.3.5 section 7.5.2.10; only the first band is read (we send one drop band).
    """
    unit = "kbps" if c.flags & ofp.OFPMF_KBPS else "pktps"
    band = c.bands[0] if c.bands else None
    burst = band.burst_size if band is not None and c.flags & ofp.OFPMF_BURST else 0
    return Meter(c.meter_id, unit, band.rate if band is not None else 0, burst)
