"""A host that forges or replays LLDP changes no link (issue 12, item 1), on real Open vSwitch.

Leaf-spine 2x2, two hosts per leaf. h11 (on lf1) claims, every 0.5 s, to be lf2's port toward
h21: with the controller's frame format but no signature, with a genuine probe captured at h21
and edited to claim h22's port, and with that captured probe replayed as it is. On the code
before signed probes the forged link replaced the fabric's path: h12 -> h22 lost every ping,
h11 received h12's packets, and h21 became unreachable.
"""

import re
import subprocess
import threading

from controller.core import FABRIC_PRIORITY
from tests.lldp_frames import unsigned_frame, with_port
from topologies.harness import ROOT, free_port, metric, ofctl, ping_counts
from topologies.leafspine import LeafSpineTopo

RAWFRAMES = f"{ROOT}/topologies/rawframes.py"
ROUNDS = 20  # 0.5 s apart: ten seconds of forging, ten probe rounds
EVERY = 0.5


def port_of(net, switch: str, host: str) -> int:
    """The OpenFlow port number of `switch` that `host` is plugged into."""
    sw = net.host(switch)
    _, sw_intf = net.host(host).connectionsTo(sw)[0]
    return sw.ports[sw_intf]


def fabric_ports(switch: str) -> set[int]:
    """Ports the controller marks as leading to another switch (its FROM_FABRIC flows)."""
    flows = ofctl("dump-flows", switch, options=("--no-stats", "--no-names"))
    return {int(p) for p in re.findall(rf"priority={FABRIC_PRIORITY},in_port=(\d+)", flows)}


def test_forged_and_replayed_lldp_from_a_host_change_no_link(controller, lab, tmp_path):
    metrics_port = free_port()
    cfg = tmp_path / "lab.yaml"
    cfg.write_text("discovery: {probation: 0.5, lldp_interval: 1.0}\n")
    ctl = controller(config=str(cfg), extra=["--prometheus-port", str(metrics_port)])
    net = lab(LeafSpineTopo(2, 2, 2), ctl.port)
    assert net.wait_connected(timeout=60) is not None, ctl.log()[-3000:]
    links = metric(metrics_port, "osken_links")
    fabric = {sw: fabric_ports(sw) for sw in ("lf1", "lf2")}
    assert links == 4 and all(len(ports) == 2 for ports in fabric.values()), (links, fabric)

    attacker, victim, far = net.host("h11"), net.host("h12"), net.host("h22")
    claimed = port_of(net, "lf2", "h21")
    captured = net.host("h21").cmd(
        f"/usr/bin/python3 {RAWFRAMES} capture h21-eth0 0x88cc --timeout 10"
    )
    genuine = bytes.fromhex(captured.strip())
    frames = [unsigned_frame(0x202, claimed), with_port(genuine, claimed + 1), genuine]

    sniff = attacker.popen(
        ["timeout", str(ROUNDS * EVERY + 3), "tcpdump", "-l", "-n", "-i", "h11-eth0"]
        + ["icmp", "and", "src", "host", victim.IP(), "and", "dst", "host", far.IP()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sniff.stderr.readline()  # "listening on h11-eth0 ...": capturing from here on
    pings: dict = {}
    pinger = threading.Thread(
        target=lambda: pings.update(
            text=victim.cmd(f"ping -c{ROUNDS * 2} -i{EVERY / 2:g} -W1 {far.IP()}")
        )
    )
    pinger.start()
    attacker.cmd(
        f"/usr/bin/python3 {RAWFRAMES} send h11-eth0 {' '.join(f.hex() for f in frames)} "
        f"--every {EVERY} --count {ROUNDS}"
    )
    pinger.join(timeout=60)
    seen, _ = sniff.communicate(timeout=30)

    assert ping_counts(pings.get("text", "")) == (ROUNDS * 2, ROUNDS * 2), pings.get("text")
    assert seen.strip() == "", f"h11 received h12's packets to h22:\n{seen}"
    assert metric(metrics_port, "osken_links") == 4
    assert {sw: fabric_ports(sw) for sw in ("lf1", "lf2")} == fabric
    assert net.ping("h12", "h21", count=3) == (3, 3)
    assert net.pingall() == (0, 12)

    here = {"dpid": f"{0x201:016x}", "port": str(port_of(net, "lf1", "h11"))}
    by_reason = {
        reason: metric(metrics_port, "osken_lldp_refused", reason=reason, **here)
        for reason in ("unsigned", "bad_signature", "replayed", "stale")
    }
    assert by_reason["unsigned"] == by_reason["bad_signature"] == ROUNDS, by_reason
    assert by_reason["replayed"] + by_reason["stale"] >= ROUNDS - 1, by_reason
    assert re.search(rf"switch {here['dpid']} port {here['port']}: LLDP frame refused", ctl.log())
    assert "Traceback" not in ctl.log()
