"""Load ebpf/xdp_firewall.c with bcc, attach it to interfaces, keep its maps in step.

One program object serves every interface it is attached to, so all of them share the maps:
updating a rule is one map write, seen by every port at once, with no reload.

    prog = XdpProgram()                 # compiles once (about half a second)
    prog.attach("s1-eth1")              # native mode if the driver has it, else generic
    prog.sync(entries)                  # entries from ebpf.offload.plan
    prog.counters()                     # {rule id: (packets, bytes)}, summed over CPUs
"""

from __future__ import annotations

import ctypes
import os
import socket
from collections.abc import Iterable

from ebpf.offload import LpmEntry

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "xdp_firewall.c")
XDP_FLAGS_SKB_MODE = 1 << 1  # generic: any device
XDP_FLAGS_DRV_MODE = 1 << 2  # native: in the driver
MODES = {"generic": XDP_FLAGS_SKB_MODE, "native": XDP_FLAGS_DRV_MODE}
_KEY_FIELD = {"blocked4": "addr", "blocked6": "addr"}  # the other tries call it "data"
TABLES = ("blocked4", "blocked6", "ports4", "ports6", "protos4", "protos6")


def unavailable() -> str | None:
    """Why the fast path cannot run here, or None if it can (checked without compiling)."""
    if os.geteuid() != 0:
        return "it needs root (CAP_BPF and CAP_NET_ADMIN)"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "bcc is not installed (Debian python3-bpfcc; scripts/setup.sh installs it)"
    if not os.path.exists(f"/lib/modules/{os.uname().release}/build"):
        return "no kernel headers for bcc (scripts/setup.sh links Debian's)"
    return None


def release_free_heap() -> None:
    """Hand the C heap's free pages back to the kernel (glibc's malloc_trim(0), malloc(3)).

    bcc compiles in this process with clang and LLVM and frees what they used, but glibc keeps
    it mapped: measured 206 MiB resident after compiling xdp_firewall.c, 126 MiB after this
    (100 -> 20 MiB anonymous; the rest is bcc's own library code). A no-op without glibc.
    """
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)


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


class XdpProgram:
    """The compiled program, where it is attached, and what its maps hold."""

    def __init__(self, function: str = "xdp_firewall", pin_dir: str | None = None) -> None:
        from bcc import BPF

        cflags = ["-w"] + ([f'-DPIN_DIR="{pin_dir}"'] if pin_dir else [])
        self._bpf = BPF(src_file=SOURCE.encode(), cflags=cflags)
        self._fn = self._bpf.load_func(function.encode(), BPF.XDP)
        release_free_heap()
        self.attached: dict[str, int] = {}  # interface -> flags it was attached with
        self.prog_ids: dict[str, int | None] = {}  # interface -> the kernel's id of ours there
        self.entries: dict[tuple, LpmEntry] = {}

    # --- interfaces ----------------------------------------------------------------------------

    def attach(self, ifname: str, mode: str = "auto") -> str:
        """Attach to an interface; returns the mode used ("native" or "generic")."""
        if ifname in self.attached:
            return "native" if self.attached[ifname] == XDP_FLAGS_DRV_MODE else "generic"
        tries = ["native", "generic"] if mode == "auto" else [mode]
        for i, name in enumerate(tries):
            try:
                self._bpf.attach_xdp(ifname.encode(), self._fn, MODES[name])
            except Exception:  # bcc raises plain Exception; the last mode's error is the one
                if i == len(tries) - 1:
                    raise
                continue
            self.attached[ifname] = MODES[name]
            self.prog_ids[ifname] = attached_prog_id(ifname)
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
        if flags is None or not os.path.exists(f"/sys/class/net/{ifname}"):
            return False
        if attached_prog_id(ifname) != ours:
            return False
        self._bpf.remove_xdp(ifname.encode(), flags)
        return True

    def detach_all(self) -> None:
        for ifname in list(self.attached):
            self.detach(ifname)

    # --- maps ----------------------------------------------------------------------------------

    def _key(self, entry: LpmEntry):
        table = self._bpf[entry.table.encode()]
        key = table.Key()
        key.prefixlen = entry.prefixlen
        field = getattr(type(key), _KEY_FIELD.get(entry.table, "data"))
        ctypes.memmove(ctypes.addressof(key) + field.offset, entry.data, len(entry.data))
        return table, key

    def sync(self, entries: Iterable[LpmEntry]) -> tuple[int, int]:
        """Make the tries hold exactly `entries`; returns (written, deleted)."""
        want = {e.key: e for e in entries}
        written = deleted = 0
        for key in self.entries.keys() - want.keys():
            table, k = self._key(self.entries.pop(key))
            del table[k]
            deleted += 1
        for key, entry in want.items():
            if self.entries.get(key) != entry:
                table, k = self._key(entry)
                table[k] = table.Leaf(entry.rule)
                self.entries[key] = entry
                written += 1
        return written, deleted

    def put(self, entry: LpmEntry) -> None:
        """Write one entry, whatever this object knows of the maps (pinned maps, from a CLI)."""
        table, k = self._key(entry)
        table[k] = table.Leaf(entry.rule)
        self.entries[entry.key] = entry

    def remove(self, entry: LpmEntry) -> bool:
        table, k = self._key(entry)
        self.entries.pop(entry.key, None)
        try:
            del table[k]
        except KeyError:
            return False
        return True

    def stored(self) -> list[LpmEntry]:
        """Every entry the tries hold (including ones written by another process)."""
        out = []
        for name in TABLES:
            table = self._bpf[name.encode()]
            field = _KEY_FIELD.get(name, "data")
            for key, leaf in table.items():
                size = getattr(type(key), field).size
                data = ctypes.string_at(
                    ctypes.addressof(key) + getattr(type(key), field).offset, size
                )
                out.append(LpmEntry(name, key.prefixlen, data, leaf.value))
        return out

    def counters(self, rules: Iterable[int] | None = None) -> dict[int, tuple[int, int]]:
        """Packets and bytes dropped per rule id, summed over every CPU."""
        table = self._bpf[b"counters"]
        out = {}
        for rule in set(rules) if rules is not None else {e.rule for e in self.entries.values()}:
            per_cpu = table[ctypes.c_uint32(rule)]
            out[rule] = (sum(c.packets for c in per_cpu), sum(c.bytes for c in per_cpu))
        return out
