#!/usr/bin/env python3
"""Service chains with a real firewall container: throughput and time to first packet.

One run, in Mininet (topologies/vnflab.py: h1 on s1, h2 on s2, the seed's virtual-firewall
with 2 replicas on s1), prints:
- iperf3 TCP throughput h1 -> h2 on the direct path and through the chain, and their ratio;
- seconds from `deploy` (containers started, plugged in) to the first connection through the
  chain, over a few rounds (the image already built: building it is a one-off, measured
  separately by scripts/build_vnf_images.sh).

    sudo .venv/bin/python scripts/bench_vnf.py [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from topologies.vnflab import CHAIN, ENDPOINTS, vnf_lab  # noqa: E402


def iperf(lab, seconds: int) -> float:
    """Mbit/s h1 -> h2 over one TCP stream."""
    server = lab.host("h2").popen(["iperf3", "-s", "-1"])
    try:
        time.sleep(0.5)
        out = lab.host("h1").cmd(f"iperf3 -c {lab.host('h2').IP()} -t {seconds} -J")
        return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e6
    finally:
        server.terminate()
        server.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    with vnf_lab(pathlib.Path(tempfile.mkdtemp(prefix="bench-vnf-")), chain=False) as env:
        direct = iperf(env.lab, a.seconds)
        env.reconfigure(ENDPOINTS + CHAIN)
        env.wait_open(22, False)
        chained = iperf(env.lab, a.seconds)
        print(f"iperf3 h1 -> h2, one TCP stream, {a.seconds} s:")
        print(f"  direct path          {direct:8.0f} Mbit/s")
        print(f"  through the firewall {chained:8.0f} Mbit/s  (ratio {chained / direct:.2f})")
        times = []
        for _ in range(a.rounds):
            env.deployer.delete("virtual-firewall")
            env.wait_open(80, False)  # the chain fails closed with no replica
            start = time.time()
            env.deploy()
            env.wait_open(80, True, timeout=30)
            times.append(time.time() - start)
        print(
            f"deploy to first connection through the chain: median {statistics.median(times):.2f} s"
            f" over {a.rounds} rounds (min {min(times):.2f}, max {max(times):.2f}), 2 replicas"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
