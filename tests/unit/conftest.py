"""Unit tests run on fake switches: no kernel program is ever loaded or attached from them.

The fake network names ports as Mininet does (s1-eth1); with a lab running on the same machine
those names are real interfaces, and a firewall under test would load its XDP program and
attach it to them. Tests of the fast path install a stand-in program themselves
(tests/unit/test_fastpath.py), which overrides this."""

import pytest

import ebpf.xdp


@pytest.fixture(autouse=True)
def _no_kernel_xdp(monkeypatch):
    monkeypatch.setattr(ebpf.xdp, "unavailable", lambda: "unit tests use fake switches")
