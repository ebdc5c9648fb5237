"""OpenFlow over TLS: switches with a certificate from the CA connect; nothing else does.

The channel is trusted with everything (a switch can report any port, packet or error, and claim
any dpid), so who may open it matters: with `--ctl-privkey`, `--ctl-cert` and `--ca-certs` only
TLS is accepted, and only from a switch whose certificate the CA signed.
"""

import socket
import ssl
import subprocess

import pytest

from topologies.certs import LabCA
from topologies.harness import free_port, wait_listening
from topologies.leafspine import LeafSpineTopo

HELLO = bytes.fromhex("04000010000000010001000800000010")


@pytest.fixture
def pki(tmp_path):
    ca = LabCA(str(tmp_path))
    return ca, ca.issue("controller"), ca.issue("switch")


@pytest.fixture
def ovs_ssl(pki):
    """Open vSwitch's own key and certificate (global): set for the test, removed after."""
    if subprocess.run(["ovs-vsctl", "get-ssl"], capture_output=True, text=True).stdout.strip():
        pytest.skip("Open vSwitch already has an SSL configuration; not touching it")
    ca, _, (key, cert) = pki
    subprocess.run(["ovs-vsctl", "set-ssl", key, cert, ca.path], check=True)
    yield
    subprocess.run(["ovs-vsctl", "del-ssl"], check=True)


def tls_controller(controller, pki, port):
    ca, (key, cert), _ = pki
    flags = ["--ctl-privkey", key, "--ctl-cert", cert, "--ca-certs", ca.path]
    return controller(extra=[*flags, "--ofp-ssl-listen-port", str(port)], port=port)


def test_switches_with_the_cas_certificate_connect_over_tls(controller, lab, pki, ovs_ssl):
    port = free_port()
    ctl = tls_controller(controller, pki, port)
    assert ctl.wait_log("listening for OpenFlow 1.3 over TLS")
    net = lab(LeafSpineTopo(2, 2, 1), port, protocol="ssl")
    assert net.wait_connected(timeout=60) is not None, ctl.log()[-3000:]
    assert net.pingall() == (0, 2)


def test_plain_tcp_and_foreign_certificates_are_refused(controller, pki, tmp_path):
    port = free_port()
    ctl = tls_controller(controller, pki, port)
    assert wait_listening(port, 10)
    with socket.create_connection(("127.0.0.1", port), timeout=3) as plain:
        plain.sendall(HELLO)
        try:
            answer = plain.recv(64)
        except (ConnectionResetError, TimeoutError):
            answer = b""
    assert not answer.startswith(b"\x04\x00"), "a plain TCP peer got an OpenFlow HELLO"
    (tmp_path / "stranger").mkdir()
    key, cert = LabCA(str(tmp_path / "stranger")).issue("switch")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(pki[0].path)
    context.load_cert_chain(cert, key)
    with (
        pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)),
        socket.create_connection(("127.0.0.1", port), timeout=3) as raw,
        context.wrap_socket(raw) as tls,
    ):
        tls.sendall(HELLO)
        assert tls.recv(64) == b"", "a switch with a foreign certificate was answered"
    assert "connected; reading its tables" not in ctl.log()
