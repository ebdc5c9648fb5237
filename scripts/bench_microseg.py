#!/usr/bin/env python3
"""Microsegmentation at identity scale: 1,000 endpoints in 20 identities under 100 policies.

Prints, from one run on this machine:
- compile time of the whole config (load, check, identities, verdicts, flows, diff);
- flows per switch, against what a pairwise compiler would need for the same verdicts
  (one flow per allowed source endpoint, destination endpoint and port block): goal < 10,000;
- the time from a one-label change (a reload: read, check, compile, diff) to its flow-mods
  ready to send: goal < 200 ms.

The switch is the strict in-memory OpenFlow 1.3 model of the unit tests. The label-change time
is the controller's alone (the model's own bundle handling is left out); Open vSwitch adds its
bundle commit, a few milliseconds for a handful of flow-mods (bench_firewall.py measures it
end to end).

    .venv/bin/python scripts/bench_microseg.py [--endpoints 1000] [--identities 20] [--policies 100]
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from apps.l2_learning import L2Learning  # noqa: E402
from apps.microseg import Microseg  # noqa: E402
from apps.microseg.compile import COOKIE  # noqa: E402
from controller.config import load_config  # noqa: E402
from controller.core import Core  # noqa: E402
from tests.fakenet import FakeNetwork  # noqa: E402
from topologies.harness import Controller, fresh_bridge  # noqa: E402
from topologies.wait import until  # noqa: E402

NAMESPACES = 4
NAME_LABEL = "kubernetes.io/metadata.name"


def write_lab(folder: str, endpoints: int, identities: int, policies: int) -> str:
    apps = identities // NAMESPACES
    lines = ["namespaces:"]
    lines += [f"  - {{name: ns{n}, labels: {{tier: t{n % 2}}}}}" for n in range(NAMESPACES)]
    lines.append("endpoints:")
    for i in range(endpoints):
        ident = i % identities
        ip = ipaddress.IPv4Address("10.1.0.1") + i
        lines.append(
            f"  - {{name: ep{i}, namespace: ns{ident // apps}, ip: {ip},"
            f" labels: {{app: app{ident % apps}}}}}"
        )
    lines.append("policies: [policies.yaml]")
    with open(os.path.join(folder, "lab.yaml"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    docs = []
    for p in range(policies):
        target, peer_a, peer_b = p % identities, (p * 7 + 3) % identities, (p * 11 + 5) % identities
        ports = [80 + p % 5, 443] if p % 3 else [8000]
        rule_ports = ", ".join(f"{{port: {port}}}" for port in ports)
        if p % 4 == 3:
            rule_ports = "{port: 10000, endPort: 10255}"
        docs.append(
            f"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
            f"metadata: {{name: p{p}, namespace: ns{target // apps}}}\n"
            f"spec:\n  podSelector: {{matchLabels: {{app: app{target % apps}}}}}\n"
            f"  ingress:\n  - from:\n"
            f"    - namespaceSelector: {{matchLabels: {{{NAME_LABEL}: ns{peer_a // apps}}}}}\n"
            f"      podSelector: {{matchLabels: {{app: app{peer_a % apps}}}}}\n"
            f"    - namespaceSelector: {{matchLabels: {{tier: t{peer_b % 2}}}}}\n"
            f"      podSelector: {{matchLabels: {{app: app{peer_b % apps}}}}}\n"
            f"    ports: [{rule_ports}]\n"
        )
    with open(os.path.join(folder, "policies.yaml"), "w") as fh:
        fh.write("---\n".join(docs))
    return os.path.join(folder, "lab.yaml")


def pairwise_flows(ms: Microseg) -> int:
    """Flows a compiler without identities would need: per allowed endpoint pair and port block."""
    world, v = ms.world, ms._verdicts
    total = 0
    for (direction, identity), entries in v.allow.items():
        members = len(world.members.get(identity, ()))
        for entry in entries:
            peers = (
                len(world.members.get(entry.peer[1], ()))
                if entry.peer[0] == "id"
                else len(world.endpoints)
            )
            blocks = (
                1
                if entry.l4 is None
                else len(ms.compiler._entry_matches(direction, 4, 0, 0, entry))
            )
            total += members * peers * blocks
    return total


BRIDGE = "bms0"
EP0 = "name: ep0, namespace: ns0, ip: 10.1.0.1, labels: {app: app0}"


def relabel(cfg: str, text: str, round_: int) -> None:
    """Round 0, 2, ...: ep0 moves to another app; rounds 1, 3, ...: back."""
    new = EP0.replace("app0}", f"app{1 + round_ % 2}}}") if round_ % 2 == 0 else EP0
    with open(cfg, "w") as fh:
        fh.write(text.replace(EP0, new))


def ep0_identity() -> str | None:
    """The identity Open vSwitch's destination entry for ep0 writes, as the switch has it."""
    out = subprocess.run(
        [
            "ovs-ofctl",
            "-O",
            "OpenFlow13",
            "--no-stats",
            "dump-flows",
            BRIDGE,
            "table=3,ip,nw_dst=10.1.0.1",
        ],
        capture_output=True,
        text=True,
    ).stdout
    m = re.search(r"write_metadata:(0x[0-9a-f]+)", out)
    return m.group(1) if m else None


def on_open_vswitch(cfg: str, rounds: int) -> list[float]:
    """SIGHUP with one label changed, until the switch's flow says so: end to end, real OVS."""
    with open(cfg) as fh:
        text = fh.read()
    times = []
    try:
        fresh_bridge(BRIDGE)
        with Controller(["apps/microseg"], config=cfg) as ctl:
            subprocess.run(
                ["ovs-vsctl", "set-controller", BRIDGE, f"tcp:127.0.0.1:{ctl.port}"], check=True
            )
            if not ctl.wait_log(r"reconciled \(connect\)", timeout=60):
                raise RuntimeError(ctl.log()[-2000:])
            until(lambda: ep0_identity() is not None, 30, interval=0.1)
            for r in range(rounds):
                before = ep0_identity()
                relabel(cfg, text, r)
                started = time.perf_counter()
                ctl.proc.send_signal(signal.SIGHUP)
                while ep0_identity() == before and time.perf_counter() - started < 10:
                    pass
                times.append(time.perf_counter() - started)
    finally:
        subprocess.run(["ovs-vsctl", "--if-exists", "del-br", BRIDGE], check=False)
        with open(cfg, "w") as fh:
            fh.write(text)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--endpoints", type=int, default=1000)
    ap.add_argument("--identities", type=int, default=20)
    ap.add_argument("--policies", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-ovs", action="store_true", help="skip the Open vSwitch measurement")
    a = ap.parse_args()
    folder = tempfile.mkdtemp(prefix="bench-microseg-")
    cfg = write_lab(folder, a.endpoints, a.identities, a.policies)

    core = Core()
    core.add_app(L2Learning)
    ms = core.add_app(Microseg)
    net = FakeNetwork(core)
    net.add_switch(1, 4)
    net.now = 1000.0
    net.start()
    started = time.perf_counter()
    net.deliver(core.reload(lambda: load_config(cfg), net.now))
    compile_s = time.perf_counter() - started
    sw = net.switches[1]
    ours = sum(1 for t in sw.tables for e in t if e.flow.cookie == COOKIE)
    pairwise = pairwise_flows(ms)

    times = []
    with open(cfg) as fh:
        text = fh.read()
    for r in range(a.rounds):
        relabel(cfg, text, r)
        before = sum(net.messages_sent.values())
        started = time.perf_counter()
        outbox = core.reload(lambda: load_config(cfg), net.now)
        times.append(time.perf_counter() - started)  # the controller's part: ready to send
        net.deliver(outbox)
        sent = sum(net.messages_sent.values()) - before
    label_ms = statistics.median(times) * 1000

    print(f"{a.endpoints} endpoints, {len(ms.world.identities)} identities, {a.policies} policies")
    print(f"compile (load, check, compile, install on one switch): {compile_s * 1000:.0f} ms")
    print(f"flows per switch: {ours} (goal < 10,000); pairwise would need {pairwise}")
    print(f"ratio ours / pairwise: {ours / max(pairwise, 1):.3f}")
    print(
        f"one-label change, reload to flow-mods ready to send: median {label_ms:.0f} ms over "
        f"{a.rounds} rounds, max {max(times) * 1000:.0f} ms (goal < 200 ms); "
        f"{sent} messages in the last round"
    )
    with open(cfg, "w") as fh:
        fh.write(text)  # as written: the rounds left ep0 relabelled
    if not a.no_ovs:
        ovs = on_open_vswitch(cfg, a.rounds)
        print(
            f"the same on Open vSwitch, SIGHUP to the switch's flow changed: median "
            f"{statistics.median(ovs) * 1000:.0f} ms, max {max(ovs) * 1000:.0f} ms "
            f"(goal < 200 ms)"
        )
        print(f"ratio Open vSwitch label change / 200 ms goal: {statistics.median(ovs) / 0.2:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
