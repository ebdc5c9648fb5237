#!/usr/bin/env python3
"""Benchmark: how the suite's costs grow with the network, fat-tree k = 4, 6, 8.

For each k (20, 45, 80 switches; 16, 54, 128 hosts) a Mininet fat-tree on the userspace
datapath is up first; then the controller (apps/firewall, which brings L2 along, with 20
rules) starts and the clock runs:

- cold start: controller start to the first all-pairs pingall with 0% loss, beside the time
  until every switch was reconciled (from the controller's log) and how long one pingall takes
  on the converged network (all hosts ping at once, hosts squared pings: part of the cold start
  is the measurement itself);
- flows per switch once converged (mean and max over switches);
- the controller's CPU seconds and RSS at that point, and Open vSwitch's CPU seconds over the
  same interval (which of the two was busy says where the limit is);
- reroute: milliseconds of loss of a 1 kHz ping between the first and the last host when the
  busiest aggregation-core link it crosses is cut;
- a one-rule firewall edit: SIGHUP until every switch holds the edited rule's flow (switches
  polled in turn, so the figure includes up to one poll of every switch: `poll_pass_s`, timed
  just before, says how long one such pass takes).

Each measure's growth is fitted as y ~ switches^b (least squares on logs) and printed. A k that
does not converge within --timeout is reported as the limit. Results go to results/scale.json;
with --plot, the curves go to a PNG (matplotlib from the bench venv, scripts/plot_scale.py).

    flock /tmp/osken-lab.lock .venv/bin/python scripts/bench_scale.py [--k 4 6 8] \
        [--plot docs/scale.png]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import cpu_seconds, reconciled_at, rss_mib, until  # noqa: E402

from controller.pipeline import PIPELINE  # noqa: E402
from topologies.fattree import FatTreeTopo  # noqa: E402
from topologies.harness import Controller, Lab, free_port, ofctl  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VSWITCHD_PID = "/var/run/openvswitch/ovs-vswitchd.pid"
FW_TABLE = PIPELINE.table("firewall")
N_RULES = 20
POLLERS = 8  # ovs-ofctl processes polling switches at once
MEASURES = {  # key: (label, unit)
    "cold_start_s": ("cold start to first 0%-loss pingall", "s"),
    "reconciled_s": ("controller start to every switch reconciled", "s"),
    "pingall_s": ("one pingall on the converged network", "s"),
    "flows_per_switch": ("flows per switch (mean)", "flows"),
    "controller_cpu_s": ("controller CPU until converged", "s"),
    "controller_rss_mib": ("controller RSS", "MiB"),
    "reroute_ms": ("one link failure: loss", "ms"),
    "edit_s": ("one-rule firewall edit, until on every switch", "s"),
}


def rules(edit: int | None = None) -> str:
    """The firewall section: N_RULES TCP rules on high ports (pings pass); `edit` moves the
    middle rule to that port."""
    lines = ["firewall:", "  default: allow", "  rules:"]
    for i in range(N_RULES):
        port = edit if (edit is not None and i == N_RULES // 2) else 20000 + i
        action = "deny" if i % 2 else "allow"
        lines.append(f"    - {{action: {action}, protocol: tcp, port: {port}}}")
    return "\n".join(lines) + "\n"


def vswitchd_cpu() -> float:
    with open(VSWITCHD_PID) as fh:
        return cpu_seconds(int(fh.read().strip()))


def flow_counts(switches: list[str]) -> list[int]:
    return [
        int(re.search(r"flow_count=(\d+)", ofctl("dump-aggregate", sw)).group(1)) for sw in switches
    ]


def holding(switches: list[str], want: str) -> list[str]:
    """The switches whose firewall table has a TCP flow whose text contains `want`, polled by
    POLLERS ovs-ofctl processes at once."""

    def has(sw: str) -> bool:
        return want in ofctl("dump-flows", sw, f"table={FW_TABLE},tcp")

    with ThreadPoolExecutor(POLLERS) as pool:
        return [sw for sw, ok in zip(switches, pool.map(has, switches), strict=True) if ok]


def edit_time(ctl: Controller, cfg: str, switches: list[str], port: int) -> float:
    """Seconds from SIGHUP until every switch holds the edited rule's flow."""
    with open(cfg, "w") as fh:
        fh.write(rules(edit=port))
    start = time.time()
    ctl.proc.send_signal(signal.SIGHUP)
    want = f"tp_dst={port}"
    waiting = list(switches)

    def all_have() -> bool:
        done = set(holding(waiting, want))
        waiting[:] = [sw for sw in waiting if sw not in done]
        return not waiting

    return until(all_have, 60, 0.0) - start


def measure(k: int, timeout: float) -> dict:
    topo = FatTreeTopo(k)
    switches, hosts = topo.switches(), topo.hosts()
    out: dict = {"k": k, "switches": len(switches), "hosts": len(hosts)}
    folder = tempfile.mkdtemp(prefix="benchscale-")
    cfg = os.path.join(folder, "lab.yaml")
    with open(cfg, "w") as fh:
        fh.write(rules())
    port = free_port()
    t_lab = time.time()
    with Lab(topo, port) as lab:
        out["lab_start_s"] = time.time() - t_lab
        time.sleep(2.0)  # the switches now retry an absent controller
        ctl = Controller(["apps/firewall"], port=port, config=cfg)
        ovs0 = vswitchd_cpu()
        start = time.time()
        ctl.start()
        try:
            took = None
            while time.time() - start < timeout:
                lost, sent = lab.pingall(wait=0.5)
                if sent and not lost:
                    took = time.time() - start
                    break
            if took is None:  # say which side was busy while it did not converge
                wall = time.time() - start
                out["limit"] = (
                    f"no 0%-loss pingall within {timeout:g} s (last: {lost}/{sent} lost); "
                    f"controller {cpu_seconds(ctl.proc.pid) / wall:.0%} of a core, "
                    f"ovs-vswitchd {(vswitchd_cpu() - ovs0) / wall:.0%}"
                )
                return out
            out["cold_start_s"] = took
            ready = reconciled_at(ctl.log())
            out["reconciled_s"] = ready - start if ready is not None else float("nan")
            out["controller_cpu_s"] = cpu_seconds(ctl.proc.pid)
            out["vswitchd_cpu_s"] = vswitchd_cpu() - ovs0
            out["controller_rss_mib"] = rss_mib(ctl.proc.pid)
            t_ping = time.time()
            lost, _ = lab.pingall(wait=0.5)
            out["pingall_s"] = time.time() - t_ping
            out["pingall_lost"] = lost
            counts = flow_counts(switches)
            out["flows_per_switch"] = sum(counts) / len(counts)
            out["flows_max"] = max(counts)
            out["flows_total"] = sum(counts)
            a, b, sent, lost, ms = lab.cut_under_ping(
                hosts[0], hosts[-1], lambda x, y: {x[0], y[0]} == {"a", "c"}
            )
            out["reroute_link"] = f"{a}-{b}"
            out["reroute_ms"] = ms
            time.sleep(2.0)
            t_pass = time.time()
            holding(switches, "tp_dst=40000")
            out["poll_pass_s"] = time.time() - t_pass
            out["edit_s"] = edit_time(ctl, cfg, switches, 40000)
        finally:
            ctl.stop()
    return out


def exponent(xs: list[float], ys: list[float]) -> float | None:
    """b of y = a * x^b fitted by least squares on logs; None with fewer than two points."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    var = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / var


def report(results: list[dict]) -> list[str]:
    done = [r for r in results if "cold_start_s" in r]
    lines = [
        "| k | switches | hosts | cold start s (all reconciled; one pingall) "
        "| flows/switch (max) | controller CPU s | vswitchd CPU s | RSS MiB | reroute loss ms "
        "| edit s (one poll pass) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "cold_start_s" not in r:
            lines.append(f"| {r['k']} | {r['switches']} | {r['hosts']} | {r['limit']} |")
            continue
        lines.append(
            f"| {r['k']} | {r['switches']} | {r['hosts']} | {r['cold_start_s']:.1f} "
            f"({r['reconciled_s']:.1f}; {r['pingall_s']:.1f}) | "
            f"{r['flows_per_switch']:.0f} ({r['flows_max']}) | {r['controller_cpu_s']:.1f} | "
            f"{r['vswitchd_cpu_s']:.1f} | {r['controller_rss_mib']:.0f} | "
            f"{r['reroute_ms']:.0f} | {r['edit_s']:.2f} ({r['poll_pass_s']:.2f}) |"
        )
    xs = [r["switches"] for r in done]
    lines.append("")
    lines.append("growth exponent b of y ~ switches^b (1.0 = linear):")
    for key, (label, _) in MEASURES.items():
        b = exponent(xs, [r[key] for r in done])
        lines.append(f"  {label:50s} {'n/a' if b is None else f'{b:.2f}'}")
    b_total = exponent(xs, [r["flows_total"] for r in done])
    lines.append(
        f"  {'flows in all switches':50s} {'n/a' if b_total is None else f'{b_total:.2f}'}"
    )
    for r in done:
        wall = r["cold_start_s"]
        lines.append(
            f"k={r['k']}: over the cold start the controller used "
            f"{r['controller_cpu_s'] / wall:.0%} of a core, ovs-vswitchd "
            f"{r['vswitchd_cpu_s'] / wall:.0%} (2 cores in all)"
        )
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--k", type=int, nargs="+", default=[4, 6, 8])
    p.add_argument("--timeout", type=float, default=300, help="seconds to converge, per k")
    p.add_argument("--out", default=os.path.join(ROOT, "results", "scale.json"))
    p.add_argument("--plot", help="write the curves to this PNG (bench venv's matplotlib)")
    args = p.parse_args()
    results = []
    for k in args.k:
        results.append(measure(k, args.timeout))
        print(json.dumps(results[-1]), flush=True)
        if "limit" in results[-1]:
            break  # a larger fat-tree will not converge either
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(results, fh, indent=1)
    print("\n".join(report(results)))
    if args.plot:
        from faucet_peer import ensure_venv_package

        python = ensure_venv_package("matplotlib")
        subprocess.run(
            [python, os.path.join(ROOT, "scripts", "plot_scale.py"), args.out, args.plot],
            check=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
