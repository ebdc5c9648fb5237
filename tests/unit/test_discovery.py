"""Discovery acts only on the controller's own fresh, signed probes; hosts cannot make links."""

import logging
import random
import struct

import pytest

from controller.core import Core
from controller.discovery import CONFIRM_ROUNDS, LOG_EVERY, MIN_FRESHNESS, Discovery
from controller.lldp import (
    BAD_SIGNATURE,
    LOOPED,
    MALFORMED,
    REPLAYED,
    STALE,
    UNSIGNED,
    Refused,
    lldp_frame,
    parse_lldp,
)
from controller.topology import Topology
from tests.fakenet import BROADCAST
from tests.lldp_frames import unsigned_frame, with_port
from tests.unit.test_l2 import MACS, leaf_spine

MAC = "02:00:00:00:00:01"


def two_switches(**kwargs) -> tuple[Topology, Discovery]:
    """Switches 1 and 2, ports 1-3 each; port 1 of each faces the other."""
    t = Topology()
    t.add_switch(1, {1: True, 2: True, 3: True})
    t.add_switch(2, {1: True, 2: True, 3: True})
    return t, Discovery(t, **kwargs)


def refused(d: Discovery, dpid: int, port: int, reason: str) -> float:
    labels = {"dpid": f"{dpid:016x}", "port": str(port), "reason": reason}
    return d.metrics.registry.get_sample_value("osken_lldp_refused_total", labels) or 0.0


# --- the frame format ------------------------------------------------------------------------


def test_a_signed_probe_parses_and_verifies_only_under_its_key():
    frame = lldp_frame(b"k" * 32, 0x201, 7, MAC, stamp=123, seq=9, probe_round=4)
    probe = parse_lldp(frame)
    assert (probe.dpid, probe.port, probe.stamp, probe.seq, probe.probe_round) == (
        0x201,
        7,
        123,
        9,
        4,
    )
    assert probe.signed_by(b"k" * 32)
    assert not probe.signed_by(b"j" * 32)


def test_every_truncation_of_a_probe_is_refused_as_malformed():
    frame = lldp_frame(b"k" * 32, 0x201, 7, MAC, stamp=123, seq=9, probe_round=4)
    for n in range(len(frame)):
        with pytest.raises(Refused) as exc:
            parse_lldp(frame[:n])
        assert exc.value.reason == MALFORMED, n


def test_garbage_is_refused_and_never_raises_anything_else():
    rng = random.Random(12)
    header = bytes.fromhex("0180c200000e020000000001") + b"\x88\xcc"
    for _ in range(2000):
        junk = header + bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 120)))
        with pytest.raises(Refused) as exc:
            parse_lldp(junk)
        assert exc.value.reason in (MALFORMED, UNSIGNED)
    with pytest.raises(Refused, match="malformed: not an LLDP frame"):
        parse_lldp(b"\x00" * 60)


@pytest.mark.parametrize("chassis", [b"-1", b"1" * 20, b"+0000000000000001", b"0x1"])
def test_a_chassis_id_that_is_no_64_bit_dpid_is_refused(chassis):
    """int(x, 16) took '-1' and 20 digits; signing them raised struct.error past discovery."""
    probe = lldp_frame(b"k" * 32, 1, 1, MAC, stamp=1, seq=1, probe_round=1)
    forged = probe.replace(b"\x07dpid:%016x" % 1, b"\x07dpid:" + chassis)
    forged = forged.replace(
        struct.pack("!H", (1 << 9) | 22), struct.pack("!H", (1 << 9) | (6 + len(chassis)))
    )
    with pytest.raises(Refused) as exc:
        parse_lldp(forged)
    assert exc.value.reason == MALFORMED


def test_an_authentication_tlv_of_the_wrong_size_is_malformed():
    frame = lldp_frame(b"k" * 32, 1, 1, MAC, stamp=1, seq=1, probe_round=1)
    at = frame.index(bytes.fromhex("0a5ec001")) - 2  # the TLV header before OUI and subtype
    length = struct.unpack_from("!H", frame, at)[0] & 0x1FF
    short = frame[:at] + struct.pack("!H", (127 << 9) | (length - 1)) + frame[at + 2 : -3]
    with pytest.raises(Refused, match="malformed: authentication TLV of 39 bytes"):
        parse_lldp(short + b"\x00\x00")


# --- what discovery refuses ------------------------------------------------------------------


def test_a_genuine_probe_makes_the_link():
    t, d = two_switches()
    assert d.heard(2, 1, d.probe(1, 1, MAC, now=10.0), now=10.001)
    assert {lk.ends for lk in t.links} == {frozenset({(1, 1), (2, 1)})}


@pytest.mark.parametrize(
    "frame, reason",
    [
        (unsigned_frame(1, 2), UNSIGNED),
        (lldp_frame(b"x" * 32, 1, 2, MAC, 10_000_000_000, 1, 0), BAD_SIGNATURE),
        (b"\x01\x80\xc2\x00\x00\x0e" + b"\x00" * 6 + b"\x88\xcc\xfe\x07abc", MALFORMED),
    ],
    ids=["unsigned", "wrong-key", "garbage"],
)
def test_forged_frames_make_no_link_and_are_counted_by_port_and_reason(frame, reason):
    t, d = two_switches()
    for i in range(5):
        assert not d.heard(2, 3, frame, now=10.0 + i * 0.1)
    assert t.links == set()
    assert refused(d, 2, 3, reason) == 5


def test_a_genuine_probe_edited_to_claim_another_port_is_refused():
    t, d = two_switches()
    edited = with_port(d.probe(1, 1, MAC, now=10.0), 2)
    assert parse_lldp(edited).port == 2
    assert not d.heard(2, 1, edited, now=10.0)
    assert refused(d, 2, 1, BAD_SIGNATURE) == 1 and t.links == set()


def test_a_forged_frame_cannot_move_an_existing_link():
    t, d = two_switches()
    d.heard(2, 1, d.probe(1, 1, MAC, now=10.0), now=10.0)
    before = set(t.links)
    assert not d.heard(2, 3, unsigned_frame(1, 1), now=10.1)  # claims switch 1's link port
    assert t.links == before


def test_stale_and_future_stamps_are_refused():
    t, d = two_switches(interval=2.0)
    assert d.freshness == 2.0
    old = d.probe(1, 1, MAC, now=10.0)
    assert not d.heard(2, 1, old, now=12.01)
    ahead = d.probe(1, 1, MAC, now=20.0)
    assert not d.heard(2, 1, ahead, now=17.9)
    assert refused(d, 2, 1, STALE) == 2 and t.links == set()
    assert d.heard(2, 1, d.probe(1, 1, MAC, now=30.0), now=31.9)


def test_freshness_never_goes_below_a_second():
    _, d = two_switches(interval=0.2)
    assert d.freshness == MIN_FRESHNESS


def test_a_probe_is_accepted_once_per_port_and_never_an_older_one():
    _, d = two_switches()
    first = d.probe(1, 1, MAC, now=10.0)
    second = d.probe(1, 1, MAC, now=10.5)
    assert d.heard(2, 1, first, now=10.0)
    d.heard(2, 1, first, now=10.1)  # the same frame again
    assert refused(d, 2, 1, REPLAYED) == 1
    d.heard(2, 1, second, now=10.6)
    assert refused(d, 2, 1, REPLAYED) == 1
    d.heard(2, 1, first, now=10.7)  # older than the last one accepted
    assert refused(d, 2, 1, REPLAYED) == 2


def test_two_probes_in_the_same_nanosecond_are_both_accepted():
    _, d = two_switches()
    a, b = d.probe(1, 1, MAC, now=10.0), d.probe(1, 1, MAC, now=10.0)
    d.heard(2, 1, a, now=10.0)
    d.heard(2, 1, b, now=10.0)
    assert refused(d, 2, 1, REPLAYED) == 0


def test_a_clock_that_went_back_does_not_lock_a_port_out():
    t, d = two_switches(interval=2.0)
    assert d.heard(2, 1, d.probe(1, 1, MAC, now=1000.0), now=1000.0)
    assert not d.heard(2, 1, d.probe(1, 1, MAC, now=100.0), now=100.0) and t.links
    assert refused(d, 2, 1, REPLAYED) == 0


def test_a_probe_looped_back_onto_its_own_port_is_refused():
    t, d = two_switches()
    assert not d.heard(1, 3, d.probe(1, 3, MAC, now=10.0), now=10.0)
    assert refused(d, 1, 3, LOOPED) == 1 and t.links == set()


def test_a_replica_with_the_same_key_is_believed_and_another_run_is_not():
    t, d = two_switches(key=b"s" * 32)
    replica = Discovery(Topology(), key=b"s" * 32)
    other_run = Discovery(Topology())
    assert not d.heard(2, 1, other_run.probe(1, 1, MAC, now=10.0), now=10.0)
    assert d.heard(2, 1, replica.probe(1, 1, MAC, now=10.1), now=10.1)
    assert refused(d, 2, 1, BAD_SIGNATURE) == 1


def test_a_short_key_is_rejected_with_its_length():
    with pytest.raises(ValueError, match="LLDP key of 8 bytes: at least 16"):
        Discovery(Topology(), key=b"12345678")


def test_refusals_are_logged_at_most_once_per_port_per_interval(caplog):
    _, d = two_switches()
    caplog.set_level(logging.WARNING, logger="osken_suite.discovery")
    for i in range(200):
        d.heard(2, 3, unsigned_frame(1, 1), now=10.0 + i * 0.01)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "switch 0000000000000002 port 3: LLDP frame refused, unsigned: "
        "claims switch 0000000000000001 port 1 without a signature"
    ]
    d.heard(2, 3, unsigned_frame(1, 1), now=10.0 + LOG_EVERY)
    assert "(199 more refused here since the last report)" in caplog.records[-1].getMessage()
    assert refused(d, 2, 3, UNSIGNED) == 201


# --- ports that need more than one frame ----------------------------------------------------


def test_a_host_port_becomes_a_link_end_only_on_probes_from_two_rounds(caplog):
    t, d = two_switches()
    t.add_host("00:00:00:00:00:aa", 2, 3)
    caplog.set_level(logging.INFO, logger="osken_suite.discovery")
    d.due(10.0)
    assert not d.heard(2, 3, d.probe(1, 3, MAC, now=10.0), now=10.0)
    assert not d.heard(2, 3, d.probe(1, 3, MAC, now=10.2), now=10.2)  # same round: not enough
    assert t.links == set()
    d.due(20.0)
    assert d.heard(2, 3, d.probe(1, 3, MAC, now=20.0), now=20.0)
    assert CONFIRM_ROUNDS == 2
    assert "although hosts were learned on switch 0000000000000002 port 3" in caplog.text


def test_a_port_that_once_had_hosts_stays_suspect_after_they_leave():
    t, d = two_switches()
    t.add_host("00:00:00:00:00:aa", 2, 3)
    d.expire(5.0, {1, 2})
    t.remove_host("00:00:00:00:00:aa")
    assert not d.heard(2, 3, d.probe(1, 3, MAC, now=10.0), now=10.0)
    assert t.links == set()


def test_a_port_that_was_an_edge_for_a_whole_round_needs_two_rounds():
    t, d = two_switches(probation=1.0)
    for dpid in (1, 2):
        for port in (1, 2, 3):
            d.port_up(dpid, port, 0.0)
    d.expire(1.0, {1, 2})
    d.due(1.0)
    d.due(6.0)  # every port has been an edge through a whole round
    assert not d.heard(2, 1, d.probe(1, 1, MAC, now=6.0), now=6.0)
    d.due(11.0)
    assert d.heard(2, 1, d.probe(1, 1, MAC, now=11.0), now=11.0)


def test_a_probe_that_would_move_a_link_needs_two_rounds():
    t, d = two_switches()
    d.due(10.0)
    d.heard(2, 1, d.probe(1, 1, MAC, now=10.0), now=10.0)
    # Switch 1's port 1 now also shows up on switch 2 port 2 (a hub, a bump, a relay).
    assert not d.heard(2, 2, d.probe(1, 1, MAC, now=10.1), now=10.1)
    assert {lk.ends for lk in t.links} == {frozenset({(1, 1), (2, 1)})}
    d.due(20.0)
    assert d.heard(2, 2, d.probe(1, 1, MAC, now=20.0), now=20.0)
    assert {lk.ends for lk in t.links} == {frozenset({(1, 1), (2, 2)})}


def test_a_genuine_probe_replayed_on_a_host_port_makes_no_link():
    """The replay a host can do: a probe captured elsewhere, sent again and again."""
    t, d = two_switches()
    t.add_host("00:00:00:00:00:aa", 2, 3)
    captured = d.probe(1, 2, MAC, now=10.0)  # left switch 1 port 2, toward a host
    for i in range(20):
        d.due(10.0 + i)
        assert not d.heard(2, 3, captured, now=10.0 + i * 0.5)
    assert t.links == set()
    assert refused(d, 2, 3, REPLAYED) + refused(d, 2, 3, STALE) == 19


# --- the core, its fake network, and a host that forges --------------------------------------


def test_links_age_out_only_between_connected_switches():
    t, d = two_switches(link_timeout=10.0)
    d.heard(2, 1, d.probe(1, 1, MAC, now=0.0), now=0.0)
    d.expire(20.0, {1})  # switch 2 is disconnected: its data plane still carries the link
    assert len(t.links) == 1
    d.expire(20.0, {1, 2})
    assert len(t.links) == 0


def test_links_outlive_a_long_probe_interval():
    t, d = two_switches(link_timeout=10.0, interval=30.0)
    d.heard(2, 1, d.probe(1, 1, MAC, now=0.0), now=0.0)
    d.expire(29.0, {1, 2})
    assert len(t.links) == 1


def test_discovery_settles_ports_after_probation_and_finds_links():
    t, d = two_switches(probation=1.0)
    for port in (1, 2):
        d.port_up(1, port, 0.0)
    d.port_up(2, 1, 0.0)
    assert d.heard(2, 1, d.probe(1, 1, MAC, now=0.1), now=0.1)
    d.expire(0.5, {1, 2})
    assert t.edge_ports(1) == set()
    d.expire(1.0, {1, 2})
    assert t.edge_ports(1) == {2} and t.edge_ports(2) == set()


def test_a_host_forging_lldp_in_the_fabric_changes_nothing():
    """The issue's scenario on the fake leaf-spine: a host on leaf 201 claims to be leaf 202's
    port toward a host there, with an unsigned frame, an edited genuine one, and a replay."""
    net = leaf_spine(leaves=2)
    net.start()
    attacker, victim, claimed, far = MACS[0], MACS[1], MACS[2], MACS[3]
    for mac in MACS[:4]:
        net.send(mac, BROADCAST, 0x0806)
    core, links = net.core, set(net.core.topology.links)
    genuine = core.discovery.probe(202, 3, MAC, net.now)  # as if captured at the claimed host
    forged = [unsigned_frame(202, 3), with_port(core.discovery.probe(202, 4, MAC, net.now), 3)]
    for _ in range(3 * CONFIRM_ROUNDS):
        for frame in [*forged, genuine]:
            net.inject(attacker, frame)
        net.advance(core.discovery.interval)
    assert core.topology.links == links
    assert net.send(victim, far).hosts == [far] and net.converse(victim, claimed)
    reg = core.metrics.registry
    port = {"dpid": f"{201:016x}", "port": "3"}
    counts = {
        reason: reg.get_sample_value("osken_lldp_refused_total", {**port, "reason": reason}) or 0
        for reason in (UNSIGNED, BAD_SIGNATURE, REPLAYED, STALE)
    }
    assert counts[UNSIGNED] == counts[BAD_SIGNATURE] == 3 * CONFIRM_ROUNDS
    assert counts[REPLAYED] + counts[STALE] >= 3 * CONFIRM_ROUNDS - 1


def test_the_core_signs_with_an_injected_key():
    core = Core(lldp_key=b"r" * 32)
    assert core.discovery.key == b"r" * 32
    assert repr(b"r" * 32) not in repr(core.discovery)
    assert Core().discovery.key != Core().discovery.key
