"""The peer benchmark's message kinds (scripts/ofkinds.py) and its wire tap (scripts/benchlib.py),
on real OpenFlow 1.3 (and 1.4 bundle) messages encoded by os-ken."""

import os
import socket
import sys
import time

import pytest
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser
from os_ken.ofproto import ofproto_v1_4 as ofp14
from os_ken.ofproto import ofproto_v1_4_parser as parser14

from controller.flows.encode import OF13
from tests.ofwire import to_wire
from topologies import wait
from topologies.harness import free_port

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))

import benchlib  # noqa: E402
import ofkinds  # noqa: E402

OF14 = type(OF13)(ofproto=ofp14, ofproto_parser=parser14, id=None)


def flow_mod(command: int, dp=OF13, p=parser):
    match = p.OFPMatch(eth_type=0x800, ip_proto=6, tcp_dst=80)
    return p.OFPFlowMod(dp, table_id=3, command=command, priority=10, match=match)


def echo():
    return parser.OFPEchoRequest(OF13, data=b"")


def port_stats():
    return parser.OFPPortStatsRequest(OF13, 0, ofp.OFPP_ANY)


def kinds(*msgs):
    found, rest = ofkinds.read_messages(b"".join(to_wire(m) for m in msgs))
    assert rest == b""
    return [(m.kind, m.flow_mod) for m in found]


@pytest.mark.parametrize(
    ("msg", "want"),
    [
        (flow_mod(ofp.OFPFC_ADD), ("change", "add")),
        (flow_mod(ofp.OFPFC_MODIFY_STRICT), ("change", "modify_strict")),
        (flow_mod(ofp.OFPFC_DELETE), ("change", "delete")),
        (parser.OFPGroupMod(OF13, ofp.OFPGC_ADD, ofp.OFPGT_ALL, 1, []), ("change", None)),
        (parser.OFPMeterMod(OF13, ofp.OFPMC_ADD, ofp.OFPMF_KBPS, 1, []), ("change", None)),
        (parser.OFPSetConfig(OF13, 0, 128), ("change", None)),
        (parser.OFPBarrierRequest(OF13), ("barrier", None)),
        (
            parser.OFPPacketOut(OF13, 0xFFFFFFFF, ofp.OFPP_CONTROLLER, [], b"x" * 60),
            ("packet_out", None),
        ),
        (echo(), ("other", None)),
        (parser.OFPEchoReply(OF13, data=b""), ("other", None)),
        (port_stats(), ("other", None)),
        (parser.OFPFlowStatsRequest(OF13, table_id=ofp.OFPTT_ALL), ("other", None)),
        (parser.OFPFeaturesRequest(OF13), ("other", None)),
        (parser.OFPRoleRequest(OF13, ofp.OFPCR_ROLE_EQUAL, 0), ("other", None)),
        (parser.OFPSetAsync(OF13, [0, 0], [0, 0], [0, 0]), ("other", None)),
        (parser.OFPHello(OF13), ("other", None)),
    ],
)
def test_each_message_has_its_kind(msg, want):
    assert kinds(msg) == [want]


def test_onf_bundles_of_openflow_13_are_changes_and_their_flow_mods_count():
    flags = ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED
    msgs = [
        parser.ONFBundleCtrlMsg(OF13, 7, ofp.ONF_BCT_OPEN_REQUEST, flags, []),
        parser.ONFBundleAddMsg(OF13, 7, flags, flow_mod(ofp.OFPFC_ADD), []),
        parser.ONFBundleAddMsg(OF13, 7, flags, flow_mod(ofp.OFPFC_DELETE_STRICT), []),
        parser.ONFBundleCtrlMsg(OF13, 7, ofp.ONF_BCT_COMMIT_REQUEST, flags, []),
        parser.OFPBarrierRequest(OF13),
    ]
    assert kinds(*msgs) == [
        ("change", None),
        ("change", "add"),
        ("change", "delete_strict"),
        ("change", None),
        ("barrier", None),
    ]


def test_openflow_14_bundles_are_changes_and_their_flow_mods_count():
    add = parser14.OFPBundleAddMsg(
        OF14, 3, ofp14.OFPBF_ATOMIC, flow_mod(ofp14.OFPFC_MODIFY, OF14, parser14), []
    )
    ctrl = parser14.OFPBundleCtrlMsg(OF14, 3, ofp14.OFPBCT_COMMIT_REQUEST, 0, [])
    assert kinds(add, ctrl) == [("change", "modify"), ("change", None)]


def test_another_experimenter_is_not_a_change():
    msg = parser.OFPExperimenter(OF13, 0x00002320, 29, b"\x00" * 8)  # Nicira
    assert kinds(msg) == [("other", None)]


def test_a_stream_split_anywhere_is_read_whole_messages_first_and_the_rest_kept():
    stream = b"".join(to_wire(m) for m in (echo(), flow_mod(ofp.OFPFC_ADD), port_stats()))
    for cut in range(len(stream) + 1):
        first, rest = ofkinds.read_messages(stream[:cut])
        second, left = ofkinds.read_messages(rest + stream[cut:])
        assert [m.kind for m in first + second] == ["other", "change", "other"]
        assert left == b""


def test_a_length_under_the_header_is_an_error_not_a_silent_stop():
    bad = bytes([4, 2, 0, 4, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="at byte 8 gives length 4"):
        ofkinds.read_messages(to_wire(echo()) + bad)


def test_the_tap_counts_work_apart_from_periodic_messages_and_quiet_ignores_them():
    """A controller on loopback sends an edit, then only polls: the tap relays everything,
    counts the edit's change and barrier as work, and is quiet though polls keep coming."""
    server = socket.create_server(("127.0.0.1", 0))
    with benchlib.OpenFlowTap(upstream=server.getsockname()[1], port=free_port()) as tap:
        switch = socket.create_connection(("127.0.0.1", tap.port))
        controller, _ = server.accept()
        edit = to_wire(flow_mod(ofp.OFPFC_ADD)) + to_wire(parser.OFPBarrierRequest(OF13))
        controller.sendall(edit)
        received = b""
        while len(received) < len(edit):
            received += switch.recv(1 << 16)
        assert received == edit
        assert wait.until(lambda: tap.work() == 2, 5, 0.01)
        assert not tap.quiet_for(0.3)
        end = time.time() + 0.5
        while time.time() < end:  # periodic polls only
            controller.sendall(to_wire(echo()) + to_wire(port_stats()))
            time.sleep(0.05)
        assert wait.until(lambda: tap.kinds["other"] >= 10, 5, 0.01)
        assert tap.quiet_for(0.3)
        assert tap.work() == 2 and tap.flow_mods == {"add": 1}
        assert tap.sent[ofp.OFPT_FLOW_MOD] == 1 and tap.sent[ofp.OFPT_BARRIER_REQUEST] == 1
        tap.reset()
        assert tap.work() == 0 and not tap.kinds
        for sock in (switch, controller):
            sock.close()
    server.close()


def test_the_tap_says_it_lost_count_on_a_stream_it_cannot_frame():
    server = socket.create_server(("127.0.0.1", 0))
    with benchlib.OpenFlowTap(upstream=server.getsockname()[1], port=free_port()) as tap:
        switch = socket.create_connection(("127.0.0.1", tap.port))
        controller, _ = server.accept()
        controller.sendall(to_wire(flow_mod(ofp.OFPFC_ADD)) + bytes([4, 2, 0, 4, 0, 0, 0, 0]))
        assert wait.until(lambda: tap.error is not None, 5, 0.01)
        with pytest.raises(RuntimeError, match="lost count: .*gives length 4"):
            tap.work()
        for sock in (switch, controller):
            sock.close()
    server.close()
