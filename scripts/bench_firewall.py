#!/usr/bin/env python3
"""Benchmark: the firewall's 10,000-rule install and one-rule edits, against ovs-ofctl.

1. A controller runs `apps/firewall` on an Open vSwitch bridge (userspace datapath) with an
   empty rule set. The config is rewritten with 10,000 rules (rules.json) and SIGHUP is sent;
   the clock runs until the switch holds every compiled flow.
2. The same flows, dumped from that switch, go into a fresh bridge with `ovs-ofctl add-flows`.
3. One rule is edited (a new port) and SIGHUP sent; the clock runs until the switch holds the
   new rule's flow. Done five times at 10,000 rules and five times at 100, medians reported.

Goals: the install within 2x ovs-ofctl's time; an edit enforced in under 100 ms.

    .venv/bin/python scripts/bench_firewall.py [--rules 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from apps.firewall.compile import FirewallCompiler  # noqa: E402
from apps.firewall.rules import load_rules_file  # noqa: E402
from controller.pipeline import PIPELINE  # noqa: E402
from topologies.harness import Controller, fresh_bridge  # noqa: E402
from topologies.wait import until  # noqa: E402

BRIDGE = "benchfw"
TABLE = PIPELINE.table("firewall")


def ofctl(*args: str) -> str:
    return subprocess.run(
        ["ovs-ofctl", "-O", "OpenFlow13", *args], capture_output=True, text=True, check=True
    ).stdout


def vsctl(*args: str) -> None:
    subprocess.run(["ovs-vsctl", "--timeout=10", *args], check=True)


def table_count(bridge: str) -> int:
    out = ofctl("dump-aggregate", bridge, f"table={TABLE}")
    return int(re.search(r"flow_count=(\d+)", out).group(1))


def when(check, timeout: float = 120.0) -> float:
    """time.time() once check() is true, polled every 2 ms. Raises RuntimeError on timeout."""
    if not until(check, timeout, interval=0.002):
        raise RuntimeError("timed out")
    return time.time()


def make_rules(n: int) -> list[dict]:
    rules = []
    for i in range(n):
        rule = {
            "action": "deny" if i % 3 else "allow",
            "protocol": "tcp" if i % 2 else "udp",
            "source": f"10.{(i >> 8) & 255}.{i & 255}.0/24",
        }
        rule["port"] = f"{2000 + i % 500}-{2040 + i % 500}" if i % 10 == 0 else 1000 + i % 60000
        rules.append(rule)
    return rules


def write_rules(folder: str, rules: list[dict]) -> None:
    with open(os.path.join(folder, "rules.json"), "w") as fh:
        json.dump({"rules": rules}, fh, indent=1)


def edits(ctl: Controller, folder: str, rules: list[dict], times: int) -> list[float]:
    """Seconds from SIGHUP to the edited rule's flow on the switch, `times` edits."""
    out = []
    for n in range(times):
        i = len(rules) // 2 + n * 2 + 1  # odd: a tcp rule
        rules[i] = {**rules[i], "port": 60000 + n}
        write_rules(folder, rules)
        start = time.time()
        ctl.proc.send_signal(signal.SIGHUP)
        want = f"tp_dst={60000 + n}"  # asked of OVS by match, so each poll is quick
        done = when(lambda w=want: w in ofctl("dump-flows", BRIDGE, f"table={TABLE},tcp,{w}"))
        out.append(done - start)
        time.sleep(0.3)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rules", type=int, default=10000)
    args = p.parse_args()
    folder = tempfile.mkdtemp(prefix="benchfw-")
    cfg = os.path.join(folder, "lab.yaml")
    with open(cfg, "w") as fh:
        fh.write("firewall:\n  rules_file: rules.json\n")
    write_rules(folder, [])
    try:
        fresh_bridge(BRIDGE)
        with Controller(["apps/firewall"], config=cfg) as ctl:
            vsctl("set-controller", BRIDGE, f"tcp:127.0.0.1:{ctl.port}")
            if not ctl.wait_log(r"reconciled \(connect\)", timeout=30):
                raise RuntimeError(ctl.log()[-2000:])
            small = make_rules(100)
            write_rules(folder, small)
            ctl.proc.send_signal(signal.SIGHUP)
            when(lambda: table_count(BRIDGE) > 100)
            small_edits = edits(ctl, folder, small, 5)

            rules = make_rules(args.rules)
            compiler = FirewallCompiler(PIPELINE)
            write_rules(folder, rules)
            expected = 1 + sum(
                len(compiler.rule_flows(r, 30000, False))
                for r in load_rules_file(os.path.join(folder, "rules.json"))
            )
            start = time.time()
            ctl.proc.send_signal(signal.SIGHUP)
            core_s = when(lambda: table_count(BRIDGE) >= expected) - start
            dump = [
                line.strip()
                for line in ofctl("--no-stats", "dump-flows", BRIDGE, f"table={TABLE}").splitlines()
                if "priority" in line
            ]
            big_edits = edits(ctl, folder, rules, 5)
        flows_file = os.path.join(folder, "flows.txt")
        with open(flows_file, "w") as fh:
            fh.write("\n".join(dump) + "\n")
        fresh_bridge(BRIDGE)
        start = time.time()
        ofctl("add-flows", BRIDGE, flows_file)
        ofctl_s = when(lambda: table_count(BRIDGE) >= len(dump)) - start
    finally:
        vsctl("--if-exists", "del-br", BRIDGE)
    n = len(rules)
    print(f"firewall: {n} rules -> {expected - 1} flows ({(expected - 1) / n:.2f} flows per rule)")
    print(f"  install via reload  : {core_s:6.2f} s")
    print(f"  ovs-ofctl add-flows : {ofctl_s:6.2f} s  (same {len(dump)} flows)")
    print(f"  ratio               : {core_s / ofctl_s:6.2f}  (goal <= 2.0)")
    print(
        f"  one-rule edit, {n} rules: median {statistics.median(big_edits) * 1000:5.0f} ms "
        f"(max {max(big_edits) * 1000:.0f}; goal < 100 ms)"
    )
    print(
        f"  one-rule edit, 100 rules  : median {statistics.median(small_edits) * 1000:5.0f} ms "
        f"(max {max(small_edits) * 1000:.0f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
