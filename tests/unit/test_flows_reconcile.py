"""Canonical flows survive the trip to a switch and back; the diff sends only what changed."""

import pytest
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller.desired import DesiredState
from controller.flows import (
    Bucket,
    apply,
    flow,
    flow_from_stats,
    flow_mod,
    goto,
    group,
    group_from_desc,
    group_mod,
    output,
    to_controller,
)
from controller.reconcile import apply_plan, diff_flows, diff_numbered, messages
from tests.fakeswitch import FakeSwitch


def test_flow_roundtrip_through_a_switch_compares_equal():
    wanted = [
        flow(
            0,
            200,
            {"in_port": 1, "eth_src": "00:AA:00:00:00:01"},
            goto(1),
            cookie=7,
            idle_timeout=300,
            flags=ofp.OFPFF_SEND_FLOW_REM,
        ),
        flow(0, 100, {"in_port": 2}, apply(to_controller(128)), goto(1)),
        flow(
            1,
            10,
            {"eth_type": 0x0800, "ipv4_dst": ("10.0.0.0", "255.255.255.255")},
            apply(output(3)),
        ),
        flow(1, 5, {"eth_dst": ("01:00:00:00:00:00", "01:00:00:00:00:00")}, apply()),
    ]
    sw = FakeSwitch(1, 2, {1: True, 2: True, 3: True})
    sw.apply([flow_mod(f) for f in wanted])
    back = [flow_from_stats(s) for s in sw.flow_stats()]
    assert sorted(back, key=repr) == sorted(wanted, key=repr)
    # A full mask is the same as an exact match, and MAC case does not matter.
    assert wanted[2].match == (("eth_type", 0x0800), ("ipv4_dst", "10.0.0.0"))
    assert wanted[0].match[0] == ("eth_src", "00:aa:00:00:00:01")


def test_group_roundtrip_drops_fields_a_switch_ignores():
    g = group(3, "all", [Bucket((output(1),), weight=50, watch_port=1)])
    desc = parser.OFPGroupDescStats(ofp.OFPGT_ALL, 3, group_mod(g).buckets)
    assert group_from_desc(desc) == g
    assert g.buckets[0].weight == 0 and g.buckets[0].watch_port == ofp.OFPP_ANY


def test_diff_sends_only_changes_in_safe_order():
    a = flow(0, 10, {"in_port": 1}, apply(output(2)))
    b = flow(0, 10, {"in_port": 2}, apply(output(1)))
    b2 = flow(0, 10, {"in_port": 2}, apply(output(3)))
    c = flow(0, 10, {"in_port": 3}, apply(output(1)))
    installed = {a.key: a, b.key: b}
    desired = {a.key: a, b2.key: b2, c.key: c}
    plan = diff_flows(installed, desired)
    assert plan.flow_adds == [c] and plan.flow_mods == [b2] and not plan.flow_deletes
    msgs = messages(plan)
    commands = [getattr(m, "command", "barrier") for m in msgs]
    assert commands == [ofp.OFPFC_ADD, "barrier", ofp.OFPFC_MODIFY_STRICT, "barrier"]
    apply_plan(installed, {"group": {}, "meter": {}}, plan)
    assert installed == desired
    assert not diff_flows(installed, desired)


def test_timeout_change_is_an_add_and_removal_is_a_strict_delete_after_adds():
    old = flow(0, 10, {"in_port": 1}, goto(1), idle_timeout=300)
    new = flow(0, 10, {"in_port": 1}, goto(1), idle_timeout=60)
    gone = flow(0, 10, {"in_port": 4}, goto(1))
    plan = diff_flows({old.key: old, gone.key: gone}, {new.key: new})
    msgs = messages(plan)
    kinds = [getattr(m, "command", None) for m in msgs]
    assert kinds == [ofp.OFPFC_ADD, None, ofp.OFPFC_DELETE_STRICT, None]


def _verdict(flows, pkt):
    sw = FakeSwitch(1, 1, {1: True, 2: True})
    sw.apply([flow_mod(f) for f in flows])
    return sw.lookup(pkt).ports()


def _gaps(old, new, steps, pkts):
    """Apply `steps` (flow-mods) one by one; count states where a packet meets neither policy."""
    current = {f.key: f for f in old}
    gaps = 0
    for msg in steps:
        f = flow_from_stats(msg)
        if msg.command == ofp.OFPFC_DELETE_STRICT:
            del current[f.key]
        else:
            current[f.key] = f
        gaps += sum(
            _verdict(current.values(), p) not in (_verdict(old, p), _verdict(new, p)) for p in pkts
        )
    assert current == {f.key: f for f in new}
    return gaps


def _tcp(port):
    return {"eth_type": 0x0800, "ip_proto": 6, "tcp_dst": port}


ALLOW, DENY = apply(output(2)), apply()
PKTS = [{"in_port": 1, **_tcp(p)} for p in (22, 80, 443)]
CHANGES = [
    (
        [
            flow(0, 30, _tcp(80), ALLOW),
            flow(0, 20, _tcp(22), DENY),
            flow(0, 15, _tcp(443), DENY),
            flow(0, 10, {"eth_type": 0x0800}, ALLOW),
        ],
        [
            flow(0, 30, _tcp(80), DENY),
            flow(0, 25, _tcp(443), ALLOW),
            flow(0, 12, {"eth_type": 0x0800}, DENY),
        ],
    ),
    (
        [flow(0, 30, {"eth_type": 0x0800}, ALLOW), flow(0, 20, _tcp(80), DENY)],
        [flow(0, 10, {"eth_type": 0x0800}, ALLOW)],
    ),
]


def test_every_intermediate_state_of_a_change_is_the_old_or_the_new_policy():
    """Adds, then modifies, then deletes lowest first: no packet ever meets a mix."""
    for old, new in CHANGES:
        plan = diff_flows({f.key: f for f in old}, {f.key: f for f in new})
        steps = [m for m in messages(plan) if isinstance(m, parser.OFPFlowMod)]
        assert _gaps(old, new, steps, PKTS) == 0


def test_deleting_highest_first_would_open_a_gap():
    """The check above can fail: the naive delete order lets port 80 be denied mid-change."""
    old, new = CHANGES[1]
    plan = diff_flows({f.key: f for f in old}, {f.key: f for f in new})
    naive = [flow_mod(f) for f in plan.flow_adds] + [
        flow_mod(f, ofp.OFPFC_DELETE_STRICT)
        for f in sorted(plan.flow_deletes, key=lambda f: -f.priority)
    ]
    assert _gaps(old, new, naive, PKTS) > 0


def test_meters_go_in_with_groups_before_flows():
    from controller.flows import Meter

    m = Meter(1, "pktps", 100, 10)
    f = flow(0, 10, {"in_port": 2}, ("meter", 1), apply(output(1)))
    plan = diff_flows({}, {f.key: f})
    diff_numbered("meter", {}, {1: m}, plan=plan)
    msgs = messages(plan)
    assert isinstance(msgs[0], parser.OFPMeterMod) and isinstance(msgs[2], parser.OFPFlowMod)
    sw = FakeSwitch(1, 1, {1: True, 2: True})
    sw.apply(msgs)
    assert sw.meter_configs() == [m]


def test_groups_go_in_before_flows_and_out_after_them():
    g = group(1, "select", [Bucket((output(1),), weight=1)])
    f = flow(0, 10, {"in_port": 2}, apply(("group", 1)))
    plan = diff_flows({}, {f.key: f})
    diff_numbered("group", {}, {1: g}, plan=plan)
    msgs = messages(plan)
    assert isinstance(msgs[0], parser.OFPGroupMod) and isinstance(msgs[2], parser.OFPFlowMod)
    plan = diff_flows({f.key: f}, {})
    diff_numbered("group", {1: g}, {}, plan=plan)
    msgs = messages(plan)
    assert isinstance(msgs[0], parser.OFPFlowMod) and isinstance(msgs[2], parser.OFPGroupMod)


def test_desired_state_marks_only_changed_keys_dirty():
    d = DesiredState()
    a = flow(0, 10, {"in_port": 1}, goto(1))
    b = flow(0, 10, {"in_port": 2}, goto(1))
    d.put("x", {1: [a, b]})
    assert d.take_dirty(1)[0] == {a.key, b.key}
    d.put("x", {1: [a, b]})
    assert d.take_dirty(1)[0] == set()
    d.put("x", {1: [a]})
    assert d.take_dirty(1)[0] == {b.key} and d.flows[1] == {a.key: a}


def test_desired_state_refuses_a_second_owner_for_one_entry():
    d = DesiredState()
    a = flow(0, 10, {"in_port": 1}, goto(1))
    other = flow(0, 10, {"in_port": 1}, apply(output(2)))
    d.put("x", {1: [a]})
    d.put("y", {1: [other]})
    assert d.flows[1][a.key] == a and d.conflicts == 1
    d.drop("x")
    assert a.key not in d.flows[1]


def test_wire_match_serialises_exactly_like_os_ken():
    from controller.flows import WireMatch, norm_match

    cases = [
        {"in_port": 3, "eth_src": "00:aa:bb:cc:dd:ee"},
        {"eth_dst": ("01:00:00:00:00:00", "01:00:00:00:00:00"), "in_port": 1},
        {"eth_type": 0x0800, "ipv4_src": ("10.0.0.0", "255.0.0.0"), "ip_proto": 6, "tcp_dst": 80},
        {"eth_type": 0x86DD, "ipv6_dst": "2001:db8::1", "ip_proto": 17, "udp_src": 53},
        {"eth_type": 0x0806, "arp_tpa": "10.0.0.9", "arp_op": 1},
        {"metadata": (0x10, 0xFF), "vlan_vid": 0x1005},
    ]
    for fields in cases:
        ours, theirs = bytearray(), bytearray()
        n1 = WireMatch(norm_match(fields)).serialize(ours, 0)
        n2 = parser.OFPMatch(**fields).serialize(theirs, 0)
        assert (n1, bytes(ours)) == (n2, bytes(theirs)), fields


def test_wire_flow_mod_serialises_exactly_like_os_ken():
    from controller.flows import OF13, flow_mod, of_instruction

    cases = [
        (
            flow(
                0,
                200,
                {"in_port": 1, "eth_src": "00:00:00:00:00:01"},
                goto(1),
                cookie=2 << 56,
                idle_timeout=300,
                flags=ofp.OFPFF_SEND_FLOW_REM,
            ),
            ofp.OFPFC_ADD,
        ),
        (flow(4, 100, {"eth_dst": "00:00:00:00:00:01"}, apply(output(3))), ofp.OFPFC_MODIFY_STRICT),
        (flow(0, 100, {"in_port": 2}, apply(to_controller(128)), goto(1)), ofp.OFPFC_ADD),
        (flow(4, 100, {"eth_dst": "00:00:00:00:00:01"}, apply(output(3))), ofp.OFPFC_DELETE_STRICT),
    ]
    for f, command in cases:
        ours = flow_mod(f, command)
        deleting = command == ofp.OFPFC_DELETE_STRICT
        theirs = parser.OFPFlowMod(
            OF13,
            cookie=f.cookie,
            table_id=f.table,
            command=command,
            idle_timeout=f.idle_timeout,
            hard_timeout=f.hard_timeout,
            priority=f.priority,
            out_port=ofp.OFPP_ANY if deleting else 0,
            out_group=ofp.OFPG_ANY if deleting else 0,
            flags=f.flags,
            match=parser.OFPMatch(**dict(f.match)),
            instructions=[] if deleting else [of_instruction(i) for i in f.instructions],
        )
        for m in (ours, theirs):
            m.set_xid(42)
            m.serialize()
        assert bytes(ours.buf) == bytes(theirs.buf), f


def test_a_change_to_meters_alone_is_sent():
    """Regression: an empty flow plan passed in must collect the meter and group changes."""
    from controller.flows import Meter

    plan = diff_flows({}, {})
    diff_numbered("meter", {1: Meter(1, "pktps", 10)}, {}, plan=plan)
    diff_numbered("group", {}, {2: group(2, "all", [])}, plan=plan)
    assert plan and len(plan.deletes["meter"]) == 1 and len(plan.adds["group"]) == 1


@pytest.mark.parametrize("value", ["fe80::1%eth0", ("fe80::%1", "ffff::")])
def test_an_ipv6_address_with_a_zone_is_no_match_value(value):
    """Whatever app builds it: os-ken's encoder cannot send it, and a switch has no zones."""
    with pytest.raises(ValueError, match="zone"):
        flow(0, 1, {"eth_type": 0x86DD, "ipv6_src": value})
