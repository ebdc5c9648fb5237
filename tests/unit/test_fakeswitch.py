"""The fake switch must behave like OpenFlow 1.3 and refuse what a careful switch refuses."""

from collections import Counter

import pytest
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller.flows import (
    OF13,
    Bucket,
    Meter,
    WireFlowMod,
    apply,
    conntrack,
    controller_copy,
    flow,
    flow_mod,
    goto,
    group,
    group_action,
    group_mod,
    meter,
    meter_mod,
    nat,
    output,
    packet_out,
    set_field,
)
from controller.matches import CT_DNAT, CT_EST, CT_NEW, CT_RPL, CT_SNAT, CT_TRK
from tests.fakeswitch import FakeSwitch, FakeSwitchError

PKT = {
    "in_port": 1,
    "eth_src": "00:00:00:00:00:01",
    "eth_dst": "00:00:00:00:00:02",
    "eth_type": 0x0800,
    "ipv4_src": "10.0.0.1",
    "ipv4_dst": "10.0.0.2",
}


def switch(n_ports=4, n_tables=3):
    return FakeSwitch(1, n_tables, {p: True for p in range(1, n_ports + 1)})


def add(sw, *flows):
    sw.apply([flow_mod(f) for f in flows])


def test_multi_table_lookup_follows_priority_and_goto():
    sw = switch()
    add(
        sw,
        flow(0, 0, {}, goto(1)),
        flow(0, 10, {"eth_type": 0x0800, "ipv4_src": ("10.0.0.0", "255.255.255.0")}, goto(2)),
        flow(1, 0, {}, apply(output(4))),
        flow(
            2,
            5,
            {"eth_dst": "00:00:00:00:00:02"},
            apply(set_field("eth_dst", "00:00:00:00:00:09"), output(3)),
        ),
    )
    result = sw.lookup(PKT)
    assert result.ports() == [3]
    assert result.outputs[0][1]["eth_dst"] == "00:00:00:00:00:09"
    assert sw.lookup({**PKT, "ipv4_src": "10.0.1.1"}).ports() == [4]


def test_no_table_miss_entry_drops():
    sw = switch()
    add(sw, flow(0, 1, {"in_port": 2}, apply(output(3))))
    assert sw.lookup(PKT).outputs == []


def test_add_same_match_and_priority_replaces():
    sw = switch()
    add(
        sw,
        flow(0, 5, {"in_port": 1}, apply(output(2))),
        flow(0, 5, {"in_port": 1}, apply(output(3))),
    )
    assert sw.flow_count() == 1 and sw.lookup(PKT).ports() == [3]


def test_overlapping_equal_priority_flows_are_refused():
    sw = switch()
    add(sw, flow(0, 5, {"in_port": 1}, apply(output(2))))
    with pytest.raises(FakeSwitchError, match="overlaps"):
        add(sw, flow(0, 5, {"eth_dst": "00:00:00:00:00:02"}, apply(output(3))))
    add(sw, flow(0, 5, {"in_port": 2, "eth_dst": "00:00:00:00:00:02"}, apply(output(3))))


def test_goto_backwards_or_same_table_is_refused():
    sw = switch()
    with pytest.raises(FakeSwitchError, match="goto"):
        add(sw, flow(1, 1, {}, goto(1)))
    with pytest.raises(FakeSwitchError, match="goto"):
        add(sw, flow(2, 1, {}, goto(0)))


def test_missing_group_and_prerequisites_are_refused():
    sw = switch()
    with pytest.raises(FakeSwitchError, match="group 7"):
        add(sw, flow(0, 1, {}, apply(group_action(7))))
    with pytest.raises(FakeSwitchError, match="needs eth_type"):
        add(sw, flow(0, 1, {"ipv4_src": "10.0.0.1"}, apply(output(1))))


def test_modify_strict_of_missing_flow_is_refused_and_non_strict_modifies_all_covered():
    sw = switch()
    with pytest.raises(FakeSwitchError, match="not there"):
        sw.apply([flow_mod(flow(0, 5, {"in_port": 1}, apply(output(2))), ofp.OFPFC_MODIFY_STRICT)])
    add(
        sw,
        flow(0, 5, {"in_port": 1, "eth_src": "00:00:00:00:00:01"}, apply(output(2))),
        flow(0, 6, {"in_port": 1, "eth_src": "00:00:00:00:00:03"}, apply(output(2))),
        flow(0, 5, {"in_port": 2}, apply(output(2))),
    )
    sw.apply([flow_mod(flow(0, 0, {"in_port": 1}, apply(output(4))), ofp.OFPFC_MODIFY)])
    outs = sorted(f.instructions[0][1][0][1] for f in sw.flows())
    assert outs == [2, 4, 4]


def test_delete_strict_and_non_strict():
    sw = switch()
    a = flow(0, 5, {"in_port": 1, "eth_src": "00:00:00:00:00:01"}, apply(output(2)))
    b = flow(0, 6, {"in_port": 1}, apply(output(3)))
    c = flow(0, 5, {"in_port": 2}, apply(output(3)))
    add(sw, a, b, c)
    sw.apply([flow_mod(flow(0, 5, {"in_port": 1}), ofp.OFPFC_DELETE_STRICT)])  # no exact match
    assert sw.flow_count() == 3
    sw.apply([flow_mod(a, ofp.OFPFC_DELETE_STRICT)])
    assert {f.priority for f in sw.flows()} == {5, 6} and sw.flow_count() == 2
    sw.apply([flow_mod(flow(0, 0, {"in_port": 1}), ofp.OFPFC_DELETE)])
    assert sw.flows() == [c]


def test_modify_changes_instructions_and_keeps_cookie_and_counters():
    """OpenFlow 1.3 (and Open vSwitch, ofp-flow.c): a MODIFY's cookie selects nothing and is not
    written; only the instructions change."""
    sw = switch()
    add(sw, flow(0, 5, {"in_port": 1}, apply(output(2)), cookie=7))
    sw.lookup(PKT)
    sw.apply(
        [flow_mod(flow(0, 5, {"in_port": 1}, apply(output(3)), cookie=9), ofp.OFPFC_MODIFY_STRICT)]
    )
    ((stats,),) = [sw.flow_stats()]
    assert (stats.cookie, stats.packet_count) == (7, 1) and sw.lookup(PKT).ports() == [3]


class _Lying(WireFlowMod):
    """A flow-mod whose Python objects say one thing and whose bytes another."""

    @property
    def instructions(self) -> list:
        return [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [parser.OFPActionOutput(4)])]


def test_the_switch_goes_by_the_bytes_not_the_objects():
    sw = switch()
    sw.apply([_Lying(flow(0, 5, {"in_port": 1}, apply(output(2))), ofp.OFPFC_ADD)])
    assert sw.lookup(PKT).ports() == [2]
    assert sw.flows() == [flow(0, 5, {"in_port": 1}, apply(output(2)))]


def test_a_refused_flow_mod_in_a_bundle_leaves_every_table_as_it_was():
    sw = switch()
    add(sw, flow(0, 5, {"in_port": 1}, apply(output(2))))
    bundle = [
        flow_mod(flow(0, 5, {"in_port": 2}, apply(output(3)))),
        flow_mod(flow(0, 5, {"eth_type": 0x0800}, apply(output(3)), flags=ofp.OFPFF_CHECK_OVERLAP)),
    ]
    msgs = [parser.ONFBundleCtrlMsg(OF13, 1, ofp.ONF_BCT_OPEN_REQUEST, 0, [])]
    msgs += [parser.ONFBundleAddMsg(OF13, 1, 0, m, []) for m in bundle]
    msgs += [parser.ONFBundleCtrlMsg(OF13, 1, ofp.ONF_BCT_COMMIT_REQUEST, 0, [])]
    sw.apply(msgs)
    assert [e[1:] for e in sw.errors] == [(ofp.OFPET_FLOW_MOD_FAILED, ofp.OFPFMFC_OVERLAP)]
    assert sw.flows() == [flow(0, 5, {"in_port": 1}, apply(output(2)))] and sw.commits == 0


def test_a_packet_out_is_done_with_the_actions_decoded_from_its_bytes():
    sw = switch()
    (decoded,) = sw.apply(
        [packet_out(b"\x00" * 60, [set_field("eth_dst", "00:00:00:00:00:09"), output(3)], 1)]
    )
    assert sw.packet_outs == [decoded] and decoded.in_port == 1
    ((port, pkt),) = sw.execute(dict(PKT), decoded.actions).outputs
    assert (port, pkt["eth_dst"]) == (3, "00:00:00:00:00:09")


def test_deleting_a_meter_removes_flows_that_use_it():
    sw = switch()
    sw.apply([meter_mod(Meter(3, "pktps", 100))])
    add(
        sw, flow(0, 1, {}, meter(3), apply(output(2))), flow(0, 2, {"in_port": 1}, apply(output(2)))
    )
    sw.apply([meter_mod(Meter(3, "pktps", 100), ofp.OFPMC_DELETE)])
    assert [f.priority for f in sw.flows()] == [2] and not sw.meters


def test_a_metered_copy_to_the_controller_lets_the_packet_go_on():
    """Open vSwitch's controller(meter_id=M): a copy to the controller, and the packet itself
    goes on with the next actions and tables (an OFPIT_METER would drop it over the rate)."""
    sw = switch()
    sw.apply([meter_mod(Meter(9, "pktps", 10))])
    add(
        sw,
        flow(0, 1, {}, apply(controller_copy(9, 128)), goto(1)),
        flow(1, 0, {}, apply(output(2))),
    )
    result = sw.lookup(dict(PKT))
    assert result.ports() == [2]
    assert [(t, pkt["ipv4_src"]) for t, _, pkt in result.to_controller] == [(0, "10.0.0.1")]


def test_a_copy_through_a_meter_that_does_not_exist_is_refused():
    with pytest.raises(FakeSwitchError, match="meter 9 does not exist"):
        add(switch(), flow(0, 1, {}, apply(controller_copy(9), output(2))))


def test_all_group_copies_to_every_bucket():
    sw = switch()
    sw.apply([group_mod(group(1, "all", [Bucket((output(2),)), Bucket((output(3),))]))])
    add(sw, flow(0, 1, {}, apply(group_action(1))))
    assert sorted(sw.lookup(PKT).ports()) == [2, 3]


def test_adding_a_group_twice_is_refused():
    sw = switch()
    g = group(1, "all", [Bucket((output(2),))])
    sw.apply([group_mod(g)])
    with pytest.raises(FakeSwitchError, match="exists"):
        sw.apply([group_mod(g)])


def test_select_group_follows_bucket_weights():
    sw = switch()
    sw.apply(
        [
            group_mod(
                group(
                    1,
                    "select",
                    [
                        Bucket((output(2),), weight=90),
                        Bucket((output(3),), weight=10),
                        Bucket((output(4),), weight=0),
                    ],
                )
            )
        ]
    )
    add(sw, flow(0, 1, {}, apply(group_action(1))))
    counts = Counter()
    for i in range(4000):
        pkt = {**PKT, "ip_proto": 6, "tcp_src": 1024 + i}
        counts.update(sw.lookup(pkt).ports())
    assert counts[4] == 0
    assert abs(counts[2] / 4000 - 0.90) < 0.02


def test_select_group_skips_buckets_whose_watched_port_is_down():
    sw = switch()
    buckets = [Bucket((output(p),), weight=1, watch_port=p) for p in (2, 3)]
    sw.apply([group_mod(group(1, "select", buckets))])
    add(sw, flow(0, 1, {}, apply(group_action(1))))
    sw.ports[2] = False
    for i in range(50):
        assert sw.lookup({**PKT, "ip_proto": 6, "tcp_src": 1024 + i}).ports() == [3]


def test_fast_failover_follows_port_liveness():
    sw = switch()
    sw.apply(
        [
            group_mod(
                group(
                    1,
                    "ff",
                    [Bucket((output(2),), watch_port=2), Bucket((output(3),), watch_port=3)],
                )
            )
        ]
    )
    add(sw, flow(0, 1, {}, apply(group_action(1))))
    assert sw.lookup(PKT).ports() == [2]
    sw.ports[2] = False
    assert sw.lookup(PKT).ports() == [3]
    sw.ports[3] = False
    assert sw.lookup(PKT).ports() == []


def test_fast_failover_bucket_must_watch_something():
    sw = switch()
    with pytest.raises(FakeSwitchError, match="watches"):
        sw.apply([group_mod(group(1, "ff", [Bucket((output(2),))]))])


def test_deleting_a_group_removes_flows_that_use_it():
    sw = switch()
    sw.apply([group_mod(group(1, "all", [Bucket((output(2),))]))])
    add(sw, flow(0, 1, {}, apply(group_action(1))))
    sw.apply([group_mod(group(1, "all", []), ofp.OFPGC_DELETE)])
    assert sw.flow_count() == 0 and not sw.groups


# --- conntrack with NAT, as Open vSwitch's userspace conntrack does it -------------------------

TCP = {**PKT, "ip_proto": 6, "tcp_src": 40000, "tcp_dst": 80}
IP4 = {"eth_type": 0x0800}  # ct(nat) needs an IP match (Open vSwitch: OFPBAC_MATCH_INCONSISTENT)


def ct_switch(*flows):
    """Table 0: all IPv4 through ct in zone 1 with `nat`, recirculating to table 1."""
    sw = switch(n_tables=3)
    add(sw, flow(0, 0, IP4, apply(conntrack(1, 1, nested=(nat(),)))), *flows)
    return sw


def sent(sw, pkt):
    result = sw.lookup(pkt)
    assert len(result.outputs) == 1, result
    return result.outputs[0][1]


def test_snat_keeps_the_source_port_and_replies_are_translated_back():
    commit = conntrack(1, 2, commit=True, nested=(nat(src="10.0.100.10"),))
    sw = ct_switch(
        flow(1, 10, {**IP4, "ct_state": (CT_TRK | CT_NEW, CT_TRK | CT_NEW)}, apply(commit)),
        flow(1, 5, {"ct_state": (CT_TRK | CT_EST, CT_TRK | CT_EST)}, goto(2)),
        flow(2, 0, {}, apply(output(2))),
    )
    out = sent(sw, TCP)
    assert (out["ipv4_src"], out["tcp_src"], out["ipv4_dst"]) == ("10.0.100.10", 40000, "10.0.0.2")
    assert out["ct_state"] & CT_SNAT
    reply = {**TCP, "ipv4_src": "10.0.0.2", "tcp_src": 80, "ipv4_dst": "10.0.100.10"}
    back = sent(sw, {**reply, "tcp_dst": 40000})
    assert (back["ipv4_dst"], back["tcp_dst"], back["ipv4_src"]) == ("10.0.0.1", 40000, "10.0.0.2")
    assert back["ct_state"] & (CT_RPL | CT_DNAT) == CT_RPL | CT_DNAT  # un-SNAT: the destination
    assert sent(sw, TCP)["ipv4_src"] == "10.0.100.10"  # established: the same translation


def test_snat_moves_the_source_port_when_its_reply_key_is_taken():
    commit = conntrack(1, 2, commit=True, nested=(nat(src="10.0.100.10"),))
    sw = ct_switch(
        flow(1, 0, IP4, apply(commit)),
        flow(2, 0, {}, apply(output(2))),
    )
    first = sent(sw, TCP)
    other = sent(sw, {**TCP, "ipv4_src": "10.0.0.3"})  # another client, the same source port
    assert first["tcp_src"] == 40000 and other["tcp_src"] == 40001
    low = sent(sw, {**TCP, "tcp_src": 511})
    again = sent(sw, {**TCP, "ipv4_src": "10.0.0.3", "tcp_src": 511})
    assert (low["tcp_src"], again["tcp_src"]) == (511, 1)  # wraps within 1-511


def test_a_snat_with_no_free_reply_key_leaves_the_packet_new_and_untranslated():
    """Open vSwitch's nat_res_exhaustion: nothing committed, the packet goes on as it was."""
    commit = conntrack(1, 2, commit=True, nested=(nat(src="10.0.100.10", port=5000),))
    sw = ct_switch(flow(1, 0, IP4, apply(commit)), flow(2, 0, {}, apply(output(2))))
    assert sent(sw, TCP)["tcp_src"] == 5000
    other = sent(sw, {**TCP, "ipv4_src": "10.0.0.3"})
    assert (other["ipv4_src"], other["tcp_src"]) == ("10.0.0.3", 40000)
    assert other["ct_state"] == CT_TRK | CT_NEW and len(sw.connections) == 1


def test_snat_of_a_packet_without_ports_translates_the_address():
    commit = conntrack(1, 2, commit=True, nested=(nat(src="10.0.100.10"),))
    sw = ct_switch(flow(1, 0, IP4, apply(commit)), flow(2, 0, {}, apply(output(2))))
    out = sent(sw, {**PKT, "ip_proto": 1})
    assert out["ipv4_src"] == "10.0.100.10" and out["ct_state"] & CT_SNAT


def test_one_nat_takes_src_or_dst_not_both():
    with pytest.raises(ValueError):
        nat("10.0.0.9", 80, src="10.0.100.10")
    both = conntrack(1, 2, commit=True, nested=(("nat", 3, "10.0.0.9", None),))
    with pytest.raises(FakeSwitchError, match="src or dst"):
        ct_switch(flow(1, 0, IP4, apply(both)))


def test_a_packet_translated_in_a_zone_is_found_again_there_by_its_reversed_key():
    dnat = conntrack(1, 2, commit=True, nested=(nat("10.0.0.9", 8080),))
    again = conntrack(1, 2)  # no nat: the translated packet meets its own connection
    sw = ct_switch(
        flow(1, 0, IP4, apply(dnat)),
        flow(2, 10, {"ct_state": (CT_TRK | CT_NEW, CT_TRK | CT_NEW)}, apply(again)),
        flow(2, 5, {"ct_state": (CT_TRK | CT_EST, CT_TRK | CT_EST | CT_RPL)}, apply(output(2))),
    )
    out = sent(sw, TCP)
    assert (out["ipv4_dst"], out["tcp_dst"]) == ("10.0.0.9", 8080)
    assert len(sw.connections) == 1  # the second ct() created nothing


def test_two_translations_take_two_zones_and_replies_undo_them_in_reverse():
    """Destination NAT in zone 1, then source NAT in zone 2; replies: zone 2, then zone 1."""
    dnat = conntrack(1, 1, commit=True, nested=(nat("10.0.0.1", 80), set_field("ct_mark", 1)))
    snat = conntrack(2, 2, commit=True, nested=(nat(src="10.0.100.10"), set_field("ct_mark", 2)))
    sw = switch(n_tables=3)
    to_vip = {"eth_type": 0x0800, "ipv4_dst": "10.0.100.10"}
    add(
        sw,
        flow(
            0, 10, {**to_vip, "ip_proto": 6, "tcp_dst": 80}, apply(conntrack(1, 1, nested=(nat(),)))
        ),
        flow(0, 5, to_vip, apply(conntrack(2, 1, nested=(nat(),)))),
        flow(
            1,
            10,
            {**IP4, "ct_state": (CT_TRK | CT_NEW, CT_TRK | CT_NEW), "ct_mark": 0},
            apply(dnat),
        ),
        flow(1, 5, {**IP4, "ct_state": (CT_TRK, CT_TRK | CT_RPL), "ct_mark": 1}, apply(snat)),
        flow(
            1,
            5,
            {**IP4, "ct_state": (CT_TRK | CT_RPL, CT_TRK | CT_RPL), "ct_mark": 2},
            apply(conntrack(1, 2, nested=(nat(),))),
        ),
        flow(2, 0, {}, apply(output(ofp.OFPP_IN_PORT))),
    )
    syn = {**TCP, "ipv4_src": "10.0.0.1", "ipv4_dst": "10.0.100.10"}
    out = sent(sw, syn)
    assert out["ipv4_src"] == "10.0.100.10" and out["ipv4_dst"] == "10.0.0.1"
    assert (out["tcp_src"], out["tcp_dst"]) == (40000, 80)
    back = sent(
        sw,
        {
            **out,
            "ipv4_src": "10.0.0.1",
            "ipv4_dst": "10.0.100.10",
            "tcp_src": 80,
            "tcp_dst": 40000,
            "ct_state": 0,
            "ct_mark": 0,
            "ct_zone": 0,
        },
    )
    assert (back["ipv4_src"], back["tcp_src"]) == ("10.0.100.10", 80)
    assert (back["ipv4_dst"], back["tcp_dst"]) == ("10.0.0.1", 40000)
    assert sorted(zone for zone, _ in sw.connections) == [1, 2]


def test_the_contract_hook_sees_every_flow_the_switch_models():
    """`contract` is where a pipeline contract plugs in: called with each added or modified
    flow as the controller reads it back; what it raises refuses the flow-mod."""
    sw, seen = switch(), []

    def contract(f):
        seen.append(f)
        if f.table == 2:
            raise FakeSwitchError(f"{f}: table 2 takes no flows")

    sw.contract = contract
    ours = flow(0, 5, {"in_port": 1}, apply(output(2)))
    add(sw, ours)
    sw.apply([flow_mod(ours, ofp.OFPFC_MODIFY_STRICT)])
    with pytest.raises(FakeSwitchError, match="table 2"):
        add(sw, flow(2, 5, {}, apply(output(2))))
    assert seen[:2] == [ours, ours] and sw.flow_count() == 1
