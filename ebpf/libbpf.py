"""The few libbpf calls the controller needs, through ctypes (Debian's libbpf1, libbpf.so.1).

The XDP program is compiled and loaded in a child process (ebpf/compile.py) and pinned in
bpffs; this process opens the pins and drives the maps and attachments with plain bpf(2) calls,
so bcc (clang and LLVM) never enters it. Every call of `Libbpf` returns or takes file
descriptors (ints) and bytes laid out as the C structs are; a failing call raises OSError with
its errno and a message naming the map, pin or interface (`what`). Man pages: bpf(2); libbpf's
bpf.h and libbpf.h.

Byte layouts (native byte order, as the kernel reads them):

>>> lpm_key(8, bytes.fromhex("0600160a000000"), 12).hex()
'080000000600160a00000000'
>>> split_lpm_key(bytes.fromhex("080000000600160a00000000"))
(8, b'\\x06\\x00\\x16\\n\\x00\\x00\\x00\\x00')
>>> percpu_slot_size(16), percpu_slot_size(12)
(16, 16)
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Iterator

LIBRARY = "libbpf.so.1"
BPF_ANY = 0  # map update: create or replace
_PREFIXLEN = struct.Struct("=I")  # struct { u32 prefixlen; u8 data[]; }: every LPM trie key


class MapInfo(ctypes.Structure):
    """The head of struct bpf_map_info (uapi/linux/bpf.h); the kernel fills what fits."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16),
    ]


class XdpAttachOpts(ctypes.Structure):
    """struct bpf_xdp_attach_opts (libbpf.h): `sz` its size, `old_prog_fd` the program expected
    on the interface (XDP_FLAGS_REPLACE: the kernel refuses with EEXIST if another is there)."""

    _fields_ = [("sz", ctypes.c_size_t), ("old_prog_fd", ctypes.c_int)]


class ProgInfo(ctypes.Structure):
    """The head of struct bpf_prog_info (uapi/linux/bpf.h): its type and the kernel's id."""

    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32)]


class Libbpf:
    """libbpf, loaded (dlopen: once per process, then shared) with the functions typed.
    OSError if it is not installed."""

    def __init__(self) -> None:
        try:
            self._lib = ctypes.CDLL(LIBRARY, use_errno=True)
        except OSError as exc:
            raise OSError(f"{LIBRARY} is not installed (Debian libbpf1): {exc}") from exc
        vp, i, u32 = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32
        for name, args in {
            "bpf_obj_get": [ctypes.c_char_p],
            "bpf_obj_get_info_by_fd": [i, vp, ctypes.POINTER(u32)],
            "bpf_prog_get_fd_by_id": [u32],
            "bpf_map_update_elem": [i, vp, vp, ctypes.c_uint64],
            "bpf_map_lookup_elem": [i, vp, vp],
            "bpf_map_delete_elem": [i, vp],
            "bpf_map_get_next_key": [i, vp, vp],
            "bpf_xdp_attach": [i, i, u32, vp],
            "bpf_xdp_detach": [i, u32, vp],
            "libbpf_num_possible_cpus": [],
        }.items():
            fn = getattr(self._lib, name)
            fn.argtypes, fn.restype = args, i

    def obj_get(self, path: str) -> int:
        """A new file descriptor for the program or map pinned at `path` (bpffs)."""
        return _check(self._lib.bpf_obj_get(path.encode()), "bpf_obj_get", path)

    def _info(self, fd: int, info: ctypes.Structure, what: str) -> None:
        size = ctypes.c_uint32(ctypes.sizeof(info))
        ret = self._lib.bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size))
        _check(ret, "bpf_obj_get_info_by_fd", what)

    def map_info(self, fd: int, what: str) -> MapInfo:
        """Key and value sizes (bytes), type and id of the map behind `fd`."""
        info = MapInfo()
        self._info(fd, info, what)
        return info

    def prog_id(self, fd: int, what: str) -> int:
        """The kernel's id of the program behind `fd` (what `ip link` shows as prog/xdp id)."""
        info = ProgInfo()
        self._info(fd, info, what)
        return info.id

    def prog_fd_by_id(self, prog_id: int, what: str) -> int:
        """A new file descriptor for the loaded program with the kernel's id `prog_id`;
        OSError ENOENT when no such program is loaded any more."""
        return _check(self._lib.bpf_prog_get_fd_by_id(prog_id), "bpf_prog_get_fd_by_id", what)

    def update(self, fd: int, key: bytes, value: bytes, what: str) -> None:
        """Create or replace one element; key and value exactly the map's sizes."""
        ret = self._lib.bpf_map_update_elem(fd, key, value, BPF_ANY)
        _check(ret, "bpf_map_update_elem", what)

    def lookup(self, fd: int, key: bytes, value_size: int, what: str) -> bytes | None:
        """The value stored under `key` (`value_size` bytes; for a per-CPU map, every CPU's
        slot one after another, see percpu_slot_size), or None if there is none."""
        value = ctypes.create_string_buffer(value_size)
        ret = self._lib.bpf_map_lookup_elem(fd, key, value)
        if ret == -errno.ENOENT:
            return None
        _check(ret, "bpf_map_lookup_elem", what)
        return value.raw

    def delete(self, fd: int, key: bytes, what: str) -> bool:
        """Remove one element; False if there was none."""
        ret = self._lib.bpf_map_delete_elem(fd, key)
        if ret == -errno.ENOENT:
            return False
        _check(ret, "bpf_map_delete_elem", what)
        return True

    def keys(self, fd: int, key_size: int, what: str) -> Iterator[bytes]:
        """Every key of the map, in the kernel's order (bpf_map_get_next_key from no key)."""
        key, nxt = None, ctypes.create_string_buffer(key_size)
        while True:
            ret = self._lib.bpf_map_get_next_key(fd, key, nxt)
            if ret == -errno.ENOENT:  # past the last key
                return
            _check(ret, "bpf_map_get_next_key", what)
            key = nxt.raw
            yield key

    def possible_cpus(self) -> int:
        """How many slots a per-CPU map keeps per element (/sys/devices/system/cpu/possible)."""
        ret = self._lib.libbpf_num_possible_cpus()
        return _check(ret, "libbpf_num_possible_cpus", "this machine")

    def xdp_attach(self, ifindex: int, prog_fd: int, flags: int, ifname: str) -> None:
        """Attach the program to an interface (XDP_FLAGS_*: mode; replaces what is there)."""
        ret = self._lib.bpf_xdp_attach(ifindex, prog_fd, flags, None)
        _check(ret, "bpf_xdp_attach", ifname)

    def xdp_detach(self, ifindex: int, flags: int, ifname: str, expected_fd: int) -> None:
        """Take the program behind `expected_fd` off an interface (attached in the mode `flags`
        names), in one step: OSError EEXIST, and nothing detached, if another program is
        attached there now (libbpf sets XDP_FLAGS_REPLACE for `old_prog_fd`)."""
        opts = XdpAttachOpts(ctypes.sizeof(XdpAttachOpts), expected_fd)
        ret = self._lib.bpf_xdp_detach(ifindex, flags, ctypes.byref(opts))
        _check(ret, "bpf_xdp_detach", ifname)


def _check(ret: int, call: str, what: str) -> int:
    """libbpf 1.x returns -errno on failure (and sets errno): raise it as OSError."""
    if ret < 0:
        raise OSError(-ret, f"{call} on {what}: {os.strerror(-ret)}")
    return ret


def percpu_slot_size(value_size: int) -> int:
    """Bytes one CPU's value takes in a per-CPU lookup: the value size rounded up to 8."""
    return (value_size + 7) // 8 * 8


def lpm_key(prefixlen: int, data: bytes, key_size: int) -> bytes:
    """An LPM trie key: u32 prefix length in bits, then the data, zero-padded to the key size.
    ValueError if the data does not fit."""
    if len(data) > key_size - _PREFIXLEN.size:
        raise ValueError(f"{len(data)} bytes of key data do not fit a {key_size}-byte key")
    return _PREFIXLEN.pack(prefixlen) + data.ljust(key_size - _PREFIXLEN.size, b"\0")


def split_lpm_key(key: bytes) -> tuple[int, bytes]:
    """(prefix length, data) of an LPM trie key; the data as long as the key holds."""
    return _PREFIXLEN.unpack_from(key)[0], key[_PREFIXLEN.size :]
