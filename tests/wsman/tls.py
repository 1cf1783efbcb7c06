"""A throw-away certificate authority for the test WS-Management endpoint.

Everything is generated at test time: a CA, a server certificate for 127.0.0.1/localhost,
and client certificates for certificate authentication (the way an administrator maps a
certificate to a local account with `New-Item WSMan:\\localhost\\ClientCertificate`).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# P-256 keys: fast to generate (RSA-2048 costs ~100 ms each on this machine) and accepted
# by OpenSSL's default security level.
_CURVE = ec.SECP256R1()
_VALIDITY = datetime.timedelta(days=2)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class TestCA:
    """A CA that signs the server certificate and client certificates."""

    __test__ = False  # not a pytest test class despite the name

    common_name: str = "hvbackup test CA"
    key: ec.EllipticCurvePrivateKey = field(init=False)
    cert: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        self.key = ec.generate_private_key(_CURVE)
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(self.common_name))
            .issuer_name(_name(self.common_name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def cert_pem(self) -> bytes:
        return _pem_cert(self.cert)

    def issue(
        self, common_name: str, *, server: bool, extra_names: list[x509.GeneralName] | None = None
    ) -> tuple[bytes, bytes]:
        """Sign a new leaf certificate; returns (cert_pem, key_pem)."""
        key = ec.generate_private_key(_CURVE)
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )
        if extra_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(extra_names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return _pem_cert(cert), _pem_key(key)

    def server_cert(self) -> tuple[bytes, bytes]:
        names: list[x509.GeneralName] = [
            x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
            x509.DNSName("localhost"),
        ]
        return self.issue("localhost", server=True, extra_names=names)

    def client_cert(self, user: str) -> tuple[bytes, bytes]:
        # Windows maps client certificates by the UPN in the subjectAltName
        # (otherName 1.3.6.1.4.1.311.20.2.3); the endpoint maps by fingerprint or subject
        # instead, which is all the tests need to tell certificates apart.
        return self.issue(user, server=False)


def fingerprint(cert_der: bytes) -> str:
    """SHA-1 thumbprint in the uppercase hex form Windows shows (`Thumbprint`)."""
    return hashlib.sha1(cert_der, usedforsecurity=False).hexdigest().upper()


def subject_common_name(cert_der: bytes) -> str:
    cert = x509.load_der_x509_certificate(cert_der)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def tls_server_end_point(cert_der: bytes) -> bytes:
    """RFC 5929 channel-binding data for the server certificate, as requests-ntlm computes it."""
    cert = x509.load_der_x509_certificate(cert_der)
    algorithm = cert.signature_hash_algorithm
    # RFC 5929 4.1: MD5 and SHA-1 are replaced by SHA-256.
    if algorithm is None or algorithm.name in ("md5", "sha1"):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(cert_der)
    return b"tls-server-end-point:" + digest.finalize()


def server_context(ca: TestCA, folder: Path, *, ask_client_cert: bool) -> tuple[ssl.SSLContext, bytes]:
    """An SSL context for the endpoint; returns it with the server certificate (DER).

    With `ask_client_cert` the server requests a client certificate but does not demand one
    (NTLM clients still connect, as on a Windows listener with certificate auth enabled); a
    certificate that is offered must chain to the test CA or the handshake fails.
    """
    cert_pem, key_pem = ca.server_cert()
    cert_path, key_path, ca_path = folder / "server.pem", folder / "server.key", folder / "ca.pem"
    cert_path.write_bytes(cert_pem)
    key_path.write_bytes(key_pem)
    ca_path.write_bytes(ca.cert_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    if ask_client_cert:
        context.load_verify_locations(cafile=str(ca_path))
        context.verify_mode = ssl.CERT_OPTIONAL
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    return context, der
