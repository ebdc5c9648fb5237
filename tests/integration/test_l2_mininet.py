"""L2 learning in Mininet with real traffic through Open vSwitch's userspace datapath."""

import re
import subprocess
import threading
import time

import pytest

from topologies.fattree import FatTreeTopo
from topologies.harness import ping_counts
from topologies.leafspine import LeafSpineTopo
from topologies.linear import LinearTopo
from topologies.tree import TreeTopo


@pytest.mark.parametrize(
    "topo",
    [TreeTopo(depth=2, fanout=3), LeafSpineTopo(2, 3, 2), FatTreeTopo(4)],
    ids=["tree", "leafspine", "fattree"],
)
def test_pingall_no_loss(controller, lab, topo):
    ctl = controller()
    net = lab(topo, ctl.port)
    took = net.wait_connected(timeout=60)
    assert took is not None, ctl.log()[-3000:]
    lost, sent = net.pingall()
    assert (lost, sent) == (0, len(topo.hosts()) * (len(topo.hosts()) - 1))
    assert "Traceback" not in ctl.log()


def test_link_down_then_traffic_recovers(controller, lab):
    ctl = controller()
    net = lab(LeafSpineTopo(2, 3, 2), ctl.port)
    assert net.wait_connected(timeout=60) is not None
    net.link("lf1", "sp1", "down")
    assert ctl.wait_log(r"port \d+ \(lf1-eth1\) down")
    took = net.wait_connected(timeout=20)
    assert took is not None and took < 10, ctl.log()[-3000:]
    net.link("lf1", "sp2", "down")  # lf1 is now cut off from the fabric
    time.sleep(1)
    assert net.ping("h11", "h31", count=2)[0] == 0
    assert net.ping("h11", "h12", count=2)[0] == 2  # same leaf still works
    net.link("lf1", "sp1", "up")
    net.link("lf1", "sp2", "up")
    assert net.wait_connected(timeout=30) is not None, ctl.log()[-3000:]


def test_port_flapping_converges(controller, lab):
    ctl = controller()
    net = lab(LeafSpineTopo(2, 2, 1), ctl.port)
    assert net.wait_connected(timeout=60) is not None
    for _ in range(5):
        net.link("lf1", "sp1", "down")
        net.link("lf1", "sp1", "up")
    assert net.wait_connected(timeout=30) is not None, ctl.log()[-3000:]
    assert "Traceback" not in ctl.log()


def _flood_ping(host, dst_ip, count, interval, out):
    out["text"] = host.cmd(f"ping -c{count} -i{interval} -W1 {dst_ip}")


def test_controller_killed_and_restarted_under_ping_loses_nothing(controller, lab):
    ctl = controller()
    topo = LeafSpineTopo(2, 3, 2)
    net = lab(topo, ctl.port)
    assert net.wait_connected(timeout=60) is not None
    before = {sw: net.dump_flows(sw) for sw in topo.switches()}
    src, dst = net.host("h11"), net.host("h32")
    result: dict = {}
    pinger = threading.Thread(target=_flood_ping, args=(src, dst.IP(), 400, 0.02, result))
    pinger.start()
    time.sleep(1.5)
    ctl.kill()
    time.sleep(1.5)
    new = controller(port=ctl.port)
    assert new.wait_log(r"reconciled \(connect\)", count=len(topo.switches()), timeout=30)
    pinger.join(timeout=60)
    assert ping_counts(result.get("text", "")) == (400, 400), result.get("text")
    # The new controller found everything in place: nothing added, changed or removed.
    reconciled = re.findall(r"reconciled \(connect\): (.*) flows", new.log())
    assert reconciled == ["+0 ~0 -0"] * len(topo.switches()), new.log()[-3000:]
    after = {sw: net.dump_flows(sw) for sw in topo.switches()}
    assert after == before


def test_openflow10_only_switch_is_refused_and_the_rest_keeps_working(controller, lab):
    ctl = controller()
    net = lab(LinearTopo(2), ctl.port)
    assert net.wait_connected(timeout=60) is not None
    bridge = "of10test"
    subprocess.run(
        [
            "ovs-vsctl",
            "add-br",
            bridge,
            "--",
            "set",
            "bridge",
            bridge,
            "datapath_type=netdev",
            "protocols=OpenFlow10",
            "--",
            "set-controller",
            bridge,
            f"tcp:127.0.0.1:{ctl.port}",
        ],
        check=True,
    )
    try:
        assert ctl.wait_log(r"unsupported version|version negotiation|OpenFlow 1\.0", timeout=15), (
            ctl.log()[-2000:]
        )
        lost, sent = net.pingall()
        assert sent and not lost
    finally:
        subprocess.run(["ovs-vsctl", "--if-exists", "del-br", bridge], check=False)


def test_a_flood_of_new_source_macs_is_capped_at_the_switch(controller, lab, tmp_path):
    import sys

    cfg = tmp_path / "lab.yaml"
    cfg.write_text("controller: {packet_in_rate: 200, packet_in_burst: 20}\n")
    ctl = controller(config=str(cfg))
    net = lab(LinearTopo(2), ctl.port)
    assert net.wait_connected(timeout=60) is not None
    spray = (
        "from scapy.all import Ether, IP, UDP, RandMAC, sendp; "
        "sendp([Ether(src=str(RandMAC()), dst='ff:ff:ff:ff:ff:ff')/IP()/UDP() "
        "for _ in range(3000)], iface='h1-eth0', verbose=False)"
    )
    start = time.time()
    net.host("h1").cmd(f'{sys.executable} -c "{spray}"')
    seconds = time.time() - start
    stats = subprocess.run(
        ["ovs-ofctl", "-O", "OpenFlow13", "meter-stats", "s1", "meter=controller"],
        capture_output=True,
        text=True,
    ).stdout
    seen = int(re.search(r"packet_in_count:(\d+)", stats).group(1))
    dropped = int(re.search(r"0: packet_count:(\d+)", stats).group(1))
    assert dropped > 0, stats
    assert seen - dropped <= 200 * (seconds + 1) + 20, (seen, dropped, seconds)
    assert net.pingall()[0] == 0  # the network kept working through it


def test_a_host_that_moves_is_followed(controller, lab):
    ctl = controller()
    net = lab(LinearTopo(3), ctl.port)
    assert net.wait_connected(timeout=60) is not None
    h1, s1, s3 = net.host("h1"), net.net.get("s1"), net.net.get("s3")
    ip, mac = h1.IP(), h1.MAC()
    net.net.delLinkBetween(h1, s1)
    link = net.net.addLink(h1, s3)
    s3.attach(link.intf2)
    h1.setIP(ip, 8, intf=link.intf1)
    h1.setMAC(mac, intf=link.intf1)
    h1.cmd(f"ethtool -K {link.intf1} tx off")
    assert ctl.wait_log(r"port \d+ \(s3-eth\d+\) up", timeout=10)
    net.wait_ping("h1", "h2", timeout=20)
    assert net.ping("h2", "h1", count=3, interval=0.1) == (3, 3), ctl.log()[-2000:]
    # Learned at its new port (its old port went down, so it was forgotten there first).
    assert [f for f in net.dump_flows("s3") if f"dl_src={mac}" in f]
    assert not [f for f in net.dump_flows("s1") if f"dl_src={mac}" in f]


def test_a_silent_host_ages_out_and_comes_back(controller, lab, tmp_path):
    cfg = tmp_path / "lab.yaml"
    cfg.write_text("l2: {mac_age: 2}\n")
    ctl = controller(config=str(cfg))
    net = lab(LinearTopo(2), ctl.port)
    assert net.wait_connected(timeout=60) is not None
    mac = net.host("h2").MAC()
    assert ctl.wait_log(rf"host {mac} aged out", timeout=15), ctl.log()[-2000:]
    flows = net.dump_flows("s1")
    assert not [f for f in flows if f"dl_dst={mac}" in f]
    assert net.ping("h1", "h2", count=2) == (2, 2)
