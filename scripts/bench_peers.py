#!/usr/bin/env python3
"""Benchmark: the suite against FAUCET on the same work, in the same run, as ratios.

FAUCET (1.10.12, on its own os-ken 3.x) runs from `.bench/faucet-venv`, made on first use
(scripts/faucet_peer.py). Every measure runs ours and FAUCET alternately, on the same Open
vSwitch (userspace datapath) or the same fake switch, with the same offered load:

1. Packet-ins handled per second: L2 learning of new MACs on one switch (the fake OpenFlow 1.3
   switch of bench_packet_in.py; FAUCET's packet-ins carry its cookie and VLAN tag, as its
   pipeline sends them).
2. A 10,000-rule ACL on one port of one bridge: seconds from controller start until the switch
   holds every ACL flow; then one rule in the middle edited (a new TCP port) and the config
   reloaded (SIGHUP for both): seconds until the new flow is on the switch, and the OpenFlow
   messages the controller sent for it, counted on the wire by a relay (scripts/benchlib.py):
   the changes (flow, group, meter, port and table mods, set-config, bundles) and barriers,
   not the periodic echoes, stats polls and LLDP packet-outs both send meanwhile
   (scripts/ofkinds.py). "Quiet" (the work is over) is 2 s without a change or barrier.
3. Controller restart under traffic on a linear,3 Mininet lab: a 50 pps ping h1 -> h3 while the
   controller is stopped and started again: pings lost, flow-mods deleting and adding flows.
4. Memory: the controller's RSS with the 10,000-rule ACL loaded (read in 2): ours as it
   starts by default (the firewall's XDP fast path loaded, compiled by bcc in a child process,
   and attached), and ours with the fast path off, OpenFlow alone, the same work as FAUCET.

Every ratio is oriented so that > 1 means ours is better: rates ours/FAUCET, times, counts and
memory FAUCET/ours. Counts that can be zero are compared as (FAUCET + 1) / (ours + 1). Medians
of alternating rounds. Needs root, Open vSwitch and Mininet; run under the lab lock:

    flock /tmp/osken-lab.lock .venv/bin/python scripts/bench_peers.py [--rounds 3]
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
from collections.abc import Callable
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import faucet_peer  # noqa: E402
from bench_packet_in import N_PORTS, FakeSwitch  # noqa: E402
from benchlib import OpenFlowTap, rss_mib, until  # noqa: E402

from apps.firewall.compile import FirewallCompiler  # noqa: E402
from apps.firewall.rules import load_rules_file  # noqa: E402
from controller.pipeline import PIPELINE  # noqa: E402
from topologies.harness import Controller, Lab, free_port, fresh_bridge, ofctl  # noqa: E402
from topologies.linear import LinearTopo  # noqa: E402

BRIDGE, VETH, VETH_PEER = "benchpeer", "bpeer0", "bpeer1"
BRIDGE_DPID = 0xBF
OURS, OURS_NO_XDP = "ours", "ours, XDP fast path off"
OURS_ACL_TABLE = PIPELINE.table("firewall")
FAUCET_ACL_TABLE = 0  # FAUCET's port_acl table comes first when a port has acl_in
QUIET_S = 2.0  # seconds without a change or barrier: the controller's work is over


@dataclass
class Result:
    """One measure: per-round values for both, and how to turn them into a ratio."""

    name: str
    unit: str
    higher_is_better: bool
    plus_one: bool = False
    ours: list[float] = field(default_factory=list)
    faucet: list[float] = field(default_factory=list)

    def ratios(self) -> list[float]:
        out = []
        for o, f in zip(self.ours, self.faucet, strict=True):
            if self.plus_one:
                o, f = o + 1, f + 1
            out.append(o / f if self.higher_is_better else f / o)
        return sorted(out)

    def row(self) -> str:
        ours, theirs = statistics.median(self.ours), statistics.median(self.faucet)
        rounds = ", ".join(f"{r:.2f}" for r in self.ratios())
        return (
            f"| {self.name} | {ours:,.4g} {self.unit} | {theirs:,.4g} {self.unit} | "
            f"**{statistics.median(self.ratios()):.2f}** ({rounds}) |"
        )


# --- 1. packet-ins ----------------------------------------------------------------------------


def packet_in_rate(
    start: Callable[[int], object], stop: Callable[[object], None], count: int, **switch
) -> float:
    """New MACs handled per second; `switch`: FakeSwitch's cookie and vid for this controller."""
    port = free_port()
    ctl = start(port)
    try:
        sw = FakeSwitch(port, dpid=0xBE, **switch)
        end = time.time() + 3.0  # handshake, table reads, port probation
        while time.time() < end:
            sw.pump(0.05)
        sw.run(200, 64, start=1_000_000)  # warm caches
        seconds = sw.run(count, 64, start=1)
        sw.close()
    finally:
        stop(ctl)
    return count / seconds


def ours_start(apps: list[str], config: str | None = None) -> Callable[[int], Controller]:
    return lambda port: Controller(apps, port=port, config=config).start()


def faucet_start(doc: dict) -> Callable[[int], faucet_peer.FaucetProcess]:
    return lambda port: faucet_peer.FaucetProcess(doc, port).start()


def bench_packet_in(rounds: int, count: int) -> Result:
    res = Result("packet-ins handled per second, new MACs, window 64", "/s", True)
    doc = faucet_peer.config({"bench": faucet_peer.switch_dp(0xBE, list(range(1, N_PORTS + 1)))})
    for _ in range(rounds):
        res.ours.append(
            packet_in_rate(ours_start(["apps/l2_learning.py"]), lambda c: c.stop(), count)
        )
        res.faucet.append(
            packet_in_rate(
                faucet_start(doc), lambda c: c.stop(), count, cookie=faucet_peer.COOKIE, vid=100
            )
        )
        print(f"  packet-ins: ours {res.ours[-1]:.0f}/s, FAUCET {res.faucet[-1]:.0f}/s", flush=True)
    return res


# --- 2. the 10,000-rule ACL -------------------------------------------------------------------


def make_rules(n: int) -> list[dict]:
    """n rules both controllers express one flow each: TCP/UDP to one port from a /24."""
    return [
        {
            "action": "deny" if i % 3 else "allow",
            "protocol": "tcp" if i % 2 else "udp",
            "source": f"10.{(i >> 8) & 255}.{i & 255}.0/24",
            "port": 1000 + i % 50000,
        }
        for i in range(n)
    ]


def faucet_acl(rules: list[dict]) -> list[dict]:
    """The same rules as a FAUCET ACL; FAUCET drops what no rule allows, so a last allow-all
    gives the suite's `default: allow`."""
    out = []
    for r in rules:
        proto = r["protocol"]
        out.append(
            {
                "rule": {
                    "dl_type": 0x800,
                    "nw_proto": 6 if proto == "tcp" else 17,
                    "ipv4_src": r["source"],
                    f"{proto}_dst": r["port"],
                    "actions": {"allow": int(r["action"] == "allow")},
                }
            }
        )
    out.append({"rule": {"actions": {"allow": 1}}})
    return out


def vsctl(*args: str) -> None:
    subprocess.run(["ovs-vsctl", "--timeout=10", *args], check=True)


def bridge_with_port() -> None:
    """A fresh fail-secure bridge with one up veth as OpenFlow port 1, datapath id 0xbf. The
    veth has IPv6 off, so the kernel's router solicitations and MLD reports never reach the
    switch: no host is learned and no flow changes but the ACL's."""
    subprocess.run(["ip", "link", "del", VETH], capture_output=True, check=False)
    subprocess.run(
        ["ip", "link", "add", VETH, "type", "veth", "peer", "name", VETH_PEER], check=True
    )
    for dev in (VETH, VETH_PEER):
        subprocess.run(["sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1"], check=True)
        subprocess.run(["ip", "link", "set", dev, "up"], check=True)
    fresh_bridge(BRIDGE)
    vsctl("set", "bridge", BRIDGE, f"other-config:datapath-id={BRIDGE_DPID:016x}")
    vsctl("add-port", BRIDGE, VETH, "--", "set", "interface", VETH, "ofport_request=1")


def table_count(table: int) -> int:
    out = ofctl("dump-aggregate", BRIDGE, f"table={table}")
    return int(re.search(r"flow_count=(\d+)", out).group(1))


@dataclass
class AclSide:
    """How one controller runs the ACL scenario."""

    name: str
    table: int
    expected: int  # ACL flows the switch holds once every rule is in
    start: Callable[[int], object]
    stop: Callable[[object], None]
    pid: Callable[[object], int]
    edit: Callable[[object, list[dict]], None]  # new rules -> config rewritten and reloaded


def acl_round(side: AclSide, rules: list[dict], edit_index: int, new_port: int) -> dict:
    """Cold start to every flow, RSS once quiet, then one edit: seconds, and the changes and
    barriers sent for it (`edit_messages`; `edit_kinds` has every kind, periodic ones too)."""
    bridge_with_port()
    port = free_port()
    with OpenFlowTap(upstream=port, port=free_port()) as tap:
        t0 = time.time()
        ctl = side.start(port)
        try:
            vsctl("set-controller", BRIDGE, f"tcp:127.0.0.1:{tap.port}")
            installed = until(lambda: table_count(side.table) >= side.expected, 600, 0.05) - t0
            until(lambda: tap.quiet_for(QUIET_S), 900, 0.1)
            rss = rss_mib(side.pid(ctl))
            tap.reset()
            edited = [dict(r) for r in rules]
            edited[edit_index]["port"] = new_port
            t1 = time.time()
            side.edit(ctl, edited)
            want = f"tp_dst={new_port}"
            enforced = (
                until(
                    lambda: want in ofctl("dump-flows", BRIDGE, f"table={side.table},tcp,{want}"),
                    900,  # FAUCET re-reads and re-compiles the whole ACL: minutes
                    0.002,
                )
                - t1
            )
            until(lambda: tap.quiet_for(QUIET_S), 900, 0.1)
            messages = tap.work()
            flow_mods = dict(tap.flow_mods)
            kinds = dict(tap.kinds)
            by_type = dict(tap.sent)
        finally:
            side.stop(ctl)
    return {
        "edit_by_type": by_type,
        "edit_kinds": kinds,
        "install_s": installed,
        "rss_mib": rss,
        "edit_s": enforced,
        "edit_messages": messages,
        "edit_flow_mods": flow_mods,
    }


def acl_sides(rules: list[dict], folder: str) -> list[AclSide]:
    rules_path = os.path.join(folder, "rules.json")
    section = "firewall:\n  default: allow\n  rules_file: rules.json\n"
    cfg, cfg_no_xdp = os.path.join(folder, "lab.yaml"), os.path.join(folder, "lab-no-xdp.yaml")
    with open(cfg, "w") as fh:
        fh.write(section)
    with open(cfg_no_xdp, "w") as fh:  # OpenFlow alone, as FAUCET works
        fh.write(section + "  xdp: {mode: 'off'}\n")

    def write_rules(rs: list[dict]) -> None:
        with open(rules_path, "w") as fh:
            json.dump({"rules": rs}, fh)

    write_rules(rules)
    compiler = FirewallCompiler(PIPELINE)
    ours_expected = 1 + sum(
        len(compiler.rule_flows(r, 30000, False)) for r in load_rules_file(rules_path)
    )

    def ours_begin(config: str) -> Callable[[int], Controller]:
        def begin(port: int) -> Controller:
            write_rules(rules)
            return Controller(["apps/firewall"], port=port, config=config).start()

        return begin

    def ours_edit(ctl: Controller, rs: list[dict]) -> None:
        write_rules(rs)
        ctl.proc.send_signal(signal.SIGHUP)

    def faucet_doc(rs: list[dict]) -> dict:
        return faucet_peer.config(
            {"bench": faucet_peer.switch_dp(BRIDGE_DPID, [1], acl="bench")},
            {"bench": faucet_acl(rs)},
        )

    return [
        AclSide(
            name,
            OURS_ACL_TABLE,
            ours_expected,
            ours_begin(config),
            lambda c: c.stop(),
            lambda c: c.proc.pid,
            ours_edit,
        )
        for name, config in ((OURS, cfg), (OURS_NO_XDP, cfg_no_xdp))
    ] + [
        AclSide(
            "FAUCET",
            FAUCET_ACL_TABLE,
            len(rules) + 1,
            faucet_start(faucet_doc(rules)),
            lambda c: c.stop(),
            lambda c: c.pid,
            lambda c, rs: c.reload(faucet_doc(rs)),
        ),
    ]


def bench_acl(rounds: int, n_rules: int) -> list[Result]:
    install = Result(
        f"{n_rules:,}-rule ACL, controller start until the switch holds it", "s", False
    )
    edit = Result("one rule edited in the middle, reload until enforced", "s", False)
    messages = Result(
        "OpenFlow changes and barriers sent for that edit (on the wire)", "msgs", False, True
    )
    memory = Result(f"controller RSS with the {n_rules:,}-rule ACL", "MiB", False)
    memory_of = Result(
        "the same, ours with the XDP fast path off (OpenFlow alone, as FAUCET)", "MiB", False
    )
    rules = make_rules(n_rules)
    edit_index = n_rules // 2 + 1  # odd: a TCP rule
    folder = tempfile.mkdtemp(prefix="benchpeer-")
    sides = acl_sides(rules, folder)
    try:
        for n in range(rounds):
            for side in sides:
                got = acl_round(side, rules, edit_index, 60000 + n)
                print(f"  ACL {side.name}: {got}", flush=True)
                if side.name == OURS_NO_XDP:
                    memory_of.ours.append(got["rss_mib"])
                    continue
                theirs = side.name == "FAUCET"
                for res, key in (
                    (install, "install_s"),
                    (edit, "edit_s"),
                    (messages, "edit_messages"),
                    (memory, "rss_mib"),
                ):
                    (res.faucet if theirs else res.ours).append(got[key])
                if theirs:
                    memory_of.faucet.append(got["rss_mib"])
    finally:
        vsctl("--if-exists", "del-br", BRIDGE)
        subprocess.run(["ip", "link", "del", VETH], capture_output=True, check=False)
    return [install, edit, messages, memory, memory_of]


# --- 3. restart under traffic -----------------------------------------------------------------


def restart_round(
    start: Callable[[int], object], stop: Callable[[object], None], ping_s: float = 10.0
) -> dict:
    """linear,3 through the tap; ping h1 -> h3 at 50 pps; restart the controller 3 s in."""
    topo = LinearTopo(3)
    port = free_port()
    with OpenFlowTap(upstream=port, port=free_port()) as tap, Lab(topo, tap.port) as lab:
        ctl = start(port)
        try:
            if lab.wait_connected(timeout=60) is None:
                raise RuntimeError("linear,3 never reached a loss-free pingall")
            until(lambda: tap.quiet_for(QUIET_S), 60, 0.1)
            h1, h3 = lab.host("h1"), lab.host("h3")
            ping = h1.popen(
                ["ping", "-i", "0.02", "-w", f"{ping_s:g}", "-q", h3.IP()],
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(3.0)
            tap.reset()
            stop(ctl)
            ctl = start(port)
            out, _ = ping.communicate(timeout=ping_s + 30)
            until(lambda: tap.quiet_for(QUIET_S), 60, 0.1)
            mods = dict(tap.flow_mods)
        finally:
            stop(ctl)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    sent, received = int(m.group(1)), int(m.group(2))
    return {
        "pings_sent": sent,
        "pings_lost": sent - received,
        "deleted": mods.get("delete", 0) + mods.get("delete_strict", 0),
        "added": mods.get("add", 0),
        "modified": mods.get("modify", 0) + mods.get("modify_strict", 0),
    }


def linear3_faucet() -> dict:
    """FAUCET's config for the lab: s1 (h1, s2), s2 (h2, s1, s3), s3 (h3, s2), one VLAN."""
    ports = {1: [1, 2], 2: [1, 2, 3], 3: [1, 2]}
    return faucet_peer.config({f"s{i}": faucet_peer.switch_dp(i, p) for i, p in ports.items()})


def bench_restart(rounds: int) -> list[Result]:
    lost = Result("controller restart under a 50 pps ping, linear,3: pings lost", "", False, True)
    churn = Result("flow-mods deleting or adding flows during that restart", "", False, True)
    doc = linear3_faucet()
    for _ in range(rounds):
        for theirs, start in (
            (False, ours_start(["apps/l2_learning.py"])),
            (True, faucet_start(doc)),
        ):
            got = restart_round(start, lambda c: c.stop())
            (lost.faucet if theirs else lost.ours).append(got["pings_lost"])
            (churn.faucet if theirs else churn.ours).append(got["deleted"] + got["added"])
            print(f"  restart {'FAUCET' if theirs else 'ours'}: {got}", flush=True)
    return [lost, churn]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per measure")
    p.add_argument("--count", type=int, default=5000, help="new MACs per packet-in round")
    p.add_argument("--rules", type=int, default=10000)
    p.add_argument(
        "--acl-rounds",
        type=int,
        default=1,
        help="rounds of the ACL measures (FAUCET needs minutes per 10,000-rule load)",
    )
    p.add_argument("--only", choices=["packet_in", "acl", "restart"], action="append")
    args = p.parse_args()
    faucet_peer.ensure_venv()
    peer = faucet_peer.versions()
    only = set(args.only or ["packet_in", "acl", "restart"])
    results: list[Result] = []
    if "packet_in" in only:
        results.append(bench_packet_in(args.rounds, args.count))
    if "acl" in only:
        results += bench_acl(args.acl_rounds, args.rules)
    if "restart" in only:
        results += bench_restart(args.rounds)
    print(
        f"\nours vs {peer}, medians of alternating rounds ({args.rounds}; ACL {args.acl_rounds}); "
        "ratio > 1: ours better"
    )
    print("| measure | ours | FAUCET | ratio (per round) |")
    print("|---|---|---|---|")
    for res in results:
        print(res.row())
    worst = min(results, key=lambda r: statistics.median(r.ratios()))
    print(f"peer: {peer}; worst ratio {statistics.median(worst.ratios()):.2f} ({worst.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
