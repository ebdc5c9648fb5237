"""A host's source MAC is untrusted: one frame from another port does not move it (MAC hijack).

Each attack here moved the victim on the code before controller/mac_moves.py; each genuine move
still completes, and the time it takes is asserted."""

import logging

from apps.l2_learning import COOKIE, L2Learning
from controller.config import Config
from controller.core import Core
from controller.mac_moves import BAN_TIME, MOVE_HOLD, MOVE_LIMIT, STATS_WAIT
from tests.fakenet import BROADCAST
from tests.unit.test_fuzz_inputs import IP, fresh_network
from tests.unit.test_l2 import MACS, leaf_spine

VICTIM, PEER, ATTACKER = MACS[0], MACS[5], MACS[3]  # at 201:3, 203:4 and 202:4
SPARE = (202, 5)  # a free edge port on leaf 202
GENUINE_MOVE_BOUND = MOVE_HOLD + STATS_WAIT + 0.5  # + one tick


def forged(src: str) -> bytes:
    """A broadcast from `src` of an unassigned EtherType, 46 zero bytes (the attacker's frame)."""
    return bytes.fromhex("ff" * 6 + src.replace(":", "") + "88b5") + bytes(46)


def speak(net, mac: str) -> None:
    """`mac` sends a gratuitous ARP for its address (so the controller knows it)."""
    net.send(mac, BROADCAST, 0x0806, arp_spa=IP[mac], arp_tpa=IP[mac])


def refused(net, reason: str) -> float:
    value = net.core.metrics.registry.get_sample_value(
        "osken_l2_moves_refused_total", {"reason": reason}
    )
    return value or 0.0


def plain_network(answering: bool = True, pinned: tuple[str, ...] = ()):
    """L2 alone on the leaf-spine; hosts answer ARP for their address if `answering`;
    `pinned` MACs are endpoints of the config."""
    core = Core()
    core.add_app(L2Learning)
    endpoints = [{"name": f"e{i}", "ip": IP[m], "mac": m} for i, m in enumerate(pinned)]
    core.configure(Config(data={"endpoints": endpoints}), 0.0)
    net = leaf_spine(core)
    net.start()
    if answering:
        net.addresses = {m: IP[m] for m in MACS[:6]}
    for mac in MACS[:6]:
        speak(net, mac)
    return net


def l2(net) -> L2Learning:
    return next(a for a in net.core.apps if isinstance(a, L2Learning))


def test_the_reported_hijack_moves_nobody_in_the_full_lab():
    """The attacker's report: one broadcast with api's MAC from another port took api's
    traffic (web -> api tcp/8080 was delivered to the attacker)."""
    net = fresh_network()
    net.inject(ATTACKER, forged(VICTIM))
    net.advance(0.5)
    assert net.send(MACS[1], VICTIM).hosts == [VICTIM]
    tcp = {"ipv4_src": IP[MACS[1]], "ipv4_dst": IP[VICTIM], "ip_proto": 6}
    tcp |= {"tcp_src": 40000, "tcp_dst": 8080}
    assert net.send(MACS[1], VICTIM, **tcp).hosts == [VICTIM]
    for _ in range(20):  # and it stays so however long the attacker keeps at it
        net.inject(ATTACKER, forged(VICTIM))
        net.advance(0.5)
    assert net.send(MACS[1], VICTIM, **tcp).hosts == [VICTIM]
    assert l2(net).hosts[VICTIM] == (201, 3)
    assert refused(net, "pinned") >= 1


def test_a_live_host_that_answers_the_probe_is_not_moved():
    net = plain_network()
    before = net.now
    while net.now < before + 15:
        net.inject(ATTACKER, forged(VICTIM))
        net.advance(0.5)
        assert net.send(PEER, VICTIM).hosts == [VICTIM]
    assert l2(net).hosts[VICTIM] == (201, 3)
    assert refused(net, "live") >= 2  # refused, banned, claimed again after the ban
    # While banned, the claim is dropped where it enters: nobody gets the forged frame.
    net.inject(ATTACKER, forged(VICTIM))
    assert net.inject(ATTACKER, forged(VICTIM)).hosts == []


def test_a_live_host_that_keeps_talking_is_not_moved_even_without_a_known_address():
    net = plain_network(answering=False)
    l2(net).addresses.clear()  # no probe possible: the counters must tell
    net.inject(ATTACKER, forged(VICTIM))
    for _ in range(8):
        net.send(VICTIM, PEER)
        net.advance(0.5)
    assert l2(net).hosts[VICTIM] == (201, 3)
    assert net.send(PEER, VICTIM).hosts == [VICTIM]
    assert refused(net, "live") == 1


def test_a_forged_probe_answer_from_another_port_counts_for_nothing():
    net = plain_network(answering=False)
    net.send(VICTIM, PEER)
    net.plug(VICTIM, *SPARE)  # the old port stays up; the victim has gone
    start = net.now
    net.send(VICTIM, PEER)
    # A third host answers the probe in the victim's name, from its own port.
    net.send(ATTACKER, "02:6c:32:00:00:01", 0x0806, arp_op=2, arp_sha=VICTIM)
    net.advance(GENUINE_MOVE_BOUND)
    assert l2(net).hosts[VICTIM] == SPARE
    assert net.now - start <= GENUINE_MOVE_BOUND


def test_a_host_that_goes_silent_and_reappears_elsewhere_moves_within_seconds():
    net = plain_network()
    net.send(PEER, VICTIM)
    net.plug(VICTIM, *SPARE)  # its old port stays up, silent: the probe is not answered
    start = net.now
    net.send(VICTIM, PEER)
    while l2(net).hosts[VICTIM] != SPARE and net.now - start < 10:
        net.advance(0.5)
    took = net.now - start
    assert net.send(PEER, VICTIM).hosts == [VICTIM]
    assert took <= GENUINE_MOVE_BOUND, took
    assert took >= MOVE_HOLD  # it was held: one frame moves nobody at once
    assert net.core.metrics.registry.get_sample_value("osken_l2_moves_total") == 1


def test_a_host_whose_old_port_goes_down_moves_at_once():
    net = plain_network()
    net.send(VICTIM, PEER)
    net.set_link(201, 3, False)
    net.plug(VICTIM, *SPARE)
    assert net.converse(VICTIM, PEER)
    assert l2(net).hosts[VICTIM] == SPARE


def test_a_held_move_is_confirmed_as_soon_as_the_old_port_goes_down():
    net = plain_network()
    net.plug(VICTIM, *SPARE)
    net.send(VICTIM, PEER)
    net.set_link(201, 3, False)  # before the hold ends
    assert l2(net).hosts[VICTIM] == SPARE
    assert net.send(PEER, VICTIM).hosts == [VICTIM]


def test_a_pinned_mac_never_moves_while_its_port_is_up_and_follows_the_config():
    net = plain_network(answering=False, pinned=(VICTIM,))
    learned = [
        f
        for f in net.switches[201].flows()
        if f.cookie == COOKIE and dict(f.match).get("eth_src") == VICTIM
    ]
    assert [f.idle_timeout for f in learned] == [0]  # sticky: it does not age out either
    net.plug(VICTIM, *SPARE)  # silent at its old port, which stays up
    for _ in range(20):
        net.send(VICTIM, PEER)
        net.advance(0.5)
    assert l2(net).hosts[VICTIM] == (201, 3)
    assert refused(net, "pinned") >= 1
    # The config stops pinning it: it moves like any host, after the hold and a ban's end.
    net.deliver(net.core.configure(Config(), net.now))
    net.advance(BAN_TIME)
    net.send(VICTIM, PEER)
    net.advance(GENUINE_MOVE_BOUND)
    assert l2(net).hosts[VICTIM] == SPARE
    assert net.send(PEER, VICTIM).hosts == [VICTIM]


def test_a_pinned_mac_moves_when_its_port_goes_down():
    net = plain_network(pinned=(VICTIM,))
    net.set_link(201, 3, False)
    net.plug(VICTIM, *SPARE)
    assert net.converse(VICTIM, PEER)
    assert l2(net).hosts[VICTIM] == SPARE


def test_a_flapping_mac_is_damped_and_logged_once(caplog):
    net = plain_network(answering=False)
    places = [SPARE, (201, 3)]
    caplog.set_level(logging.WARNING, "osken_suite.l2")
    for i in range(MOVE_LIMIT + 2):
        net.plug(VICTIM, *places[i % 2])
        net.send(VICTIM, PEER)
        net.advance(GENUINE_MOVE_BOUND)
    assert refused(net, "flapping") >= 1
    assert l2(net).hosts[VICTIM] == places[(MOVE_LIMIT - 1) % 2]  # the last move allowed
    lines = [r for r in caplog.records if VICTIM in r.getMessage()]
    assert len(lines) == 1 and "flapping" in lines[0].getMessage()
