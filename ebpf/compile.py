"""Compile and load ebpf/xdp_firewall.c with bcc, pin it in bpffs, and exit (a child process).

    python -m ebpf.compile PIN_DIR [--function xdp_firewall]

Run by ebpf/xdp.py in a short-lived process of its own, so bcc, clang and LLVM (about 100 MiB
resident) never enter the controller. The maps are pinned by the program itself
(`-DPIN_DIR`: maps already pinned there are reused, which is how scripts/xdp_fw.py keeps its
rules between commands); the loaded function is pinned as PIN_DIR/prog_FUNCTION, replacing an
older pin. Prints one JSON line on stdout:

    {"prog": "/sys/fs/bpf/.../prog_xdp_firewall", "maps": {"blocked4": "...", ...},
     "compile_seconds": 0.9}

Exits 1 with bcc's error on stderr if anything fails. Needs root and bpffs mounted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "xdp_firewall.c")
# The maps xdp_firewall.c pins: its LPM tries, then the per-rule drop counters.
TABLES = ("blocked4", "blocked6", "ports4", "ports6", "protos4", "protos6")
MAPS = (*TABLES, "counters")


def compile_and_pin(pin_dir: str, function: str) -> dict:
    """Load `function` with every map pinned in `pin_dir`; the pin paths and compile time."""
    from bcc import BPF
    from bcc.libbcc import lib

    os.makedirs(pin_dir, exist_ok=True)
    start = time.perf_counter()
    bpf = BPF(src_file=SOURCE.encode(), cflags=["-w", f'-DPIN_DIR="{pin_dir}"'])
    fn = bpf.load_func(function.encode(), BPF.XDP)
    seconds = time.perf_counter() - start
    prog = os.path.join(pin_dir, f"prog_{function}")
    if os.path.exists(prog):
        os.unlink(prog)
    if lib.bpf_obj_pin(fn.fd, prog.encode()) != 0:
        raise OSError(f"cannot pin the program at {prog}")
    maps = {name: os.path.join(pin_dir, name) for name in MAPS}
    missing = [path for path in maps.values() if not os.path.exists(path)]
    if missing:
        raise OSError(f"the program did not pin {', '.join(missing)}")
    return {"prog": prog, "maps": maps, "compile_seconds": round(seconds, 3)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("pin_dir")
    p.add_argument("--function", default="xdp_firewall")
    args = p.parse_args()
    try:
        pins = compile_and_pin(args.pin_dir, args.function)
    except Exception as exc:  # bcc raises plain Exception; the parent reads stderr
        print(f"ebpf.compile: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(pins))
    return 0


if __name__ == "__main__":
    sys.exit(main())
