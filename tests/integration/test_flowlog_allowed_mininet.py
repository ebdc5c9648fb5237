"""Flow logs of allowed connections on Open vSwitch (issue 16): an allowed TCP connect is in
the file within a second as verdict allow with its policy rule, and a flood of allowed new
connections reaches the controller at most at the flow_log rate while every packet of the
flood still reaches its destination (the copy is metered, never the packet)."""

import time

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from tests.integration.test_flowlog_mininet import CONFIG as DENIED_CONFIG
from tests.integration.test_flowlog_mininet import RATE, RAWFRAMES, logged_within, read
from tests.integration.test_trace_mininet import POLICY
from topologies.controller_process import free_port
from topologies.linear import LinearTopo
from topologies.scrape import metric, tx_packets

# The denied-flow test's lab (firewall rule, NetworkPolicy), allowed connections logged too.
CONFIG = DENIED_CONFIG.replace(f"rate: {RATE}}}", f"rate: {RATE}, allowed: true}}")


def test_allowed_connections_are_logged_and_a_flood_is_metered_not_dropped(
    controller, lab, tmp_path
):
    (tmp_path / "netpol.yaml").write_text(POLICY)
    cfg = tmp_path / "lab.yaml"
    assert "allowed: true" in CONFIG
    cfg.write_text(CONFIG)
    log = tmp_path / "flows.jsonl"
    port = free_port()
    ctl = controller(
        ["apps/firewall", "apps/microseg"],
        config=str(cfg),
        extra=["--prometheus-port", str(port)],
    )
    net = lab(LinearTopo(3), ctl.port)
    net.serve("h3", "tcp:5432")
    assert net.wait_ping("h1", "h2"), ctl.log()[-2000:]
    assert net.wait_ping("h3", "h1")
    before = len(read(log))  # the pings: allowed ICMP, logged too

    # an allowed TCP connect: one allow line within a second, naming the policy's rule
    start = time.monotonic()
    assert net.connects("h2", "h3", "tcp", 5432)
    took = logged_within(log, before + 1, 3.0)
    assert took is not None, ctl.log()[-2000:]
    took = time.monotonic() - start
    tcp = [line for line in read(log) if line["proto"] == "tcp" and line["dport"] == 5432]
    assert len(tcp) == 1, read(log)
    [line] = tcp
    print(f"allowed connect logged {took * 1000:.0f} ms after it started")
    assert took < 1.0
    assert (line["verdict"], line["src"], line["switch"], line["port_name"]) == (
        "allow",
        "10.0.0.2",
        f"{2:016x}",
        "s2-eth1",
    )
    assert (line["app"], line["stage"]) == ("microseg", "microseg_ingress")
    assert line["rule"]["policy"] == "prod/db-from-web" and line["rule"]["action"] == "allow"
    assert line["rule"]["file"] == str(tmp_path / "netpol.yaml")

    # a flood of allowed SYNs (distinct source ports): every one reaches h3, the copies are
    # metered to about RATE per second
    h2, h3 = net.host("h2"), net.host("h3")
    frames = [
        bytes(
            Ether(src=h2.MAC(), dst=h3.MAC())
            / IP(src=h2.IP(), dst=h3.IP())
            / TCP(sport=20000 + i, dport=5432, flags="S")
        ).hex()
        for i in range(200)
    ]
    h3_port = 1  # s3-eth1
    sent_before = tx_packets("s3")[h3_port]
    ins_before = metric(port, "osken_flow_log_packet_ins")
    lines_before = len(read(log))
    rounds, every = 20, 0.05  # 200 frames every 50 ms: about 4000 pps for 1 s
    start = time.monotonic()
    sender = h2.popen(
        ["/usr/bin/python3", RAWFRAMES, "send", "h2-eth0", *frames]
        + ["--every", str(every), "--count", str(rounds)]
    )
    assert sender.wait(timeout=30) == 0
    flood_seconds = time.monotonic() - start
    time.sleep(1.0)
    sent = rounds * len(frames)
    delivered = tx_packets("s3")[h3_port] - sent_before
    received = metric(port, "osken_flow_log_packet_ins") - ins_before
    written = len(read(log)) - lines_before
    print(
        f"allowed flood: {sent} SYNs in {flood_seconds:.2f} s, {delivered} out of h3's port; "
        f"{received:.0f} log packet-ins ({received / flood_seconds:.0f}/s, rate {RATE}/s), "
        f"{written} lines"
    )
    assert delivered >= sent, (delivered, sent)
    assert received <= RATE * (flood_seconds + 1.0) + RATE // 10, received
    assert 1 <= written <= received
