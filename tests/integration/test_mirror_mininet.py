"""docs/apps.md's example app in Mininet: a monitor host sees what a mirrored port receives."""

from topologies.linear import LinearTopo


def captured(net, host: str, src: str, dst: str, run) -> int:
    """Echo requests from `src` to `dst` that tcpdump on `host` saw while `run()` ran."""
    ip_src, ip_dst = net.host(src).IP(), net.host(dst).IP()
    cap = net.host(host).popen(
        [
            "tcpdump",
            "-l",
            "-n",
            "-i",
            f"{host}-eth0",
            "-c",
            "100",
            f"icmp[icmptype] == icmp-echo and src {ip_src} and dst {ip_dst}",
        ],
        text=True,
    )
    try:
        net.host(host).cmd("sleep 1")  # tcpdump is listening
        run()
        net.host(host).cmd("sleep 1")
    finally:
        cap.terminate()
        out, _ = cap.communicate(timeout=10)
    return sum(1 for line in out.splitlines() if "ICMP echo request" in line)


def test_the_monitor_sees_a_mirrored_ports_traffic_and_no_other(controller, lab, tmp_path):
    cfg = tmp_path / "lab.yaml"
    cfg.write_text("mirror:\n  - {dpid: 1, ports: [1], to: 3}\n")  # s1: h1x1 on 1, h1x3 on 3
    ctl = controller(["apps/mirror.py"], config=str(cfg))
    net = lab(LinearTopo(1, hosts_per_switch=3), ctl.port)
    assert net.wait_connected(timeout=60) is not None, ctl.log()[-3000:]
    assert net.wait_ping("h1x1", "h1x2", timeout=30)  # hosts learned

    seen = captured(net, "h1x3", "h1x1", "h1x2", lambda: net.ping("h1x1", "h1x2", count=5))
    assert seen == 5
    seen = captured(net, "h1x3", "h1x2", "h1x1", lambda: net.ping("h1x2", "h1x1", count=5))
    assert seen == 0  # port 2 is not mirrored
    assert "Traceback" not in ctl.log()
