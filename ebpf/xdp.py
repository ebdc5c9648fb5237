"""Attach ebpf/xdp_firewall.c to interfaces and keep its maps in step, without bcc in this process.

One program object serves every interface it is attached to, so all of them share the maps:
updating a rule is one map write, seen by every port at once, with no reload.

    prog = XdpProgram()                 # compiles once, in a child process (about a second)
    prog.attach("s1-eth1")              # native mode if the driver has it, else generic
    prog.sync(entries)                  # entries from ebpf.offload.plan
    prog.counters()                     # {rule id: (packets, bytes)}, summed over CPUs
    prog.close()                        # (or at exit) its pins in bpffs are removed

bcc (clang and LLVM) compiles and loads the program in a short-lived child (`python -m
ebpf.compile`), which pins the program and its maps in bpffs and exits; this process opens the
pins and does everything else with libbpf's plain bpf(2) calls (ebpf/libbpf.py). Kept in the
controller, bcc cost about 100 MiB resident (docs/performance.md).
"""

from __future__ import annotations

import errno
import glob
import importlib.util
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import weakref
from collections.abc import Iterable

from ebpf import libbpf
from ebpf.compile import MAPS, TABLES
from ebpf.offload import LpmEntry

BPFFS = "/sys/fs/bpf"
PIN_PREFIX = f"{BPFFS}/osken-xdp-"  # + "<pid>-<random>": one directory per XdpProgram
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
XDP_FLAGS_SKB_MODE = 1 << 1  # generic: any device
XDP_FLAGS_DRV_MODE = 1 << 2  # native: in the driver
MODES = {"generic": XDP_FLAGS_SKB_MODE, "native": XDP_FLAGS_DRV_MODE}
_RULE = struct.Struct("=I")  # the tries' value: u32 rule id
_COUNTER = struct.Struct("=QQ")  # struct counter { u64 packets; u64 bytes; }
_STDERR_TAIL = 2000  # characters of the child's stderr an error carries
COMPILE_TIMEOUT = 120  # seconds; the compile takes about one


def unavailable() -> str | None:
    """Why the fast path cannot run here, or None if it can (checked without compiling, and
    without importing bcc)."""
    if os.geteuid() != 0:
        return "it needs root (CAP_BPF and CAP_NET_ADMIN)"
    if importlib.util.find_spec("bcc") is None:
        return "bcc is not installed (Debian python3-bpfcc; scripts/setup.sh installs it)"
    if not os.path.exists(f"/lib/modules/{os.uname().release}/build"):
        return "no kernel headers for bcc (scripts/setup.sh links Debian's)"
    try:
        libbpf.Libbpf()
    except OSError as exc:
        return str(exc)
    return None


def ensure_bpffs() -> bool:
    """Mount bpffs on /sys/fs/bpf unless it is (as bcc and ip do); True if this mounted it."""
    if os.path.ismount(BPFFS):
        return False
    subprocess.run(["mount", "-t", "bpf", "bpf", BPFFS], check=True, capture_output=True)
    return True


def attached_prog_id(ifname: str) -> int | None:
    """The kernel's id of the XDP program attached to `ifname` (rtnetlink IFLA_XDP_PROG_ID,
    through pyroute2); None when there is none or the interface is gone.

    One RTM_GETLINK for that interface's index: pyroute2's lookup by name dumps every link
    of the namespace (588 ms a call beside a fat-tree k=8 lab's 725 interfaces, 2 ms this way).
    """
    from pyroute2 import IPRoute, NetlinkError

    try:
        index = socket.if_nametoindex(ifname)
    except OSError:  # no such interface (any more)
        return None
    with IPRoute() as ip:
        try:
            links = ip.link("get", index=index)
        except NetlinkError:  # gone since
            links = []
    xdp = links[0].get_attr("IFLA_XDP") if links else None
    return xdp.get_attr("IFLA_XDP_PROG_ID") if xdp is not None else None


def remove_stale_pins() -> list[str]:
    """Remove the pin directories of XdpPrograms whose process is gone (killed before it could
    clean up); returns them."""
    gone = []
    for path in glob.glob(f"{PIN_PREFIX}*"):
        m = re.fullmatch(re.escape(PIN_PREFIX) + r"(\d+)-\w+", path)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            shutil.rmtree(path, ignore_errors=True)
            gone.append(path)
    return gone


def compile_in_child(pin_dir: str, function: str) -> dict:
    """Run ebpf/compile.py in a child process; its JSON answer (pin paths, compile time).
    RuntimeError naming what failed, with the tail of the child's stderr."""
    what = f"compiling {function} from ebpf/xdp_firewall.c with bcc"
    try:
        done = subprocess.run(  # cwd: `-m` imports this tree's ebpf package
            [sys.executable, "-m", "ebpf.compile", pin_dir, "--function", function],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=COMPILE_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{what} took over {COMPILE_TIMEOUT} s: stopped") from None
    if done.returncode != 0:
        tail = done.stderr.strip()[-_STDERR_TAIL:] or "(no output)"
        raise RuntimeError(f"{what} failed (child exit {done.returncode}): {tail}")
    return _pins(done.stdout, what)


def _pins(stdout: str, what: str) -> dict:
    """The child's answer: its last line, JSON with the program's pin, every map's pin and the
    compile time. RuntimeError quoting what came instead."""
    lines = stdout.strip().splitlines()
    try:
        pins = json.loads(lines[-1]) if lines else None
    except ValueError:
        pins = None
    if (
        isinstance(pins, dict)
        and isinstance(pins.get("prog"), str)
        and isinstance(pins.get("maps"), dict)
        and set(pins["maps"]) >= set(MAPS)
        and isinstance(pins.get("compile_seconds"), int | float)
    ):
        return pins
    raise RuntimeError(f"{what}: the child answered {stdout[-_STDERR_TAIL:]!r}, not its pins")


class _Map:
    """One pinned map: its fd and sizes (bytes) as the kernel reports them."""

    def __init__(self, bpf: libbpf.Libbpf, name: str, fd: int) -> None:
        self.name, self.fd = name, fd
        info = bpf.map_info(fd, name)
        self.key_size, self.value_size = info.key_size, info.value_size


def _close(fds: list[int], own_dir: str | None) -> None:
    """Close the fds and remove a pin directory made for this object (not one a caller named):
    what is attached keeps the program and its maps alive in the kernel."""
    for fd in fds:
        os.close(fd)
    fds.clear()
    if own_dir is not None:
        shutil.rmtree(own_dir, ignore_errors=True)


class XdpProgram:
    """The loaded program (pinned in bpffs), where it is attached, and what its maps hold.

    `pin_dir`: where the maps are pinned and found again by a later process (scripts/xdp_fw.py);
    left in place on close. Without it, a directory of this object's own under /sys/fs/bpf,
    removed on close or at exit. RuntimeError if the program does not compile or load;
    OSError (with errno) if a pin, map or interface call fails.
    """

    def __init__(self, function: str = "xdp_firewall", pin_dir: str | None = None) -> None:
        self._bpf = bpf = libbpf.Libbpf()
        ensure_bpffs()
        remove_stale_pins()
        own_dir = None
        if pin_dir is None:
            prefix = os.path.basename(f"{PIN_PREFIX}{os.getpid()}-")
            pin_dir = own_dir = tempfile.mkdtemp(prefix=prefix, dir=BPFFS)
        self.pin_dir = pin_dir  # where the program and its maps are pinned
        fds: list[int] = []
        self._finalizer = weakref.finalize(self, _close, fds, own_dir)
        try:
            pins = compile_in_child(pin_dir, function)
            self.compile_seconds: float = pins["compile_seconds"]
            self._prog_fd = bpf.obj_get(pins["prog"])
            fds.append(self._prog_fd)
            self.prog_id = bpf.prog_id(self._prog_fd, pins["prog"])
            self._maps = {}
            for name, path in pins["maps"].items():
                fds.append(bpf.obj_get(path))
                self._maps[name] = _Map(bpf, name, fds[-1])
        except BaseException:
            self.close()
            raise
        self._cpus = bpf.possible_cpus()
        self.attached: dict[str, int] = {}  # interface -> flags it was attached with
        self.prog_ids: dict[str, int | None] = {}  # interface -> the kernel's id of ours there
        self.entries: dict[tuple, LpmEntry] = {}

    def close(self) -> None:
        """Let go of the program and maps here; attachments stay (detach_all first for none)."""
        self._finalizer()

    # --- interfaces ----------------------------------------------------------------------------

    def attach(self, ifname: str, mode: str = "auto") -> str:
        """Attach to an interface; returns the mode used ("native" or "generic")."""
        if ifname in self.attached:
            return "native" if self.attached[ifname] == XDP_FLAGS_DRV_MODE else "generic"
        tries = ["native", "generic"] if mode == "auto" else [mode]
        for i, name in enumerate(tries):
            try:
                self._bpf.xdp_attach(
                    socket.if_nametoindex(ifname), self._prog_fd, MODES[name], ifname
                )
            except OSError:  # the last mode's error is the one
                if i == len(tries) - 1:
                    raise
                continue
            self.attached[ifname] = MODES[name]
            self.prog_ids[ifname] = self.prog_id
            return name
        raise AssertionError("unreachable")

    def adopt(self, ifname: str, mode: str, prog_id: int | None) -> None:
        """Take on an attachment another process made with this program's pinned maps (the
        lab CLI, scripts/xdp_fw.py): `mode` as attach returned it, `prog_id` the kernel's id
        it recorded (None: whatever program is attached there now)."""
        self.attached[ifname] = MODES[mode]
        self.prog_ids[ifname] = prog_id if prog_id is not None else attached_prog_id(ifname)

    def detach(self, ifname: str) -> bool:
        """Take our program off `ifname`; True if it was there. A program someone else has
        attached since (another replica of the controller on this machine, which replaced
        ours) is left alone: False."""
        flags = self.attached.pop(ifname, None)
        ours = self.prog_ids.pop(ifname, None)
        if flags is None or ours is None:
            return False
        try:
            index = socket.if_nametoindex(ifname)
            expected = self._bpf.prog_fd_by_id(ours, ifname)
        except OSError:  # the interface is gone, or the program attached there is unloaded
            return False
        try:  # one step: never takes off a program that replaced ours since we looked
            self._bpf.xdp_detach(index, flags, ifname, expected)
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                return False
            raise
        finally:
            os.close(expected)
        return True

    def detach_all(self) -> None:
        for ifname in list(self.attached):
            self.detach(ifname)

    # --- maps ----------------------------------------------------------------------------------

    def _key(self, entry: LpmEntry) -> tuple[_Map, bytes]:
        table = self._maps[entry.table]
        return table, libbpf.lpm_key(entry.prefixlen, entry.data, table.key_size)

    def _write(self, entry: LpmEntry) -> None:
        table, key = self._key(entry)
        self._bpf.update(table.fd, key, _RULE.pack(entry.rule), table.name)
        self.entries[entry.key] = entry

    def sync(self, entries: Iterable[LpmEntry]) -> tuple[int, int]:
        """Make the tries hold exactly `entries`; returns (written, deleted)."""
        want = {e.key: e for e in entries}
        written = deleted = 0
        for key in self.entries.keys() - want.keys():
            table, k = self._key(self.entries.pop(key))
            self._bpf.delete(table.fd, k, table.name)
            deleted += 1
        for key, entry in want.items():
            if self.entries.get(key) != entry:
                self._write(entry)
                written += 1
        return written, deleted

    def put(self, entry: LpmEntry) -> None:
        """Write one entry, whatever this object knows of the maps (pinned maps, from a CLI)."""
        self._write(entry)

    def remove(self, entry: LpmEntry) -> bool:
        """Delete one entry; False if the trie did not hold it."""
        table, k = self._key(entry)
        self.entries.pop(entry.key, None)
        return self._bpf.delete(table.fd, k, table.name)

    def stored(self) -> list[LpmEntry]:
        """Every entry the tries hold (including ones written by another process); the data
        as long as the key's field (zero-padded)."""
        out = []
        for name in TABLES:
            table = self._maps[name]
            for key in list(self._bpf.keys(table.fd, table.key_size, name)):
                value = self._bpf.lookup(table.fd, key, table.value_size, name)
                if value is not None:  # deleted meanwhile
                    prefixlen, data = libbpf.split_lpm_key(key)
                    out.append(LpmEntry(name, prefixlen, data, _RULE.unpack(value)[0]))
        return out

    def counters(self, rules: Iterable[int] | None = None) -> dict[int, tuple[int, int]]:
        """Packets and bytes dropped per rule id, summed over every CPU."""
        table = self._maps["counters"]
        slot = libbpf.percpu_slot_size(table.value_size)
        out = {}
        for rule in set(rules) if rules is not None else {e.rule for e in self.entries.values()}:
            value = self._bpf.lookup(table.fd, _RULE.pack(rule), slot * self._cpus, "counters")
            if value is None:  # past the array's end: no such rule id
                continue
            per_cpu = [_COUNTER.unpack_from(value, cpu * slot) for cpu in range(self._cpus)]
            out[rule] = (sum(c[0] for c in per_cpu), sum(c[1] for c in per_cpu))
        return out
