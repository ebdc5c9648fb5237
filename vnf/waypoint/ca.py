"""The mesh's lab certificate authority: SPIFFE workload certificates for the endpoints and the
waypoint, in the folder `mesh.certs_dir` (a contract: lab hosts use these paths with curl).

    <certs_dir>/ca.pem                   the CA's certificate (what clients and Envoy trust)
    <certs_dir>/.ca-key.pem              the CA's key (0600)
    <certs_dir>/<endpoint>/cert.pem      the endpoint's certificate, URI SAN
                                         spiffe://cluster.local/ns/<ns>/sa/<service_account>
    <certs_dir>/<endpoint>/key.pem       its key (0600)
    <certs_dir>/.waypoint/{cert,key}.pem the waypoint's own, signed by the same CA

The CA is made once and kept: `MeshCA.open` reads it when the folder has one. A certificate on
disk is reused while it is signed by this CA, names the same SANs and has more than
`RENEW_BEFORE` left, so a reload or a restart issues only what changed. Opening and issuing
happen in memory (a config being checked changes nothing); `save` writes what is new.

Keys are ECDSA P-256, certificates X.509 v3 with the SANs critical when the subject is empty,
as SPIFFE's X509-SVID says (https://github.com/spiffe/spiffe/blob/main/standards/X509-SVID.md).
Built with `cryptography`.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca.pem"
CA_KEY = ".ca-key.pem"
CERT, KEY = "cert.pem", "key.pem"
WAYPOINT = ".waypoint"
CA_LIFETIME = datetime.timedelta(days=3650)
LIFETIME = datetime.timedelta(days=365)
RENEW_BEFORE = datetime.timedelta(days=30)
_SKEW = datetime.timedelta(hours=1)


def spiffe_id(principal: str) -> str:
    """An Istio principal as its SPIFFE ID.

    >>> spiffe_id("cluster.local/ns/default/sa/frontend")
    'spiffe://cluster.local/ns/default/sa/frontend'
    """
    return f"spiffe://{principal}"


def usable_name(name: str) -> bool:
    """Whether an endpoint name can be its certificate folder's name (no `/`, no leading `.`,
    which the CA's own files use)."""
    return bool(name) and "/" not in name and "\0" not in name and not name.startswith(".")


@dataclass(frozen=True)
class Issued:
    """A certificate and its key (PEM texts); `fresh`: issued now, not yet on disk."""

    cert: str
    key: str
    fresh: bool


def _pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _write(path: str, text: str, mode: int) -> None:
    """Write `text` to `path` with `mode`, atomically (a reader sees the old or the new). The
    temporary file is made new (O_EXCL, O_NOFOLLOW): whatever was left at its name, a symbolic
    link to another file included, is removed first, never written through."""
    tmp = f"{path}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with open(fd, "w") as fh:
        os.fchmod(fd, mode)
        fh.write(text)
    os.replace(tmp, path)


def _sans(cert: x509.Certificate) -> set:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return set()
    return set(ext.value)


def _wanted_sans(uri: str, dns: tuple[str, ...], ips: tuple[str, ...]) -> set:
    return (
        {x509.UniformResourceIdentifier(uri)}
        | {x509.DNSName(d) for d in dns}
        | {x509.IPAddress(ipaddress.ip_address(a)) for a in ips}
    )


class MeshCA:
    """The CA of one certs folder. `new`: made now (not read), so `save` writes it."""

    def __init__(self, folder: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate):
        self.folder = folder
        self.key = key
        self.cert = cert
        self.new = False
        self.pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        self._issued: dict[str, Issued] = {}  # relative folder -> what `save` writes there

    @classmethod
    def open(cls, folder: str) -> MeshCA:
        """The CA kept in `folder`, or a new one (in memory until `save`).

        Raises:
            ValueError: the folder's CA files are there but unreadable or do not belong together.
        """
        try:
            with open(os.path.join(folder, CA_CERT), "rb") as fh:
                cert = x509.load_pem_x509_certificate(fh.read())
            with open(os.path.join(folder, CA_KEY), "rb") as fh:
                key = serialization.load_pem_private_key(fh.read(), None)
        except FileNotFoundError:
            return cls._make(folder)
        if cert.public_key().public_numbers() != key.public_key().public_numbers():
            raise ValueError(f"{folder}: {CA_CERT} does not belong to {CA_KEY}")
        return cls(folder, key, cert)

    @classmethod
    def _make(cls, folder: str) -> MeshCA:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cluster.local"),
                x509.NameAttribute(NameOID.COMMON_NAME, "osken mesh lab CA"),
            ]
        )
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _SKEW)
            .not_valid_after(now + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        ca = cls(folder, key, cert)
        ca.new = True
        return ca

    def _signed_by_me(self, cert: x509.Certificate) -> bool:
        if cert.issuer != self.cert.subject:
            return False
        try:
            self.cert.public_key().verify(
                cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
            )
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True

    def _kept(self, where: str, sans: set) -> Issued | None:
        """The certificate on disk in `where` if it still serves: ours, same SANs, not due."""
        try:
            with open(os.path.join(self.folder, where, CERT)) as fh:
                cert_pem = fh.read()
            with open(os.path.join(self.folder, where, KEY)) as fh:
                key_pem = fh.read()
            cert = x509.load_pem_x509_certificate(cert_pem.encode())
            key = serialization.load_pem_private_key(key_pem.encode(), None)
        except (OSError, ValueError, TypeError):
            return None
        # not_valid_after: naive UTC (cryptography 38, Debian 12's)
        due = cert.not_valid_after.replace(tzinfo=datetime.UTC) - RENEW_BEFORE
        if (
            not self._signed_by_me(cert)
            or _sans(cert) != sans
            or due <= datetime.datetime.now(datetime.UTC)
            or cert.public_key().public_numbers() != key.public_key().public_numbers()
        ):
            return None
        return Issued(cert_pem, key_pem, False)

    def issue(
        self, where: str, uri: str, dns: tuple[str, ...] = (), ips: tuple[str, ...] = ()
    ) -> Issued:
        """The certificate for folder `where` (an endpoint's name, or WAYPOINT): URI SAN `uri`
        (a SPIFFE ID), and DNS and IP SANs; the one on disk if it still serves, else a new
        one. For clients and servers alike (both extended key usages)."""
        sans = _wanted_sans(uri, dns, ips)
        issued = self._kept(where, sans)
        if issued is None:
            key = ec.generate_private_key(ec.SECP256R1())
            now = datetime.datetime.now(datetime.UTC)
            cert = (
                x509.CertificateBuilder()
                .subject_name(x509.Name([]))
                .issuer_name(self.cert.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - _SKEW)
                .not_valid_after(now + LIFETIME)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(
                    x509.KeyUsage(True, False, True, False, False, False, False, False, False),
                    critical=True,
                )
                .add_extension(
                    x509.ExtendedKeyUsage(
                        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                    ),
                    critical=False,
                )
                .add_extension(
                    x509.SubjectAlternativeName(
                        sorted(sans, key=lambda s: (type(s).__name__, str(s.value)))
                    ),
                    critical=True,
                )
                .sign(self.key, hashes.SHA256())
            )
            pem = cert.public_bytes(serialization.Encoding.PEM).decode()
            issued = Issued(pem, _pem(key), True)
        self._issued[where] = issued
        return issued

    def save(self) -> list[str]:
        """Write the CA (if new) and every certificate issued fresh since `open`; keys 0600,
        certificates 0644. Returns the folders written, by name."""
        os.makedirs(self.folder, exist_ok=True)
        if self.new:
            _write(os.path.join(self.folder, CA_KEY), _pem(self.key), 0o600)
            _write(os.path.join(self.folder, CA_CERT), self.pem, 0o644)
            self.new = False
        written = []
        for where, issued in sorted(self._issued.items()):
            if not issued.fresh:
                continue
            path = os.path.join(self.folder, where)
            os.makedirs(path, exist_ok=True)
            _write(os.path.join(path, KEY), issued.key, 0o600)
            _write(os.path.join(path, CERT), issued.cert, 0o644)
            self._issued[where] = Issued(issued.cert, issued.key, False)
            written.append(where)
        return written
