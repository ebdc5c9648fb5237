"""Starting a lab never fails on the bytes a controller sends (Mininet's telnet probe did).

Mininet 2.3's RemoteController probes the port with telnet and decodes the reply as UTF-8; an
OpenFlow HELLO whose random xid is not valid UTF-8 made it raise UnicodeDecodeError at random.
Whether telnet prints the HELLO before it exits is a race, so the tests check what replaces the
probe: a connect that never reads, used by every topology file's `remote` controller.
"""

import runpy
import socket
import subprocess
import threading

import pytest
from mininet.node import RemoteController

from topologies.harness import ROOT, remove_leftovers, snapshot
from topologies.lab import LabController
from topologies.linear import LinearTopo

# OFPT_HELLO, version 1.3, with a version bitmap; xid 0xc328a0a1 is not valid UTF-8
HELLO = bytes.fromhex("04000010c328a0a10001000800000010")


@pytest.fixture
def hello_listener():
    """A TCP listener on loopback that greets every connection with HELLO; its port."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(HELLO)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(timeout=2)
    server.close()


@pytest.mark.parametrize("name", ["linear", "tree", "leafspine", "fattree"])
def test_every_topology_file_replaces_mininets_remote(name):
    """What `mn --custom` reads from the file: its `controllers` override `remote`."""
    custom = runpy.run_path(f"{ROOT}/topologies/{name}.py")
    assert custom["controllers"]["remote"] is LabController
    assert issubclass(LabController, RemoteController)


def test_lab_controller_probe_does_not_decode(hello_listener):
    ctl = LabController("c9", ip="127.0.0.1", port=hello_listener)
    try:
        assert ctl.isListening("127.0.0.1", hello_listener)
    finally:
        ctl.stop()


def test_mn_custom_remote_uses_the_lab_controller(hello_listener, tmp_path):
    """`mn --custom topologies/...py --controller remote,...`, as the contract writes it."""
    before = snapshot()
    try:
        result = subprocess.run(
            [
                "mn",
                "--custom",
                f"{ROOT}/topologies/linear.py",
                "--topo",
                "linear,1",
                "--switch",
                "ovs,datapath=user,protocols=OpenFlow13",
                "--controller",
                f"remote,ip=127.0.0.1,port={hello_listener}",
                "--test",
                "none",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        remove_leftovers(LinearTopo(1), *before)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-2000:]
    assert "UnicodeDecodeError" not in output
