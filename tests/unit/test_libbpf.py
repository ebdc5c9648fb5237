"""ebpf/libbpf.py's encoding, checked against xdp_firewall.c's structs, without root or a kernel
program; and the controller's side of the fast path importing no bcc."""

import ctypes
import errno
import os
import re
import subprocess
import sys

import pytest

from ebpf import libbpf
from ebpf.compile import SOURCE
from ebpf.offload import LpmEntry, blocked_entries, rule_entries
from ebpf.xdp import TABLES


def c_key_sizes() -> dict[str, int]:
    """Each trie's key size in bytes, read from the C source: u32 prefixlen + u8 data[N]."""
    with open(SOURCE) as fh:
        text = fh.read()
    found = re.findall(r"struct (\w+)_key \{ u32 prefixlen; u8 \w+\[(\d+)\]; \};", text)
    return {name: 4 + int(n) for name, n in found}


def test_every_trie_in_the_c_source_is_known():
    assert set(c_key_sizes()) == set(TABLES)


def sample_entries() -> list[LpmEntry]:
    import ipaddress

    from apps.firewall.rules import FirewallRule

    out = []
    for src in ("10.0.0.0/8", "2001:db8::/32"):
        net = ipaddress.ip_network(src)
        out += blocked_entries(net, 0xFFFF)
        out += rule_entries(FirewallRule("deny", "tcp", net, dst_ports=(22, 22)), 7)
        out += rule_entries(FirewallRule("deny", "udp", net), 8)
    return out


def test_offload_entries_fit_the_c_keys_and_read_back():
    sizes = c_key_sizes()
    entries = sample_entries()
    assert {e.table for e in entries} == set(TABLES)
    for e in entries:
        key = libbpf.lpm_key(e.prefixlen, e.data, sizes[e.table])
        assert len(key) == sizes[e.table]
        prefixlen, data = libbpf.split_lpm_key(key)
        assert prefixlen == e.prefixlen
        assert data == e.data.ljust(sizes[e.table] - 4, b"\0")  # zero-padded, as the C zeroes


def test_prefix_length_is_native_u32_first():
    key = libbpf.lpm_key(0x01020304, b"\xaa", 8)
    assert key == (0x01020304).to_bytes(4, sys.byteorder) + b"\xaa\0\0\0"


def test_data_longer_than_the_key_is_refused():
    with pytest.raises(ValueError, match="5 bytes of key data do not fit a 8-byte key"):
        libbpf.lpm_key(32, bytes(5), 8)


def test_percpu_values_are_8_byte_slots():
    assert [libbpf.percpu_slot_size(n) for n in (1, 8, 12, 16, 17)] == [8, 8, 16, 16, 24]


def test_a_failing_call_raises_oserror_with_errno_naming_what():
    with pytest.raises(OSError) as err:
        libbpf.Libbpf().obj_get("/nonexistent/osken-pin")
    assert err.value.errno in (errno.ENOENT, errno.EPERM)  # EPERM: no bpf(2) without root
    assert "bpf_obj_get on /nonexistent/osken-pin" in str(err.value)


def test_possible_cpus_counts_at_least_the_online_ones():
    assert libbpf.Libbpf().possible_cpus() >= (os.cpu_count() or 1)


def test_checking_availability_imports_no_bcc():
    code = (
        "import sys; from ebpf.xdp import unavailable; unavailable(); print('bcc' in sys.modules)"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_the_xdp_attach_options_are_laid_out_as_libbpf_declares_them():
    """struct bpf_xdp_attach_opts { size_t sz; int old_prog_fd; size_t :0; } (libbpf.h): the
    trailing zero-width field pads it to a size_t boundary, 16 bytes on 64-bit machines."""
    opts = libbpf.XdpAttachOpts(ctypes.sizeof(libbpf.XdpAttachOpts), 7)
    assert ctypes.sizeof(opts) == 2 * ctypes.sizeof(ctypes.c_size_t)
    assert libbpf.XdpAttachOpts.old_prog_fd.offset == ctypes.sizeof(ctypes.c_size_t)


def test_no_program_has_id_zero():
    with pytest.raises(OSError) as err:
        libbpf.Libbpf().prog_fd_by_id(0, "prog id 0")
    assert err.value.errno in (errno.ENOENT, errno.EINVAL, errno.EPERM)
    assert "bpf_prog_get_fd_by_id on prog id 0" in str(err.value)
