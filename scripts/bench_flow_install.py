#!/usr/bin/env python3
"""Benchmark (b): install 10,000 flows through the core vs `ovs-ofctl add-flows` of the same flows.

Both go into an Open vSwitch bridge on the userspace datapath; each is timed until the switch
reports every flow (`ovs-ofctl dump-aggregate`). ovs-ofctl writes straight into the switch, so it
is the switch's own limit. Goal: the core within 2x of it. Needs root and a running OVS.

    .venv/bin/python scripts/bench_flow_install.py [--flows 10000]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_apps"))

from bulk_flows import bench_macs  # noqa: E402

from controller.pipeline import PIPELINE  # noqa: E402
from topologies.harness import Controller, fresh_bridge, ofctl  # noqa: E402
from topologies.wait import until  # noqa: E402

BRIDGE = "benchflows"


def vsctl(*args: str) -> None:
    subprocess.run(["ovs-vsctl", "--timeout=10", *args], check=True)


def flow_count() -> int:
    out = ofctl("dump-aggregate", BRIDGE)
    return int(re.search(r"flow_count=(\d+)", out).group(1))


def wait_count(target: int, timeout: float = 120) -> float:
    if until(lambda: flow_count() >= target, timeout, interval=0.01):
        return time.time()
    raise RuntimeError(f"switch never reached {target} flows (has {flow_count()})")


def with_ofctl(n: int) -> float:
    fresh_bridge(BRIDGE)
    table = PIPELINE.table("forwarding")
    with tempfile.NamedTemporaryFile("w", suffix=".flows", delete=False) as fh:
        for mac in bench_macs(n):
            fh.write(f"table={table},priority=100,dl_dst={mac},actions=output:1\n")
    start = time.time()
    subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "add-flows", BRIDGE, fh.name], check=True)
    seconds = wait_count(n) - start
    os.unlink(fh.name)
    return seconds


def with_core(n: int) -> float:
    fresh_bridge(BRIDGE)
    os.environ["BENCH_FLOWS"] = str(n)
    with Controller(["scripts/bench_apps/bulk_flows.py"]) as ctl:
        vsctl("set-controller", BRIDGE, f"tcp:127.0.0.1:{ctl.port}")
        if not ctl.wait_log(r"bulk: handing", timeout=30):
            raise RuntimeError(ctl.log()[-2000:])
        start = float(
            re.search(r"bulk: handing \d+ flows to the core at ([\d.]+)", ctl.log()).group(1)
        )
        return wait_count(n + PIPELINE.n_tables + 1) - start  # + table-miss and LLDP trap


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--flows", type=int, default=10000)
    args = p.parse_args()
    try:
        ofctl = with_ofctl(args.flows)
        core = with_core(args.flows)
    finally:
        vsctl("--if-exists", "del-br", BRIDGE)
    print(f"installing {args.flows} flows into OVS (userspace datapath)")
    print(f"  ovs-ofctl add-flows : {ofctl:6.2f} s  ({args.flows / ofctl:8.0f} flows/s)")
    print(f"  through the core    : {core:6.2f} s  ({args.flows / core:8.0f} flows/s)")
    print(f"  ratio core/ofctl    : {core / ofctl:6.2f}  (goal <= 2.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
