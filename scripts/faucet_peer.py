"""FAUCET as a benchmark peer: its own virtual environment, its config, its process.

FAUCET 1.10.12 pins os-ken 3.x, so it lives in `.bench/faucet-venv` (git-ignored), the bench
venv, made on first use with Debian's Python and pip; the suite's `.venv` is never touched.
`faucet` execs `osken-manager` from PATH, so the process keeps its pid and is stopped by it.

    with FaucetProcess(config_dict, port=6653) as faucet:
        faucet.pid; faucet.reload(new_config_dict)

FAUCET's config reference: https://docs.faucet.nz/en/latest/configuration.html
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile

from topologies.harness import free_port, wait_listening

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, ".bench", "faucet-venv")
VERSION = "1.10.12"
COOKIE = 1524372928  # FAUCET's default dp cookie; its packet-ins must carry it


def ensure_venv() -> str:
    """Path of the venv's `faucet`, installing FAUCET there first if needed (about a minute)."""
    faucet = os.path.join(VENV, "bin", "faucet")
    if not os.path.exists(faucet):
        subprocess.run(["/usr/bin/python3", "-m", "venv", VENV], check=True)
        subprocess.run(
            [os.path.join(VENV, "bin", "pip"), "install", "-q", f"faucet=={VERSION}"], check=True
        )
    return faucet


def ensure_venv_package(name: str) -> str:
    """Path of the bench venv's python, with package `name` installed there first if needed
    (the benchmarks' own tools, such as matplotlib for plots, stay out of `.venv`)."""
    ensure_venv()
    python = os.path.join(VENV, "bin", "python")
    if subprocess.run([python, "-c", f"import {name}"], capture_output=True).returncode:
        subprocess.run([os.path.join(VENV, "bin", "pip"), "install", "-q", name], check=True)
    return python


def versions() -> str:
    """ "faucet X (os-ken Y)" as installed in the venv."""
    out = subprocess.run(
        [os.path.join(VENV, "bin", "pip"), "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    have = {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(out)}
    return f"FAUCET {have.get('faucet', '?')} (os-ken {have.get('os-ken', '?')})"


def switch_dp(dpid: int, ports: list[int], acl: str | None = None) -> dict:
    """One FAUCET datapath: every port untagged in VLAN 100, learning never throttled.

    FAUCET's defaults ignore every 10th learning packet-in (`ignore_learn_ins`) and cap hosts
    at 255 per port and 256 per VLAN; the benchmark lifts all three so it measures capacity.
    """
    interfaces: dict = {}
    for port in ports:
        name = f"p{port}"  # keys are names: the file is JSON, whose keys are strings
        interfaces[name] = {"number": port, "native_vlan": "bench", "max_hosts": 65535}
        if acl is not None and port == ports[0]:
            interfaces[name]["acl_in"] = acl
    return {
        "dp_id": dpid,
        "hardware": "Open vSwitch",
        "ignore_learn_ins": 0,
        "interfaces": interfaces,
    }


def config(dps: dict[str, dict], acls: dict[str, list] | None = None) -> dict:
    """A whole faucet.yaml: VLAN 100 ("bench"), these datapaths and ACLs."""
    doc: dict = {"vlans": {"bench": {"vid": 100, "max_hosts": 65535}}, "dps": dps}
    if acls:
        doc["acls"] = acls
    return doc


class FaucetProcess:
    """FAUCET listening for OpenFlow on `port` with the config `doc` (a faucet.yaml as a dict)."""

    def __init__(self, doc: dict, port: int) -> None:
        self.folder = tempfile.mkdtemp(prefix="faucet-")
        self.config_path = os.path.join(self.folder, "faucet.yaml")
        self.log_path = os.path.join(self.folder, "faucet.log")
        self.port = port
        self.write(doc)
        self.proc: subprocess.Popen | None = None

    def write(self, doc: dict) -> None:
        """Write faucet.yaml (as JSON, which YAML reads as it is)."""
        with open(self.config_path, "w") as fh:
            json.dump(doc, fh)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self) -> FaucetProcess:
        faucet = ensure_venv()
        env = dict(
            os.environ,
            PATH=f"{os.path.join(VENV, 'bin')}:{os.environ.get('PATH', '')}",
            FAUCET_CONFIG=self.config_path,
            FAUCET_LOG=self.log_path,
            FAUCET_EXCEPTION_LOG=os.path.join(self.folder, "exception.log"),
            FAUCET_PROMETHEUS_ADDR="127.0.0.1",
            FAUCET_PROMETHEUS_PORT=str(free_port()),
        )
        with open(os.path.join(self.folder, "stdout.log"), "a") as out:
            self.proc = subprocess.Popen(
                [faucet, f"--ryu-ofp-tcp-listen-port={self.port}"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        if not wait_listening(self.port, 900):  # a 10,000-rule ACL takes minutes
            self.stop()
            raise RuntimeError(f"FAUCET did not start; see {self.folder}")
        return self

    def reload(self, doc: dict) -> None:
        """Rewrite the config and tell FAUCET to read it (SIGHUP)."""
        self.write(doc)
        self.proc.send_signal(signal.SIGHUP)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> FaucetProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
