#!/usr/bin/env python3
"""The XDP firewall for labs, on any interface, without the controller (as root).

    xdp_fw.py attach IFACE [--mode auto|native|generic]
    xdp_fw.py block PREFIX [--rule ID]          # drop sources in PREFIX (IPv4 or IPv6)
    xdp_fw.py deny tcp|udp PORT [--source PREFIX] [--rule ID]
    xdp_fw.py unblock PREFIX
    xdp_fw.py stats                             # every entry and its drop counters
    xdp_fw.py detach IFACE                      # the last detach also removes the maps

The program stays attached after this command exits; its maps (and the program last compiled)
are pinned in bpffs (/sys/fs/bpf/osken-xdp), which is how the next command finds them. Rules
change by map updates: the program is never reloaded for them.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from apps.firewall.rules import FirewallRule  # noqa: E402
from ebpf.offload import blocked_entries, rule_entries  # noqa: E402
from ebpf.xdp import BPFFS, XdpProgram, ensure_bpffs, unavailable  # noqa: E402

PIN_DIR = f"{BPFFS}/osken-xdp"
STATE = "/run/osken-xdp.json"  # where the program is attached: bpffs does not say


def _load_state() -> dict:
    try:
        with open(STATE) as fh:
            return json.load(fh)
    except FileNotFoundError:
        return {"attached": {}, "mounted_bpffs": False}


def _save_state(state: dict) -> None:
    with open(STATE, "w") as fh:
        json.dump(state, fh)


def _program(state: dict) -> XdpProgram:
    if ensure_bpffs():
        state["mounted_bpffs"] = True
    return XdpProgram(pin_dir=PIN_DIR)


def _forget_all(state: dict) -> None:
    """Nothing carries the program any more: remove the maps, and bpffs if we mounted it."""
    shutil.rmtree(PIN_DIR, ignore_errors=True)
    if state.get("mounted_bpffs"):
        subprocess.run(["umount", BPFFS], check=False)
    os.unlink(STATE)


def _attachment(recorded) -> dict:
    """An attachment as the state file records it: {"mode", "id"} (a bare mode string in state
    files from before program ids were kept)."""
    return {"mode": recorded, "id": None} if isinstance(recorded, str) else recorded


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("attach")
    a.add_argument("iface")
    a.add_argument("--mode", choices=["auto", "native", "generic"], default="auto")
    sub.add_parser("detach").add_argument("iface")
    b = sub.add_parser("block")
    b.add_argument("prefix")
    b.add_argument("--rule", type=int, default=0xFFFF)
    u = sub.add_parser("unblock")
    u.add_argument("prefix")
    d = sub.add_parser("deny")
    d.add_argument("protocol", choices=["tcp", "udp"])
    d.add_argument("port", type=int)
    d.add_argument("--source")
    d.add_argument("--rule", type=int, default=1)
    sub.add_parser("stats")
    args = p.parse_args()

    problem = unavailable()
    if problem:
        print(f"xdp_fw: the fast path cannot run here: {problem}", file=sys.stderr)
        return 2
    state = _load_state()
    attached = state["attached"]
    if args.command == "detach" and args.iface not in attached:
        print(f"xdp_fw: not attached to {args.iface}", file=sys.stderr)
        return 1
    if args.command == "stats" and not os.path.isdir(PIN_DIR):
        print("attached: nowhere (no program loaded)")
        return 0
    prog = _program(state)
    if args.command == "attach":
        mode = prog.attach(args.iface, args.mode)
        attached[args.iface] = {"mode": mode, "id": prog.prog_ids[args.iface]}
        _save_state(state)
        print(f"attached to {args.iface} ({mode} mode)")
    elif args.command == "detach":
        where = _attachment(attached.pop(args.iface))
        prog.adopt(args.iface, where["mode"], where["id"])
        if prog.detach(args.iface):
            print(f"detached from {args.iface}")
        else:
            print(f"{args.iface} holds another program now: left as it is")
        if attached:
            _save_state(state)
        else:
            _forget_all(state)  # the maps go when nothing uses them
        return 0
    elif args.command in ("block", "unblock"):
        net = ipaddress.ip_network(args.prefix, strict=False)
        for entry in blocked_entries(net, getattr(args, "rule", 0xFFFF)):
            if args.command == "block":
                prog.put(entry)
            elif not prog.remove(entry):
                print(f"xdp_fw: {net} was not blocked", file=sys.stderr)
                return 1
        print(f"{args.command}ed {net}")
    elif args.command == "deny":
        source = ipaddress.ip_network(args.source, strict=False) if args.source else None
        rule = FirewallRule("deny", args.protocol, source, dst_ports=(args.port, args.port))
        for entry in rule_entries(rule, args.rule):
            prog.put(entry)
        print(f"denied {rule.describe()} as rule {args.rule}")
    else:
        entries = prog.stored()
        counts = prog.counters(e.rule for e in entries)
        modes = {i: _attachment(w)["mode"] for i, w in attached.items()}
        print(f"attached: {', '.join(f'{i} ({m})' for i, m in modes.items()) or 'nowhere'}")
        for e in sorted(entries, key=lambda e: (e.rule, e.table)):
            packets, nbytes = counts.get(e.rule, (0, 0))
            print(
                f"rule {e.rule:5d}  {e.table:8s} /{e.prefixlen:<3d} {e.data.hex():40s} "
                f"{packets:10d} packets {nbytes:12d} bytes"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
