"""scripts/xdp_fw.py's commands that have nothing to act on: they answer without compiling and
pinning a program (a second of clang, 200 MiB, and pins left in bpffs that no detach removes)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))

import xdp_fw  # noqa: E402


@pytest.fixture
def clean_machine(tmp_path, monkeypatch):
    def no_compile(**kwargs):
        raise AssertionError("compiled a program for a command with nothing to act on")

    monkeypatch.setattr(xdp_fw, "unavailable", lambda: None)
    monkeypatch.setattr(xdp_fw, "XdpProgram", no_compile)
    monkeypatch.setattr(xdp_fw, "ensure_bpffs", lambda: False)
    monkeypatch.setattr(xdp_fw, "STATE", str(tmp_path / "state.json"))
    monkeypatch.setattr(xdp_fw, "PIN_DIR", str(tmp_path / "pins"))


def run(monkeypatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["xdp_fw.py", *args])
    return xdp_fw.main()


def test_detach_where_nothing_is_attached_compiles_nothing(clean_machine, monkeypatch, capsys):
    assert run(monkeypatch, "detach", "eth9") == 1
    assert "not attached to eth9" in capsys.readouterr().err


def test_stats_with_nothing_loaded_compiles_nothing(clean_machine, monkeypatch, capsys):
    assert run(monkeypatch, "stats") == 0
    assert "attached: nowhere" in capsys.readouterr().out
