"""A lab certificate authority: PEM keys and certificates for OpenFlow over TLS in labs and tests.

    ca = LabCA(folder)
    key, cert = ca.issue("controller", ip="127.0.0.1")

Keys are ECDSA P-256; certificates last a day and name their IP in a subjectAltName, as Open
vSwitch's and Python's TLS checks want. Built with the `cryptography` library.
"""

from __future__ import annotations

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_DAY = datetime.timedelta(days=1)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(path: str, data: bytes) -> str:
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
        fh.write(data)
    return path


class LabCA:
    """A self-signed CA whose files live in `folder` (ca.pem; <name>-key.pem, <name>-cert.pem)."""

    def __init__(self, folder: str, name: str = "osken lab CA") -> None:
        self.folder = folder
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.path = _write(
            os.path.join(folder, "ca.pem"), self.cert.public_bytes(serialization.Encoding.PEM)
        )

    def issue(self, name: str, ip: str = "127.0.0.1") -> tuple[str, str]:
        """A key and a certificate signed by this CA for `name` at `ip`: their paths."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + _DAY)
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return (
            _write(os.path.join(self.folder, f"{name}-key.pem"), key_pem),
            _write(
                os.path.join(self.folder, f"{name}-cert.pem"),
                cert.public_bytes(serialization.Encoding.PEM),
            ),
        )
