"""Certificates for the emulator's HTTPS workers: a CA shaped like Vast's, leaves for 127.0.0.1.

The CA has the extensions of Vast's root ("Vast.ai Jupyter CA"): subject and authority key
identifiers, critical basicConstraints CA with pathlen 0, critical keyUsage keyCertSign and
cRLSign, and a critical name constraint permitting IPv4 addresses only. Leaves look like the
ones Vast's worker start script asks for (RSA 2048, a DNS-like commonName, not a CA) and carry
the worker's address as an IP subjectAltName, plus the key identifiers a well-formed leaf has.
Everything is made in memory; :class:`TLSFiles` writes what uvicorn needs to read into a
private temporary directory and removes it.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import os
import shutil
import tempfile
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Authority", "Leaf", "TLSFiles", "foreign_authority", "foreign_leaf", "new_authority"]

_HOUR = datetime.timedelta(hours=1)


def _key() -> rsa.RSAPrivateKey:
    # RSA 2048, as Vast's worker start script asks for its leaf (and a 4096-bit CA key, like
    # Vast's root, would take half a second to generate for every emulator).
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.lru_cache(maxsize=1)
def _leaf_key() -> rsa.RSAPrivateKey:
    # Leaves are not trust anchors: one key per process serves every emulator's workers.
    return _key()


@dataclass(frozen=True)
class Leaf:
    """A server certificate and its private key, as PEM."""

    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class Authority:
    """A certificate authority built like Vast's root (in memory; its key never leaves it)."""

    key: rsa.RSAPrivateKey
    cert: x509.Certificate

    @property
    def pem(self) -> str:
        """The CA certificate as PEM text (what ``worker_ca`` / ``VAST_WORKER_CA`` take)."""
        return self.cert.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def issue(self, ip: str = "127.0.0.1", *, days: int = 30) -> Leaf:
        """A leaf certificate for ``ip`` (an IP subjectAltName), signed by this CA."""
        key = _leaf_key()
        now = datetime.datetime.now(datetime.timezone.utc)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
                x509.NameAttribute(NameOID.COMMON_NAME, "pyworker.emulator.invalid"),
            ]
        )
        usage = x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=True,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=False,
            crl_sign=False,
            encipher_only=False,
            decipher_only=False,
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _HOUR)
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
            .sign(self.key, hashes.SHA256())
        )
        return Leaf(
            cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )


def new_authority(
    name: str = "vast-llm emulator CA",
    *,
    permitted: list[x509.GeneralName] | None = None,
    years: int = 5,
) -> Authority:
    """A fresh CA with Vast's root's extensions (``permitted``: the name constraint's permitted
    subtrees; default IPv4 only, as Vast's root; an empty list: no name constraint)."""
    key = _key()
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vast-llm"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    if permitted is None:
        permitted = [x509.IPAddress(ipaddress.ip_network("0.0.0.0/0"))]
    usage = x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _HOUR)
        .not_valid_after(now + datetime.timedelta(days=365 * years))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
    )
    if permitted:
        builder = builder.add_extension(
            x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None),
            critical=True,
        )
    return Authority(key, builder.sign(key, hashes.SHA256()))


@functools.lru_cache(maxsize=1)
def foreign_authority() -> Authority:
    """A CA nobody trusts (the ``foreign_ca`` fault's impostor); one per process is plenty."""
    return new_authority("vast-llm impostor CA")


@functools.lru_cache(maxsize=1)
def foreign_leaf() -> Leaf:
    """The impostor's certificate for 127.0.0.1, from :func:`foreign_authority`."""
    return foreign_authority().issue()


class TLSFiles:
    """A private temporary directory with the PEM files uvicorn reads (removed by cleanup)."""

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="vast-emulator-tls-")  # mode 0700

    def write(self, name: str, data: bytes | str) -> str:
        """Write ``name`` (readable by this user only) and return its path."""
        path = os.path.join(self.directory, name)
        raw = data.encode("ascii") if isinstance(data, str) else data
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
        return path

    def server(self, name: str, leaf: Leaf) -> tuple[str, str]:
        """(certfile, keyfile) for a server presenting ``leaf``."""
        return self.write(f"{name}.crt", leaf.cert_pem), self.write(f"{name}.key", leaf.key_pem)

    def cleanup(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
