#!/usr/bin/env python3
"""Plot bench_scale.py's results: each measure against switches, log-log, one small PNG.

Runs in the bench venv (matplotlib lives there, not in `.venv`):

    .bench/faucet-venv/bin/python scripts/plot_scale.py results/scale.json docs/scale.png
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SERIES = [  # key, label
    ("cold_start_s", "cold start to 0%-loss pingall (s)"),
    ("reconciled_s", "controller start to every switch reconciled (s)"),
    ("flows_per_switch", "flows per switch"),
    ("controller_cpu_s", "controller CPU until converged (s)"),
    ("controller_rss_mib", "controller RSS (MiB)"),
    ("edit_s", "one-rule firewall edit (s)"),
    ("pingall_s", "one pingall, converged: the measurement itself (s)"),
]


def main(src: str, dst: str) -> int:
    with open(src) as fh:
        done = [r for r in json.load(fh) if "cold_start_s" in r]
    xs = [r["switches"] for r in done]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for key, label in SERIES:
        ys = [r[key] for r in done]
        ax.plot(xs, [y / ys[0] for y in ys], marker="o", label=label)
    ax.plot(xs, [x / xs[0] for x in xs], "k--", label="linear in switches")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(xs, [f"{x}\n(k={r['k']})" for x, r in zip(xs, done, strict=True)])
    ax.minorticks_off()
    ax.set_xlabel("switches in the fat-tree")
    ax.set_ylabel(f"relative to k={done[0]['k']}")
    ax.set_title("How the suite's costs grow (userspace OVS, 2 cores)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(dst)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
