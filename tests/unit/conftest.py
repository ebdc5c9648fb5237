"""Unit tests run on fake switches: no kernel program is ever loaded or attached from them.

The fake network names ports as Mininet does (s1-eth1); with a lab running on the same machine
those names are real interfaces, and a firewall under test would load its XDP program and
attach it to them. Tests of the fast path install a stand-in program themselves
(tests/unit/test_fastpath.py), which overrides this. Likewise no conntrack zone limit is ever
set on the machine's Open vSwitch from them: tests of the caps give ZoneLimits a recorder."""

import subprocess

import pytest

import controller.ctlimits
import ebpf.xdp


@pytest.fixture(autouse=True)
def _no_kernel_xdp(monkeypatch):
    monkeypatch.setattr(ebpf.xdp, "unavailable", lambda: "unit tests use fake switches")


@pytest.fixture(autouse=True)
def _no_local_zone_limits(monkeypatch):
    def refuse(args):
        return subprocess.CompletedProcess(args, 1, "", "unit tests use fake switches")

    monkeypatch.setattr(controller.ctlimits, "run_appctl", refuse)
