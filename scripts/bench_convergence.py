#!/usr/bin/env python3
"""Benchmark (c): fat-tree k=4, seconds from controller start to a pingall with 0% loss.

The Mininet fat-tree (20 switches, 16 hosts, userspace OVS) is up first, its switches retrying a
controller that is not there yet; then the controller starts. The clock runs from that start
until one all-pairs ping round (240 pings, hosts in parallel) loses nothing. For scale, the same
run also times one pingall on the converged network: the part of the figure that is only the
measurement. Goal: at most 10 s. Needs root, OVS and Mininet.

    .venv/bin/python scripts/bench_convergence.py [--k 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import reconciled_at  # noqa: E402

from topologies.fattree import FatTreeTopo  # noqa: E402
from topologies.harness import Controller, Lab, free_port  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--timeout", type=float, default=60)
    args = p.parse_args()
    topo = FatTreeTopo(args.k)
    port = free_port()
    with Lab(topo, port) as lab:
        time.sleep(2.0)  # the switches are now retrying an absent controller
        ctl = Controller(["apps/l2_learning.py"], port=port)
        start = time.time()
        ctl.start()
        try:
            took = None
            while time.time() - start < args.timeout:
                lost, sent = lab.pingall(wait=0.5)
                if sent and not lost:
                    took = time.time() - start
                    break
            t0 = time.time()
            lost, _ = lab.pingall(wait=0.5)
            floor = time.time() - t0
            ready = reconciled_at(ctl.log())
        finally:
            ctl.stop()
    if took is None:
        print(f"no loss-free pingall within {args.timeout:.0f} s")
        return 1
    n_sw, n_h = len(topo.switches()), len(topo.hosts())
    print(f"fat-tree k={args.k}: {n_sw} switches, {n_h} hosts, {n_h * (n_h - 1)} pings per round")
    if ready is not None:
        print(f"  all switches reconciled : {ready - start:6.2f} s after controller start")
    print(f"  first 0%-loss pingall   : {took:6.2f} s after controller start  (goal <= 10 s)")
    print(f"  one pingall, converged  : {floor:6.2f} s  (lost {lost})")
    print(f"  ratio to the 10 s goal  : {took / 10:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
