#!/usr/bin/env python3
"""Weighted splits on a real Open vSwitch: our two methods against a plain select group.

The issue tracker calls this the canary benchmark (bench_canary.py); it keeps its name.

One run, in Mininet (topologies/serviceslab.py), prints:
- per weight set, the share of 2,000 new TCP connections each backend got: configured, method
  "exact" (the controller picks each connection by smooth weighted round-robin), method
  "switch" (a select group whose buckets weights.switch_buckets chose: a 256-value table), a
  plain select group (the weights themselves as bucket weights, written over the switch
  method's groups with ovs-ofctl for the measurement), and what Open vSwitch's table gives
  each select group (weights.ovs_select_shares); the worst error of each, as a ratio of the
  plain select group's;
- the time to open the connections each way, as connections per second (the exact method puts
  the controller on each connection's first packet);
- failover: seconds until a dead backend gets no new connection (goal < 1 s), and the loss
  of a 1 ms ping while a spine link is cut (goal < 50 ms), and while an aggregation-core
  link of a k=4 fat-tree is cut, each as a ratio to its goal.

    sudo .venv/bin/python scripts/bench_services.py [--connections 2000]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from apps.services.compile import select_group_id  # noqa: E402
from apps.services.weights import (  # noqa: E402
    bucket_weights,
    ovs_select_shares,
    switch_buckets,
)
from topologies.fattree import FatTreeTopo  # noqa: E402
from topologies.harness import Controller, Lab  # noqa: E402
from topologies.serviceslab import BACKENDS, service_config, services_lab  # noqa: E402

WEIGHT_SETS = [
    {"v1-a": 90, "v2-a": 10},
    {"v1-a": 70, "v2-a": 30},
    {"v1-a": 99, "v2-a": 1},
    {"v1-a": 33, "v2-a": 33, "v3-a": 34},
    {"v1-a": 95, "v2-a": 5},
    {"v1-a": 80, "v2-a": 20, "v0": 0},
]


def shares(got: dict[str, int], weights: dict[str, int], n: int) -> list[float]:
    return [got.get(BACKENDS[name], 0) * 100 / n for name in weights]


def row(label: str, values: list[float]) -> str:
    return f"  {label:<22}" + " ".join(f"{v:6.2f}" for v in values)


METHODS = {"exact": "exact", "switch": "switch", "plain": "switch"}  # measured: configured
LABELS = {"exact": "method exact %", "switch": "method switch %", "plain": "plain select %"}


def ofctl(*args: str) -> str:
    cmd = ["ovs-ofctl", "-O", "OpenFlow13", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def plain_select_groups(switches: list[str], weights: list[int]) -> Callable[[], None]:
    """Rewrite the service's select group on each switch with the weights themselves as
    bucket weights (what method "switch" installed before switch_buckets); returns a function
    that puts the controller's groups back. The controller does not re-read groups unless a
    switch reconnects or reports an error, so the rewrite holds while it is measured."""
    gid = select_group_id(0, 0)
    plain = bucket_weights([Fraction(w) for w in weights if w])
    saved = []
    for sw in switches:
        line = next(
            (x.strip() for x in ofctl("dump-groups", sw).splitlines() if f"group_id={gid}," in x),
            None,
        )
        if line is None:
            continue
        head, *buckets = line.split(",bucket=")
        # a weight-1 bucket prints no "weight:" (ofp-group.c ofputil_bucket_format)
        actions = list(dict.fromkeys(b.split("actions=", 1)[1] for b in buckets))
        if len(actions) != len(plain):
            raise RuntimeError(f"{sw}: {len(actions)} backends in {line}, expected {len(plain)}")
        rewritten = "".join(
            f",bucket=weight:{w},actions={a}" for w, a in zip(plain, actions, strict=True)
        )
        ofctl("mod-group", sw, head + rewritten)
        saved.append((sw, line))

    def restore() -> None:
        for sw, line in saved:
            ofctl("mod-group", sw, line)

    return restore


def model(method: str, weights: list[int]) -> list[float]:
    """Percent per weight from Open vSwitch's table for the method's buckets ([] for exact)."""
    if method == "plain":
        return [s * 100 for s in ovs_select_shares(weights) or []]
    if method != "switch":
        return []
    plan = switch_buckets([Fraction(w) for w in weights])
    shares = ovs_select_shares([w for _, w in plan]) or []
    return [
        100 * sum(s for (i, _), s in zip(plan, shares, strict=True) if i == k)
        for k in range(len(weights))
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connections", type=int, default=2000)
    a = ap.parse_args()
    n = a.connections
    worst = {m: 0.0 for m in METHODS}
    worst_model = {"switch": 0.0, "plain": 0.0}
    elapsed = {m: 0.0 for m in METHODS}
    failed = {m: 0 for m in METHODS}
    with services_lab(pathlib.Path(tempfile.mkdtemp(prefix="bench-canary-"))) as lab:
        switches = [sw.name for sw in lab.lab.net.switches]
        for weights in WEIGHT_SETS:
            total = sum(weights.values())
            want = [w * 100 / total for w in weights.values()]
            print("weights " + "/".join(map(str, weights.values())) + f" over {n} connections")
            print(row("configured %", want))
            for method, configured in METHODS.items():
                lab.apply(service_config(weights, method=configured))
                restore = (
                    plain_select_groups(switches, list(weights.values()))
                    if method == "plain"
                    else None
                )
                try:
                    started = time.perf_counter()
                    got = lab.spread(n)
                    elapsed[method] += time.perf_counter() - started
                finally:
                    if restore is not None:
                        restore()
                failed[method] += got.get("fail", 0)
                if got.get("fail"):
                    print(f"  {method}: {got['fail']} connections failed")
                observed = shares(got, weights, n)
                worst[method] = max(
                    worst[method], *(abs(o - w) for o, w in zip(observed, want, strict=True))
                )
                print(row(LABELS[method], observed))
            for method in worst_model:
                table = model(method, list(weights.values()))
                worst_model[method] = max(
                    worst_model[method], *(abs(m - w) for m, w in zip(table, want, strict=True))
                )
                print(row(f"{method} table %", table))
        print()
        print(
            "worst error, points: "
            + ", ".join(f"{m} {worst[m]:.2f}" for m in METHODS)
            + f" (tables alone: switch {worst_model['switch']:.2f}, plain"
            f" {worst_model['plain']:.2f})"
        )
        for m in ("exact", "switch"):
            ratio = worst[m] / worst["plain"] if worst["plain"] else float("nan")
            print(f"ratio {m} / plain select group (worst error): {ratio:.3f}")
        print("failed connections: " + ", ".join(f"{m} {failed[m]}" for m in METHODS))
        rate = {m: len(WEIGHT_SETS) * n / s for m, s in elapsed.items()}
        print(
            "connections opened per second: "
            + ", ".join(f"{m} {rate[m]:.0f}" for m in METHODS)
            + f" (switch / plain {rate['switch'] / rate['plain']:.2f}, exact / plain"
            f" {rate['exact'] / rate['plain']:.2f})"
        )
        lab.apply(service_config({"v1-a": 50, "v2-a": 50}))
        try:
            took = lab.backend_failover("h21")
        finally:
            lab.restore("h21")
        print(
            f"dead backend out of the split: {took * 1000:.0f} ms (ratio to the 1 s goal "
            f"{took:.2f})"
        )
        sent, lost, lost_ms = lab.spine_cut_loss()
        print(
            f"spine link cut under a 1 ms ping: {lost} of {sent} lost, {lost_ms:.1f} ms "
            f"(ratio to the 50 ms goal {lost_ms / 50:.2f})"
        )
    fat_tree_cut()
    return 0


def fat_tree_cut() -> None:
    """The same on a k=4 fat-tree (L2 only): the aggregation-core link h1 -> h16 uses."""
    ctl = Controller(["apps/l2_learning.py"])
    with ctl, Lab(FatTreeTopo(4), ctl.port) as lab:
        if lab.wait_connected(timeout=60) is None:
            raise RuntimeError("the fat-tree never connected")
        a, b, sent, lost, lost_ms = lab.cut_under_ping(
            "h1", "h16", lambda x, y: x.startswith("c") or y.startswith("c")
        )
        print(
            f"fat-tree k=4, link {a}-{b} cut under a 1 ms ping: {lost} of {sent} lost, "
            f"{lost_ms:.1f} ms (ratio to the 50 ms goal {lost_ms / 50:.2f})"
        )


if __name__ == "__main__":
    sys.exit(main())
