"""The firewall offloading to XDP in Mininet: drops counted in XDP, not in OpenFlow."""

import re
import subprocess
import time

from topologies.harness import free_port, metric
from topologies.linear import LinearTopo

BURST = (
    "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
    "[s.sendto(b'x' * 64, ('{ip}', 5001)) for _ in range(300)]"
)


def xdp_on(ifname: str) -> bool:
    out = subprocess.run(["ip", "link", "show", ifname], capture_output=True, text=True).stdout
    return "xdp" in out


def test_deny_rule_and_blocked_source_are_dropped_in_xdp(controller, lab, tmp_path):
    cfg = tmp_path / "lab.yaml"
    cfg.write_text("""firewall:
  stats_interval: 1
  blocked_ips: [10.0.0.3]
  rules:
    - {action: deny, protocol: udp, port: 5001}
    - {action: allow, protocol: tcp, port: 22, source: 10.0.0.1/32}
    - {action: deny, protocol: tcp, port: 22}
""")
    metrics = free_port()
    ctl = controller(["apps/firewall"], config=str(cfg), extra=["--prometheus-port", str(metrics)])
    net = lab(LinearTopo(3), ctl.port)
    net.wait_ping("h1", "h2")
    assert ctl.wait_log(r"XDP: attached to s1-eth1", timeout=10), ctl.log()[-3000:]
    assert xdp_on("s1-eth1") and xdp_on("s2-eth1")
    log = ctl.log()
    assert re.search(r"XDP: offloading rule .*rules\[0\] \(deny udp port 5001\)", log)
    assert re.search(r"XDP: not offloading rule .*rules\[2\] .*earlier allow rule", log)

    net.host("h1").cmd(f'/usr/bin/python3 -c "{BURST.format(ip=net.host("h2").IP())}"')
    time.sleep(2.5)  # two stats intervals
    total = metric(metrics, "osken_firewall_rule_packets", rule="1")
    in_xdp = metric(metrics, "osken_firewall_rule_xdp_packets", rule="1")
    assert in_xdp >= 300 and total == in_xdp, (total, in_xdp)  # nothing reached OpenFlow

    assert net.ping("h3", "h2", count=2)[0] == 0  # blocked source, dropped in XDP as well
    time.sleep(1.5)
    assert metric(metrics, "osken_firewall_rule_xdp_packets", rule="blocked") >= 2

    assert ctl.stop() == 0
    assert not xdp_on("s1-eth1") and not xdp_on("s2-eth1")  # detached on the way out


def test_adaptive_offload_takes_a_hot_rule_and_gives_it_back(controller, lab, tmp_path):
    cfg = tmp_path / "lab.yaml"
    cfg.write_text("""firewall:
  stats_interval: 1
  xdp: {offload: adaptive, threshold_pps: 20, idle_seconds: 3}
  rules:
    - {action: deny, protocol: udp, port: 5001}
""")
    metrics = free_port()
    ctl = controller(["apps/firewall"], config=str(cfg), extra=["--prometheus-port", str(metrics)])
    net = lab(LinearTopo(2), ctl.port)
    net.wait_ping("h1", "h2")
    burst = f'/usr/bin/python3 -c "{BURST.format(ip=net.host("h2").IP())}"'
    net.host("h1").cmd(burst)  # 300 packets: over 20 pps in OpenFlow, so the rule turns hot
    assert ctl.wait_log(r"XDP: rule id \d+ offloaded: over the threshold", timeout=10)
    time.sleep(1.5)
    before = metric(metrics, "osken_firewall_rule_xdp_packets", rule="1")
    net.host("h1").cmd(burst)
    time.sleep(2.5)
    assert metric(metrics, "osken_firewall_rule_xdp_packets", rule="1") - before >= 300
    assert ctl.wait_log(r"XDP: rule id \d+ withdrawn: idle", timeout=15)
    time.sleep(1.5)  # counters stay after the withdrawal
    assert metric(metrics, "osken_firewall_rule_xdp_packets", rule="1") - before >= 300
