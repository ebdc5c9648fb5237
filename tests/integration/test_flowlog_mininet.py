"""Flow logs on Open vSwitch (issue 16, part c): a denied TCP connect is in the file within a
second with its rule's file and line, and a flood of denied SYNs reaches the controller at
about the flow_log rate, the log meter dropping the rest in the switch."""

import json
import time

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from tests.integration.test_trace_mininet import POLICY
from topologies.controller_process import free_port
from topologies.linear import LinearTopo
from topologies.paths import PROBE, ROOT
from topologies.scrape import metric
from topologies.wait import until

RATE = 50
CONFIG = f"""\
namespaces:
  - {{name: prod, labels: {{team: a}}}}
endpoints:
  - {{name: h1, namespace: prod, ip: 10.0.0.1, labels: {{app: client}}}}
  - {{name: h2, namespace: prod, ip: 10.0.0.2, labels: {{app: web}}}}
  - {{name: h3, namespace: prod, ip: 10.0.0.3, labels: {{app: db}}}}
firewall:
  rules:
    - {{action: deny, protocol: tcp, port: 22, source: 0.0.0.0/0}}
  xdp: {{mode: "off"}}
policies: [netpol.yaml]
flow_log: {{path: flows.jsonl, rate: {RATE}}}
"""
RAWFRAMES = f"{ROOT}/topologies/rawframes.py"


def read(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def logged_within(path, count: int, timeout: float) -> float | None:
    """Seconds until the file holds `count` lines, or None."""
    start = time.monotonic()
    if until(lambda: len(read(path)) >= count, timeout, 0.01):
        return time.monotonic() - start
    return None


def test_denied_connections_are_logged_at_once_and_a_flood_is_metered(controller, lab, tmp_path):
    (tmp_path / "netpol.yaml").write_text(POLICY)
    cfg = tmp_path / "lab.yaml"
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
    assert net.wait_ping("h3", "h1")  # h3 speaks: bound and learned (its egress is open)
    assert net.connects("h2", "h3", "tcp", 5432)  # allowed: not logged
    assert read(log) == []

    # a denied TCP connect (the firewall's rule), in the file within a second
    h1, h3 = net.host("h1"), net.host("h3")
    probe = h1.popen(["/usr/bin/python3", PROBE, "tcp", h3.IP(), "22", "--timeout", "2"])
    took = logged_within(log, 1, 3.0)
    probe.wait(timeout=10)
    assert took is not None and took < 1.0, (took, ctl.log()[-2000:])
    print(f"denied connect logged {took * 1000:.0f} ms after it started")
    [line] = read(log)
    assert (line["src"], line["dst"], line["proto"], line["dport"]) == (
        "10.0.0.1",
        h3.IP(),
        "tcp",
        22,
    )
    assert (line["switch"], line["port_name"], line["verdict"]) == (f"{1:016x}", "s1-eth1", "deny")
    rule = line["rule"]
    assert (line["app"], rule["kind"], rule["file"], rule["line"]) == (
        "firewall",
        "rule",
        str(cfg),
        9,
    )
    assert rule["text"] == "{action: deny, protocol: tcp, port: 22, source: 0.0.0.0/0}"

    # microsegmentation's default deny, by its policy file; the SYN retries are one line
    assert not net.connects("h1", "h3", "tcp", 5432, timeout=2.0)
    assert logged_within(log, 2, 1.0) is not None
    microseg = read(log)[1]
    assert (microseg["app"], microseg["stage"], microseg["dport"]) == (
        "microseg",
        "microseg_ingress",
        5432,
    )
    assert microseg["rule"]["policies"] == ["NetworkPolicy prod/db-from-web"]
    assert microseg["rule"]["file"] == str(tmp_path / "netpol.yaml")

    # the per-rule counters from the switches (polled every 5 s)
    def counted(rule):
        return metric(port, "osken_microseg_rule_packets", policy="prod/db-from-web", rule=rule)

    assert until(lambda: counted("default") >= 1 and counted("0") >= 1, 12.0, 0.5)

    # a flood of denied SYNs (distinct source ports): the log meter caps what reaches us
    frames = [
        bytes(
            Ether(src=h1.MAC(), dst=h3.MAC())
            / IP(src=h1.IP(), dst=h3.IP())
            / TCP(sport=20000 + i, dport=22, flags="S")
        ).hex()
        for i in range(200)
    ]
    before = metric(port, "osken_flow_log_packet_ins")
    lines_before = len(read(log))
    rounds, every = 40, 0.05  # 200 frames every 50 ms: 4000 pps for about 2 s
    start = time.monotonic()
    sender = h1.popen(
        ["/usr/bin/python3", RAWFRAMES, "send", "h1-eth0", *frames]
        + ["--every", str(every), "--count", str(rounds)]
    )
    assert sender.wait(timeout=30) == 0
    flood_seconds = time.monotonic() - start
    time.sleep(1.0)  # what was let through has arrived
    received = metric(port, "osken_flow_log_packet_ins") - before
    sent = rounds * len(frames)
    written = len(read(log)) - lines_before
    print(
        f"flood: {sent} denied SYNs in {flood_seconds:.2f} s ({sent / flood_seconds:.0f} pps); "
        f"{received:.0f} packet-ins at the controller "
        f"({received / flood_seconds:.0f}/s, rate {RATE}/s), {written} lines"
    )
    assert received <= RATE * (flood_seconds + 1.0) + RATE // 10, received
    assert received >= RATE * flood_seconds * 0.5, received  # still logging at about the rate
    # Repeats of a 5-tuple are counted, not written: each round sends the same 200 source
    # ports, and the meter's tokens, refilled between rounds, pass the first few of each.
    flood = [line["sport"] for line in read(log)[lines_before:]]
    assert 1 <= written <= received and len(set(flood)) == written
