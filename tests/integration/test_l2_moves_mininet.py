"""MAC moves on real Open vSwitch: a host forging another's source MAC takes none of its traffic,
and a host that really moves (silent at its old port, or its old port down) is found again
within seconds (apps/l2_learning.py, controller/mac_moves.py, docs/security.md)."""

import os
import re
import subprocess
import time

from topologies.harness import ping_counts, quiet
from topologies.leafspine import LeafSpineTopo

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RAWFRAMES = f"{ROOT}/topologies/rawframes.py"
PINGS, EVERY = 50, 0.2  # h21 pings the victim 50 times, 0.2 s apart, through the attack
MOVE_BOUND = 5.0  # seconds a genuine move may take (hold 2 s, counters, ticks, ARP)


def started(ctl, net) -> None:
    assert net.wait_connected(timeout=60) is not None, ctl.log()[-3000:]


def first_reply(text: str, interval: float) -> float | None:
    """Seconds from the start of a `ping -i interval` run to its first reply, else None."""
    seqs = [int(s) for s in re.findall(r"icmp_seq=(\d+) ttl", text)]
    return (min(seqs) - 1) * interval if seqs else None


def test_a_host_forging_another_hosts_mac_takes_none_of_its_traffic(controller, lab):
    ctl = controller()
    net = lab(LeafSpineTopo(2, 2, 2), ctl.port)
    started(ctl, net)
    victim, pinger, attacker = net.host("h11"), net.host("h21"), net.host("h22")
    forged = "ff" * 6 + victim.MAC().replace(":", "") + "88b5" + "00" * 46
    sniffer = attacker.popen(
        ["timeout", "14", "tcpdump", "-l", "-n", "-i", "h22-eth0", f"icmp and dst {victim.IP()}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    time.sleep(1)
    attacker.cmd(f"/usr/bin/python3 {RAWFRAMES} send h22-eth0 {forged} --every 0.2 --count 60 &")
    text = pinger.cmd(f"ping -c{PINGS} -i{EVERY:g} -W1 {victim.IP()}")
    sniffed, _ = sniffer.communicate(timeout=30)
    assert ping_counts(text) == (PINGS, PINGS), text
    assert sniffed.strip() == "", sniffed  # not one of the victim's packets reached the attacker
    assert re.search(rf"host {victim.MAC()} stays at .* \((live)\)", ctl.log()), ctl.log()[-3000:]
    assert "Traceback" not in ctl.log()


def test_a_host_that_goes_silent_and_reappears_elsewhere_moves_within_seconds(controller, lab):
    """h11's address and MAC move to h12's port; h11 stays plugged in (its port up) but silent,
    so the controller's probe of it goes unanswered and the move is confirmed."""
    ctl = controller()
    net = lab(LeafSpineTopo(2, 2, 2), ctl.port)
    started(ctl, net)
    old, new, pinger = net.host("h11"), net.host("h12"), net.host("h21")
    mac, ip = old.MAC(), old.IP()
    for h in (old, new):
        quiet(h)
    old.cmd("ip addr flush dev h11-eth0")  # answers no ARP for ip any more, sends nothing
    new.cmd(
        f"ip addr flush dev h12-eth0; ip link set h12-eth0 address {mac}; "
        f"ip addr add {ip}/8 dev h12-eth0"
    )
    new.cmd(f"ping -c40 -i0.1 -W1 {pinger.IP()} >/dev/null 2>&1 &")  # it speaks from there
    text = pinger.cmd(f"ping -c60 -i0.1 -W1 {ip}")
    took = first_reply(text, 0.1)
    print(f"genuine move, old port up and silent: reachable again after {took} s")
    assert took is not None and took <= MOVE_BOUND, text + ctl.log()[-4000:]
    assert re.search(rf"host {mac} moved from \w+:3 to \w+:4", ctl.log()), ctl.log()[-3000:]


def test_a_host_whose_interface_goes_down_and_reappears_elsewhere_moves_at_once(controller, lab):
    ctl = controller()
    net = lab(LeafSpineTopo(2, 2, 2), ctl.port)
    started(ctl, net)
    old, new, pinger = net.host("h11"), net.host("h12"), net.host("h21")
    mac, ip = old.MAC(), old.IP()
    quiet(new)
    old.cmd("ip link set h11-eth0 down")  # the switch sees its port go down
    assert ctl.wait_log(r"port 3 \(lf1-eth3\) down", timeout=10), ctl.log()[-3000:]
    new.cmd(
        f"ip addr flush dev h12-eth0; ip link set h12-eth0 address {mac}; "
        f"ip addr add {ip}/8 dev h12-eth0"
    )
    new.cmd(f"ping -c40 -i0.1 -W1 {pinger.IP()} >/dev/null 2>&1 &")
    text = pinger.cmd(f"ping -c60 -i0.1 -W1 {ip}")
    took = first_reply(text, 0.1)
    print(f"genuine move, old port down: reachable again after {took} s")
    assert took is not None and took <= 1.0, text
