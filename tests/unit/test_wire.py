"""The controller's OpenFlow bytes, read by someone else: Open vSwitch's own decoder and the fake
switch's model (tests/ofwire.py), never controller/flows/.

`ovs-ofctl ofp-parse FILE` decodes a file of binary OpenFlow messages with the same code
ovs-vswitchd uses on a connection (lib/ofp-flow.c, lib/ofp-actions.c, lib/nx-match.c) and prints
them in its own syntax (ovs-fields(7), ovs-actions(7)). No bridge is made: no lab lock needed.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller.flows import (
    Bucket,
    Meter,
    apply,
    conntrack,
    controller_copy,
    flow,
    flow_from_stats,
    flow_mod,
    goto,
    group,
    group_mod,
    meter_mod,
    nat,
    output,
    set_field,
    write_metadata,
)
from controller.matches import CT_NEW, CT_TRK, port_masks
from tests.fakeswitch import FakeSwitch, FakeSwitchError
from tests.ofwire import DATAPATH, to_wire

IP4 = {"eth_type": 0x0800}
NEW = {"ct_state": (CT_TRK | CT_NEW, CT_TRK | CT_NEW)}

# (what we send, what Open vSwitch reads in it)
CASES = {
    "ct commit, zone, table, dnat address and port, ct_mark": (
        flow_mod(
            flow(
                1,
                10,
                {**IP4, **NEW, "ip_proto": 6},
                apply(
                    conntrack(
                        3, 2, commit=True, nested=(nat("10.0.0.9", 8080), set_field("ct_mark", 5))
                    )
                ),
            )
        ),
        "ADD table:1 priority=10,ct_state=+new+trk,tcp out_port:0 actions=ct(commit,table=2,"
        "zone=3,nat(dst=10.0.0.9:8080),exec(set_field:0x5->ct_mark))",
    ),
    "snat to an address": (
        flow_mod(flow(1, 10, IP4, apply(conntrack(4, 2, True, nested=(nat(src="10.0.100.10"),))))),
        "ADD table:1 priority=10,ip out_port:0 actions=ct(commit,table=2,zone=4,"
        "nat(src=10.0.100.10))",
    ),
    "snat to an address and port, commit,force": (
        flow_mod(
            flow(
                1,
                10,
                IP4,
                apply(conntrack(4, 2, True, True, nested=(nat(src="10.0.100.10", port=5000),))),
            )
        ),
        "ADD table:1 priority=10,ip out_port:0 actions=ct(commit,force,table=2,zone=4,"
        "nat(src=10.0.100.10:5000))",
    ),
    "ct without a table, nat of the connection, then goto": (
        flow_mod(flow(0, 10, IP4, apply(conntrack(7, nested=(nat(),))), goto(1))),
        "ADD priority=10,ip out_port:0 actions=ct(zone=7,nat),goto_table:1",
    ),
    "masks, set-field of MAC, IPv4, vlan_vid and an NXM register, write_metadata": (
        flow_mod(
            flow(
                0,
                20,
                {
                    **IP4,
                    "ipv4_src": ("10.1.0.0", "255.255.0.0"),
                    "metadata": (4, 12),
                    "eth_dst": ("01:00:00:00:00:00", "01:00:00:00:00:00"),
                    "vlan_vid": (ofp.OFPVID_PRESENT, ofp.OFPVID_PRESENT),
                    "reg0": (5, 0xFF),
                },
                apply(
                    set_field("eth_dst", "00:00:00:00:00:09"),
                    set_field("ipv4_dst", "10.0.0.9"),
                    set_field("vlan_vid", ofp.OFPVID_PRESENT | 7),
                    set_field("reg0", 3),
                ),
                write_metadata(8, 0xFF),
                goto(2),
                cookie=0xABC,
            )
        ),
        "ADD priority=20,ip,reg0=0x5/0xff,metadata=0x4/0xc,vlan_tci=0x1000/0x1000,"
        "dl_dst=01:00:00:00:00:00/01:00:00:00:00:00,nw_src=10.1.0.0/16 cookie:0xabc out_port:0 "
        "actions=set_field:00:00:00:00:00:09->eth_dst,set_field:10.0.0.9->ip_dst,"
        "set_field:4103->vlan_vid,set_field:0x3->reg0,write_metadata:0x8/0xff,goto_table:2",
    ),
    "a port range as value/mask pairs (controller.matches.port_masks), a masked ct_state": (
        flow_mod(
            flow(
                2,
                30,
                {
                    **IP4,
                    "ip_proto": 6,
                    "tcp_dst": port_masks(1024, 2047)[0],
                    "ct_state": (CT_TRK, CT_TRK | CT_NEW),
                },
                apply(output(1)),
            )
        ),
        "ADD table:2 priority=30,ct_state=-new+trk,tcp,tp_dst=0x400/0xfc00 out_port:0 "
        "actions=output:1",
    ),
    "a metered copy to the controller, then on (the flow log of allowed connections)": (
        flow_mod(flow(2, 30, IP4, apply(controller_copy(0x10000, 128)), goto(3))),
        "ADD table:2 priority=30,ip out_port:0 actions=controller(max_len=128,meter_id=65536),"
        "goto_table:3",
    ),
    "meter in kbps with a burst": (
        meter_mod(Meter(3, "kbps", 1000, 100)),
        "ADD meter=3 kbps burst bands= type=drop rate=1000 burst_size=100",
    ),
    "meter in packets/s": (
        meter_mod(Meter(4, "pktps", 300)),
        "ADD meter=4 pktps bands= type=drop rate=300",
    ),
    "select group with weights and a watched port": (
        group_mod(
            group(
                5,
                "select",
                [Bucket((output(2),), weight=90, watch_port=2), Bucket((output(3),), weight=10)],
            )
        ),
        "ADD group_id=5,type=select,bucket=weight:90,watch_port:2,actions=output:2,"
        "bucket=weight:10,actions=output:3",
    ),
    "all group": (
        group_mod(
            group(
                6,
                "all",
                [
                    Bucket((output(2),)),
                    Bucket((set_field("eth_dst", "00:00:00:00:00:09"), output(3))),
                ],
            )
        ),
        "ADD group_id=6,type=all,bucket=actions=output:2,"
        "bucket=actions=set_field:00:00:00:00:00:09->eth_dst,output:3",
    ),
    "fast-failover group": (
        group_mod(
            group(7, "ff", [Bucket((output(2),), watch_port=2), Bucket((output(3),), watch_port=3)])
        ),
        "ADD group_id=7,type=ff,bucket=watch_port:2,actions=output:2,"
        "bucket=watch_port:3,actions=output:3",
    ),
}


def ovs_reads(tmp_path, msg) -> str:
    """What `ovs-ofctl ofp-parse` prints for one message, on one line, without its header."""
    if shutil.which("ovs-ofctl") is None:
        pytest.skip("ovs-ofctl (Debian openvswitch-common) is not installed")
    path = tmp_path / "msg.bin"
    path.write_bytes(to_wire(msg))
    out = subprocess.run(
        ["ovs-ofctl", "ofp-parse", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return " ".join(out.split("):", 1)[1].split())


@pytest.mark.parametrize("name", CASES)
def test_open_vswitch_reads_our_bytes_as_we_mean_them(tmp_path, name):
    msg, expected = CASES[name]
    assert ovs_reads(tmp_path, msg) == expected


class Bytes:
    """A message that is just its bytes, as a connection would carry them."""

    def __init__(self, data: bytes) -> None:
        self.buf, self.xid = data, 0

    def serialize(self) -> None:
        pass


def raw_flow(match: dict, actions: list) -> parser.OFPFlowMod:
    """A flow-mod built with os-ken alone, past the controller's normalisation."""
    return parser.OFPFlowMod(
        DATAPATH,
        table_id=0,
        priority=1,
        match=parser.OFPMatch(**match),
        instructions=[parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)],
    )


def test_open_vswitch_refuses_what_the_fake_refuses(tmp_path):
    """A vlan_vid set-field without OFPVID_PRESENT, a value with bits outside its mask: Open
    vSwitch's decoder refuses both, and so does the fake switch."""
    out = parser.OFPActionOutput(1)
    no_present = raw_flow(IP4, [parser.OFPActionSetField(vlan_vid=5), out])
    loose = Bytes(
        to_wire(raw_flow({**IP4, "ipv4_src": ("10.0.0.0", "255.255.255.0")}, [out])).replace(
            bytes([10, 0, 0, 0, 255, 255, 255, 0]), bytes([10, 0, 0, 1, 255, 255, 255, 0])
        )
    )  # os-ken's OFPMatch clears bits outside a mask itself: these bytes do not
    for msg, ovs_error in (
        (no_present, "OFPBAC_BAD_SET_ARGUMENT"),
        (loose, "OFPBMC_BAD_WILDCARDS"),
    ):
        assert ovs_error in ovs_reads(tmp_path, msg)
        with pytest.raises(FakeSwitchError):
            FakeSwitch(1, 2, {1: True}).apply([msg])


@pytest.mark.parametrize(
    ("match", "ovs", "canonical"),
    [
        (
            ("ipv4_src", ("10.0.0.1", "255.255.255.0")),
            "nw_src=10.0.0.0/24",
            ("10.0.0.0", "255.255.255.0"),
        ),
        (("ipv4_src", ("10.0.0.1", "0.0.0.0")), "", None),
        (("reg0", (5, 0xFFFFFFFF)), "reg0=0x5", 5),
        (("metadata", (7, 4)), "metadata=0x4/0x4", (4, 4)),
        (
            ("eth_src", ("02:00:00:00:00:01", "ff:ff:ff:ff:ff:ff")),
            "dl_src=02:00:00:00:00:01",
            "02:00:00:00:00:01",
        ),
    ],
)
def test_a_match_is_normalised_as_open_vswitch_keeps_it(tmp_path, match, ovs, canonical):
    """Bits outside a mask cleared (else Open vSwitch refuses the flow), an all-ones mask
    exact, a zero mask no field at all: what we ask for reads back the same from a switch."""
    name, value = match
    f = flow(0, 1, {**IP4, name: value}, apply(output(1)))
    assert dict(f.match).get(name) == canonical
    assert (
        ovs_reads(tmp_path, flow_mod(f))
        == f"ADD priority=1,ip{ovs and ','}{ovs} out_port:0 actions=output:1"
    )
    sw = FakeSwitch(1, 1, {1: True})
    sw.apply([flow_mod(f)])
    assert sw.flows() == [f]


# --- the fake's own model of what it decoded --------------------------------------------------


def test_the_fake_matches_by_the_mask_on_the_wire():
    """Were a mask dropped on the way out, 10.1.2.3 would miss the /16 flow."""
    sw = FakeSwitch(1, 1, {1: True, 2: True})
    sw.apply(
        [flow_mod(flow(0, 5, {**IP4, "ipv4_src": ("10.1.0.0", "255.255.0.0")}, apply(output(2))))]
    )
    pkt = {"in_port": 1, "eth_type": 0x0800, "ipv4_src": "10.1.2.3", "ipv4_dst": "10.0.0.2"}
    assert sw.lookup(pkt).ports() == [2]
    assert sw.lookup({**pkt, "ipv4_src": "10.2.0.1"}).ports() == []


def test_the_fake_reads_a_vlan_set_field_with_its_present_bit():
    sw = FakeSwitch(1, 1, {1: True, 2: True})
    tag = apply(set_field("vlan_vid", ofp.OFPVID_PRESENT | 7), output(2))
    sw.apply([flow_mod(flow(0, 5, {"in_port": 1}, tag))])
    ((_, sent),) = sw.lookup({"in_port": 1, "eth_type": 0x0800, "vlan_vid": 0x1005}).outputs
    assert sent["vlan_vid"] == ofp.OFPVID_PRESENT | 7


def raw_nat_flow(**ranges) -> parser.OFPFlowMod:
    """A flow-mod built with os-ken alone: commit every IPv4 packet in zone 1 with a source NAT
    over `ranges` (NXActionNAT's fields), then out of port 2."""
    ct = parser.NXActionCT(1, None, 1, 1, 0, [parser.NXActionNAT(1, **ranges)])  # commit, zone 1
    return raw_flow(IP4, [ct])


def test_the_fake_takes_nat_address_and_port_ranges_from_the_wire():
    sw = FakeSwitch(1, 2, {1: True, 2: True})
    sw.apply(
        [
            raw_nat_flow(
                range_ipv4_min="10.0.100.10",
                range_ipv4_max="10.0.100.11",
                range_proto_min=5000,
                range_proto_max=5001,
            ),
            flow_mod(flow(1, 0, {}, apply(output(2)))),
        ]
    )
    base = {"in_port": 1, "eth_type": 0x0800, "ip_proto": 6, "ipv4_dst": "10.0.0.2"}
    got = []
    for client in range(1, 6):
        pkt = {**base, "ipv4_src": f"10.0.0.{client}", "tcp_src": 40000, "tcp_dst": 80}
        ((_, out),) = sw.lookup(pkt).outputs
        got.append((out["ipv4_src"], out["tcp_src"]))
    assert got == [
        ("10.0.100.10", 5000),
        ("10.0.100.10", 5001),
        ("10.0.100.11", 5000),
        ("10.0.100.11", 5001),
        ("10.0.0.5", 40000),  # the ranges are used up: not translated, not committed
    ]


def test_check_overlap_is_an_error_reply_as_in_openflow():
    """OFPFF_CHECK_OVERLAP: an ADD that a packet could match together with a flow of the same
    priority in the same table fails with OFPFMFC_OVERLAP, identical matches included; the
    table stays as it was. Without the flag, an identical match replaces the flow."""
    sw = FakeSwitch(1, 1, {1: True, 2: True, 3: True})
    sw.apply(
        [flow_mod(flow(0, 5, {**IP4, "ipv4_dst": ("10.0.0.0", "255.0.0.0")}, apply(output(2))))]
    )
    checked = dict(flags=ofp.OFPFF_CHECK_OVERLAP)
    overlapping = flow(0, 5, {**IP4, "ipv4_src": "10.9.9.9"}, apply(output(2)), **checked)
    identical = flow(
        0, 5, {**IP4, "ipv4_dst": ("10.0.0.0", "255.0.0.0")}, apply(output(3)), **checked
    )
    for f in (overlapping, identical):
        msg = flow_mod(f)
        msg.xid = 77
        sw.apply([msg])
        assert sw.errors.pop() == (77, ofp.OFPET_FLOW_MOD_FAILED, ofp.OFPFMFC_OVERLAP)
        assert sw.flow_count() == 1 and sw.flows()[0].instructions == (apply(output(2)),)
    apart = [
        flow(0, 5, {**IP4, "ipv4_dst": "11.0.0.1"}, apply(output(3)), **checked),  # disjoint
        flow(0, 6, IP4, apply(output(3)), **checked),  # another priority
    ]
    sw.apply([flow_mod(f) for f in apart])
    assert not sw.errors and sw.flow_count() == 3


def test_same_priority_overlap_without_the_flag_is_a_controller_bug_unless_the_same():
    sw = FakeSwitch(1, 1, {1: True, 2: True, 3: True})
    sw.apply(
        [flow_mod(flow(0, 5, {**IP4, "ipv4_dst": ("10.0.0.0", "255.0.0.0")}, apply(output(2))))]
    )
    sw.apply([flow_mod(flow(0, 5, {**IP4, "ipv4_src": "10.9.9.9"}, apply(output(2))))])
    with pytest.raises(FakeSwitchError, match="overlaps"):
        sw.apply([flow_mod(flow(0, 5, {**IP4, "ip_proto": 6}, apply(output(3))))])
    sw.apply([flow_mod(flow(0, 5, {"eth_type": 0x86DD}, apply(output(3))))])  # disjoint
    assert sw.flow_count() == 3


@pytest.mark.parametrize(
    "name", [n for n in CASES if n.startswith(("ct", "snat", "masks", "a port"))]
)
def test_flows_read_back_from_the_fakes_bytes_equal_what_we_asked_for(name):
    """The controller's normalisation agrees with the switch's: masks, prefixes, ct_state,
    NAT, vlan set-field, metadata survive a trip through the stats reply's bytes unchanged."""
    msg = CASES[name][0]
    sw = FakeSwitch(1, 3, {p: True for p in range(1, 4)})
    sw.apply([msg])
    assert sw.flows() == [flow_from_stats(msg)]


@pytest.mark.parametrize(
    ("ranges", "port"),
    [
        ({"range_ipv4_min": "10.0.100.10", "range_proto_min": 5000, "range_proto_max": 5001}, 5000),
        ({"range_ipv4_min": "10.0.100.10", "range_ipv4_max": "10.0.100.11"}, None),
    ],
)
def test_a_nat_range_on_a_switch_never_reads_back_as_our_single_translation(ranges, port):
    """A switch holding nat(src=10.0.100.10:5000-5001) (or 10.0.100.10-10.0.100.11) does not
    hold what nat(src="10.0.100.10", port=5000) (or no port) asks for: the reconciler must see
    a difference and put ours back."""
    sw = FakeSwitch(1, 2, {1: True, 2: True})
    sw.apply([raw_nat_flow(**ranges)])
    ours = flow(
        0, 1, IP4, apply(conntrack(1, 1, True, nested=(nat(src="10.0.100.10", port=port),)))
    )
    ((read,),) = [sw.flows()]
    assert read.key == ours.key and read != ours


def test_a_message_that_cannot_be_encoded_is_left_out_alone():
    """One value the encoder cannot send (an address netaddr refuses, say) used to abort the
    whole batch of an event: every switch after it got nothing."""
    from controller.flows import Flow, flow, flow_mod
    from controller.shim import wire_bytes

    good = flow_mod(flow(0, 10, {"in_port": 1}, cookie=0x1))
    bad = flow_mod(Flow(0, 10, (), (("bogus",),), 0x1))  # past the model's own checks
    reported = []
    out = wire_bytes(1, [good, bad, good], reported.append)
    assert out == good.buf * 2 and len(reported) == 1
    assert "switch 0000000000000001: not sent, cannot be encoded" in str(reported[0])
