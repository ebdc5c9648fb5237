"""VLAN-tagged frames from hosts: dropped where they enter, before any stage; the chains' own tags
still cross switches; and the fake treats tags as the lab does (docs/security.md)."""

import itertools

import pytest
from os_ken.ofproto import ofproto_v1_3 as ofp

from apps.chains.compile import tag
from apps.firewall import Firewall
from apps.microseg import Microseg
from controller.core import CORE_COOKIE
from controller.flows import apply, flow, flow_mod, output, set_field
from controller.pipeline import PIPELINE
from tests.fakenet import fields_of, frame, host_takes
from tests.fakeswitch import FakeSwitch
from tests.unit.test_chains import IP, TWO_HOPS, C, S, make, tcp
from tests.vlanlab import H1, H2, cases, expected, fake_answer, fake_vnf_lab, send
from tests.vlanlab import IP as LAB_IP

CLASSIFY, FIREWALL, MICROSEG = (PIPELINE.table(n) for n in ("classify", "firewall", "microseg"))
FORWARDING = PIPELINE.table("forwarding")
ALL_CASES = cases()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return fake_vnf_lab(tmp_path_factory.mktemp("vlan"))


@pytest.mark.parametrize("case", ALL_CASES, ids=str)
def test_each_frame_gets_the_answer_the_real_lab_gives(lab, case):
    """tests/integration/test_vnf_mininet.py asks Open vSwitch the same, case by case."""
    assert fake_answer(lab, case) == expected(case)


@pytest.mark.parametrize("case", [c for c in ALL_CASES if c.tags], ids=str)
def test_a_tagged_frame_from_a_host_is_dropped_by_the_core_before_any_stage(lab, case):
    got = send(lab, case)
    assert got.walks == [(1, 1, [CLASSIFY])]  # one table, on the switch it entered
    tagged = [f for f in lab.switches[1].flows() if "vlan_vid" in f.match_dict()]
    assert [(f.table, f.cookie, f.instructions) for f in tagged if f.table == CLASSIFY] == [
        (CLASSIFY, CORE_COOKIE, ())  # the core's drop, the only classify entry for tags
    ]


@pytest.mark.parametrize("vid", [0, *range(1, 5), 5, 4095])
@pytest.mark.parametrize("port", [3, 4, 5, 6])
def test_a_tagged_frame_from_a_replica_port_is_dropped_too(lab, port, vid):
    pkt = {**fields_of(frame("00:00:00:00:00:02", H1, tags=(vid,))), "in_port": port}
    result = lab.switches[1].lookup(pkt)
    assert result.outputs == [] and [f.table for f in result.matched] == [CLASSIFY]


def test_the_chains_tags_still_cross_switches_and_skip_no_stage_there(tmp_path):
    net, _, _ = make(tmp_path, TWO_HOPS)
    for port in (3, 4):  # fw replica 1 is on switch 2, ids replica 0 on switch 1
        net.set_link(1, port, False)
    there = tcp(net, C, S)
    assert there.hosts == [S] and [d for d, _ in there.bumps] == [2, 1]
    tagged = [w for w in there.walks if w[:2] == (2, 1)]  # on switch 2, from the link
    assert tagged and all(MICROSEG in tables for _, _, tables in tagged)


@pytest.mark.parametrize("hop", [0, 1])
@pytest.mark.parametrize("side", ["a", "b"])
def test_no_vid_of_a_chain_enters_its_hops_from_a_host(tmp_path, hop, side):
    """Entering the second hop directly would skip the first (the firewall)."""
    net, _, _ = make(tmp_path, TWO_HOPS)
    for replica in (0, 1):
        vid = tag(0, hop, replica, side)
        got = net.send(
            C,
            S,
            0x0800,
            tags=(vid,),
            ipv4_src=IP[C],
            ipv4_dst=IP[S],
            ip_proto=6,
            tcp_src=40000,
            tcp_dst=22,
        )
        assert got.bumps == [] and got.frames == [] and got.walks == [(1, 2, [CLASSIFY])]


FW_AND_MS = """\
firewall:
  rules:
    - {action: deny, protocol: tcp, port: 22, source: 0.0.0.0/0}
"""


def test_no_host_frame_reaches_forwarding_without_crossing_the_firewall_and_microseg(tmp_path):
    """With sfc, firewall and microseg loaded: any frame a host can send, tagged or not, that
    gets to the forwarding table anywhere crossed both stages where it entered."""
    net = fake_vnf_lab(tmp_path, (Firewall, Microseg), FW_AND_MS)
    tag_stacks = [(), (0,), (1,), (3,), (5,), (4095,), (1, 5), (5, 1)]
    frames = [
        dict(eth_type=0x0800, ip_proto=6, tcp_src=40000, tcp_dst=port) for port in (22, 80, 8080)
    ] + [dict(eth_type=0x0800, ip_proto=17, udp_src=40000, udp_dst=53), dict(eth_type=0x0806)]
    forwarded = 0
    for (src, dst), tags, fields in itertools.product(
        [(H1, H2), (H2, H1)],
        tag_stacks,
        frames,
    ):
        extra = dict(fields)
        eth_type = extra.pop("eth_type")
        if eth_type == 0x0800:
            extra |= {"ipv4_src": LAB_IP[src], "ipv4_dst": LAB_IP[dst]}
        got = net.send(src, dst, eth_type, tags=tags, **extra)
        ingress = got.walks[0][2]
        if any(FORWARDING in tables for _, _, tables in got.walks):
            forwarded += 1
            assert FIREWALL in ingress and MICROSEG in ingress, (tags, fields, got.walks)
        if tags:
            assert got.walks == [(*got.walks[0][:2], [CLASSIFY])] and got.frames == []
    assert forwarded >= 2 * 4  # the untagged frames the firewall allows do get there


# --- the fake itself ------------------------------------------------------------------------


def test_a_fake_host_takes_untagged_and_priority_tagged_frames_only():
    assert host_takes(fields_of(frame("00:00:00:00:00:02", H1)))
    assert host_takes(fields_of(frame("00:00:00:00:00:02", H1, tags=(0,))))
    assert not host_takes(fields_of(frame("00:00:00:00:00:02", H1, tags=(5,))))


def test_frames_parse_as_open_vswitch_reads_them():
    got = fields_of(frame("00:00:00:00:00:02", H1, 0x0800, tags=(5, 7)))
    assert got["vlan_vid"] == ofp.OFPVID_PRESENT | 5 and got["_inner_vlans"] == (0x1007,)
    assert got["eth_type"] == 0x0800  # the type after the tags, as OpenFlow 1.3 matches it


def test_a_pushed_tag_goes_over_the_one_there_and_a_pop_uncovers_it():
    sw = FakeSwitch(1, 2, {1: True, 2: True})
    push = apply(("push_vlan", 0x8100), set_field("vlan_vid", 0x1009), output(2))
    pop = apply(("pop_vlan",), output(2))
    sw.apply([flow_mod(flow(0, 10, {"in_port": 1}, push))])
    ((_, sent),) = sw.lookup({"in_port": 1, "eth_type": 0x0800, "vlan_vid": 0x1005}).outputs
    assert sent["vlan_vid"] == 0x1009 and sent["_inner_vlans"] == (0x1005,)
    sw.apply([flow_mod(flow(0, 10, {"in_port": 1}, pop))])
    ((_, sent),) = sw.lookup({"in_port": 1, **sent}).outputs
    assert sent["vlan_vid"] == 0x1005 and "_inner_vlans" not in sent


def test_a_vlan_vid_match_of_none_selects_untagged_frames_only():
    sw = FakeSwitch(1, 1, {1: True, 2: True})
    sw.apply([flow_mod(flow(0, 10, {"vlan_vid": ofp.OFPVID_NONE}, apply(output(2))))])
    assert sw.lookup({"in_port": 1, "eth_type": 0x0800}).ports() == [2]
    assert sw.lookup({"in_port": 1, "eth_type": 0x0800, "vlan_vid": 0x1000}).ports() == []
