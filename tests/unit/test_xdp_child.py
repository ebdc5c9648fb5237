"""ebpf.xdp's side of the compile child: what it makes of an answer that is not the JSON line
ebpf/compile.py prints (no kernel, no bcc: the child is stood in for)."""

import json
import subprocess

import pytest

import ebpf.xdp
from ebpf.xdp import TABLES, compile_in_child


@pytest.mark.parametrize(
    "stdout", ["", "not json\n", '{"prog": "/sys/fs/bpf/x"\n', "[1, 2]\n", '{"maps": {}}\n']
)
def test_an_answer_that_is_not_the_pins_is_a_runtime_error_naming_the_child(monkeypatch, stdout):
    def run(args, **kwargs):
        return subprocess.CompletedProcess(args, 0, stdout, "")

    monkeypatch.setattr(ebpf.xdp.subprocess, "run", run)
    with pytest.raises(RuntimeError, match="compiling xdp_firewall .* answered"):
        compile_in_child("/sys/fs/bpf/osken-xdp-1-x", "xdp_firewall")


def test_lines_before_the_answer_are_skipped(monkeypatch):
    maps = {name: f"/sys/fs/bpf/x/{name}" for name in (*TABLES, "counters")}
    pins = json.dumps({"prog": "p", "maps": maps, "compile_seconds": 1.0})

    def run(args, **kwargs):
        return subprocess.CompletedProcess(args, 0, f"a warning bcc printed\n{pins}\n", "")

    monkeypatch.setattr(ebpf.xdp.subprocess, "run", run)
    assert compile_in_child("/sys/fs/bpf/osken-xdp-1-x", "xdp_firewall")["prog"] == "p"
