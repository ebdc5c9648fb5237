#!/usr/bin/env python3
"""Benchmark: drop rate of the XDP firewall vs the limit, OVS userspace and nftables (as root).

One generator (trafgen, one process on every CPU) sends 64-byte UDP packets at full speed into a
veth pair (whose receive side runs in the sender's context); on the
receiving end, in turn:
  1. our XDP program with 1,000 rules loaded (the packet hits one of them),
  2. a bare XDP program that drops everything (the limit),
  3. the same deny rule as an OpenFlow flow in Open vSwitch's userspace datapath,
  4. the same rule in nftables, at netdev ingress in the receiving namespace.
Each drop rate is that receiver's own drop counter over the same time. Goals: (1) at least 90%
of (2), and at least 4x (3).

    .venv/bin/python scripts/bench_xdp.py [--seconds 4] [--mode generic|native]
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from apps.firewall.rules import FirewallRule  # noqa: E402
from ebpf.offload import rule_entries  # noqa: E402
from ebpf.xdp import XdpProgram, unavailable  # noqa: E402
from topologies.harness import fresh_bridge  # noqa: E402

GEN, RX, NS, BRIDGE = "bxgen0", "bxrx0", "bxns", "bxbr"
DPORT = 9
TRAFGEN = f"""{{
  eth(da=02:00:00:00:00:02, sa=02:00:00:00:00:01),
  ipv4(saddr=10.0.0.1, daddr=10.0.0.2, ttl=64),
  udp(sport=4000, dport={DPORT}),
  fill(0x00, 18)
}}
"""


def sh(*cmd: str, check: bool = True) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=check).stdout


def veth(rx_netns: bool = False) -> None:
    sh("ip", "link", "add", GEN, "type", "veth", "peer", "name", RX)
    if rx_netns:
        sh("ip", "netns", "add", NS)
        sh("ip", "link", "set", RX, "netns", NS)
        sh("ip", "netns", "exec", NS, "ip", "link", "set", RX, "up")
    else:
        sh("ip", "link", "set", RX, "up")
    sh("ip", "link", "set", GEN, "up")


def teardown() -> None:
    sh("ovs-vsctl", "--if-exists", "del-br", BRIDGE, check=False)
    sh("ip", "link", "del", GEN, check=False)
    sh("ip", "netns", "del", NS, check=False)


def blast(seconds: float, conf: str) -> None:
    """trafgen at full speed for `seconds`."""
    subprocess.run(
        [
            "timeout",
            "-s",
            "INT",
            str(seconds),
            "trafgen",
            "--dev",
            GEN,
            "--conf",
            conf,
        ],
        capture_output=True,
    )


def xdp_rate(function: str, rules: int, seconds: float, conf: str, mode: str) -> float:
    veth()
    try:
        prog = XdpProgram(function)
        if function == "xdp_firewall":
            for i in range(rules):  # 1,000 rules; the test packet meets the last one
                port = DPORT if i == rules - 1 else 10000 + i
                src = (
                    ipaddress.ip_network(f"10.{i % 250}.0.0/16")
                    if port != DPORT and i % 2
                    else None
                )
                for entry in rule_entries(
                    FirewallRule("deny", "udp", src, dst_ports=(port, port)), 100 + i
                ):
                    prog.put(entry)
        prog.attach(RX, mode)
        rule = 100 + rules - 1 if function == "xdp_firewall" else 0
        start = prog.counters([rule])[rule][0]
        blast(seconds, conf)
        dropped = prog.counters([rule])[rule][0] - start
        prog.detach_all()
        return dropped / seconds
    finally:
        teardown()


def ovs_rate(seconds: float, conf: str) -> float:
    veth()
    try:
        fresh_bridge(BRIDGE, RX)
        sh(
            "ovs-ofctl",
            "-O",
            "OpenFlow13",
            "add-flow",
            BRIDGE,
            f"priority=100,udp,tp_dst={DPORT},actions=drop",
        )
        time.sleep(1.0)

        def count() -> int:
            out = sh("ovs-ofctl", "-O", "OpenFlow13", "dump-flows", BRIDGE, f"udp,tp_dst={DPORT}")
            return int(re.search(r"n_packets=(\d+)", out).group(1))

        start = count()
        blast(seconds, conf)
        time.sleep(0.5)
        return (count() - start) / seconds
    finally:
        teardown()


def nft_rate(seconds: float, conf: str) -> float:
    veth(rx_netns=True)
    try:
        rules = (
            f"table netdev bench {{\n  chain ingress {{\n"
            f"    type filter hook ingress device {RX} priority 0;\n"
            f"    udp dport {DPORT} counter drop\n  }}\n}}\n"
        )
        subprocess.run(
            ["ip", "netns", "exec", NS, "nft", "-f", "-"], input=rules, text=True, check=True
        )

        def count() -> int:
            out = sh("ip", "netns", "exec", NS, "nft", "list", "table", "netdev", "bench")
            return int(re.search(r"packets (\d+)", out).group(1))

        start = count()
        blast(seconds, conf)
        return (count() - start) / seconds
    finally:
        teardown()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--rules", type=int, default=1000)
    p.add_argument("--mode", choices=["generic", "native"], default="generic")
    args = p.parse_args()
    problem = unavailable()
    if problem:
        print(f"bench_xdp: cannot run: {problem}", file=sys.stderr)
        return 2
    teardown()
    with tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False) as fh:
        fh.write(TRAFGEN)
    try:
        ours = xdp_rate("xdp_firewall", args.rules, args.seconds, fh.name, args.mode)
        bare = xdp_rate("xdp_drop_all", 0, args.seconds, fh.name, args.mode)
        ovs = ovs_rate(args.seconds, fh.name)
        nft = nft_rate(args.seconds, fh.name)
    finally:
        os.unlink(fh.name)
        teardown()
    print(f"drop rate, 64-byte UDP from trafgen into a veth ({args.mode} XDP)")
    print(f"  (1) our XDP firewall, {args.rules} rules : {ours / 1e6:6.3f} Mpps")
    print(f"  (2) bare XDP drop (the limit)      : {bare / 1e6:6.3f} Mpps")
    print(f"  (3) OVS userspace drop flow        : {ovs / 1e6:6.3f} Mpps")
    print(f"  (4) nftables netdev ingress        : {nft / 1e6:6.3f} Mpps")
    print(f"  (1)/(2) = {ours / bare:5.2f}  (goal >= 0.90)")
    print(f"  (1)/(3) = {ours / ovs:5.2f}  (goal >= 4)" if ovs else "  (3) dropped nothing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
