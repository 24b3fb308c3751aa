"""Trust for worker connections: Vast's own root CA, shipped in the package and pinned.

Vast's workers serve HTTPS (``https://<public ip>:<port>``) with certificates issued by Vast's
own root, "Vast.ai Jupyter CA", which no system store and not certifi carries. This module
builds the TLS contexts for them. It is pure: no network, nothing downloaded, ever.

- :func:`load_worker_ca` — the worker CA as PEM: the bundled root (checked against its pinned
  SHA-256 fingerprint on load) or one the user gives (``worker_ca`` / ``VAST_WORKER_CA``).
- :func:`worker_ssl_context` — trusts only that CA; for connections to workers.
- :func:`ssl_context` — certifi's roots (httpx's default) plus the worker CA, restricted to IP
  addresses; for one HTTP client that talks to both the router and the workers.
- :func:`certificate_error` — finds the certificate failure behind an httpx or aiohttp error.

Contexts are cached by the CA's content and shared: treat them as read-only.
"""

from __future__ import annotations

import datetime
import functools
import importlib.resources
import os
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

from ._errors import ConfigError

__all__ = [
    "VAST_ROOT_SHA256",
    "WorkerCA",
    "certificate_error",
    "load_worker_ca",
    "ssl_context",
    "worker_ssl_context",
]

WorkerCA = str | bytes | os.PathLike[str] | None

# SHA-256 over the DER of "Vast.ai Jupyter CA" (C=US, ST=CA, O=Vast.ai Inc.; valid 2026-03-09 to
# 2051-03-03), as published at https://console.vast.ai/static/jvastai_root.cer.
VAST_ROOT_SHA256 = "a1a78f9e1a806c74dad08b8f01f5f08c739fb70a5bfbb52d28923751c223451d"
_BUNDLED = "vast_root_ca.pem"
_NAMES = "worker_ca (or VAST_WORKER_CA)"


def load_worker_ca(source: WorkerCA = None) -> bytes:
    """The worker CA certificates as PEM bytes (normalised: certificate blocks only).

    Args:
        source: ``None`` for Vast's root bundled with the package; otherwise PEM text or bytes
            holding one or more certificates, or the path of a PEM file.

    Raises:
        ConfigError: ``source`` is not readable or holds no X.509 certificate; or the bundled
            root does not match its pinned fingerprint (a damaged or altered installation;
            never silently replaced by anything else).
    """
    if source is None:
        return _bundled()
    if isinstance(source, os.PathLike) or (isinstance(source, str) and "-----BEGIN" not in source):
        path = os.fspath(source)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise ConfigError(
                f"{_NAMES}: cannot read a PEM file at {path!r} ({exc.strerror}); pass the PEM "
                "text itself or a readable path"
            ) from None
    else:
        data = source.encode("utf-8", "replace") if isinstance(source, str) else source
    return _normalise(data)


@functools.lru_cache(maxsize=32)
def _normalise(data: bytes) -> bytes:
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError(
            f"{_NAMES} holds no PEM certificate (expected one or more '-----BEGIN "
            "CERTIFICATE-----' blocks: the CA that issued the workers' certificates)"
        ) from None
    # Only the certificates go on: anything else in the file (a private key by mistake)
    # never reaches a context, and equal CAs give equal bytes (one cached context).
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def _read_bundled() -> bytes:
    return importlib.resources.files("vast_llm").joinpath(_BUNDLED).read_bytes()


@functools.lru_cache(maxsize=1)
def _bundled() -> bytes:
    problem = "it holds no certificate"
    try:
        certificates = x509.load_pem_x509_certificates(_read_bundled())
    except (OSError, ValueError) as exc:
        certificates, problem = [], f"it cannot be read ({type(exc).__name__})"
    if len(certificates) == 1:
        digest = certificates[0].fingerprint(hashes.SHA256()).hex()
        if digest == VAST_ROOT_SHA256:
            return certificates[0].public_bytes(serialization.Encoding.PEM)
        problem = f"its SHA-256 is {digest}"
    elif certificates:
        problem = f"it holds {len(certificates)} certificates"
    raise ConfigError(
        f"the bundled Vast root CA (vast_llm/{_BUNDLED}) does not match its pinned "
        f"fingerprint {VAST_ROOT_SHA256}: {problem}. The installation is damaged or was "
        f"altered: reinstall vast-llm, or pass {_NAMES} with a CA you have checked yourself"
    )


def _configure(context: ssl.SSLContext) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True  # an IP address is matched against the IP SANs
    # Names come from subjectAltName only. This also keeps OpenSSL from reading a DNS-like
    # commonName (Vast's leaves ask for CN=pyworker.vast.ai) as a name under the DNS
    # constraint that ssl_context() adds.
    context.hostname_checks_common_name = False
    # VERIFY_X509_STRICT: on, on every Python (3.13 turns it on by default; earlier ones do
    # not). Vast's current root is well formed for it (SKI and AKI, critical basicConstraints
    # with pathlen 0 and keyCertSign, critical keyUsage), and a leaf issued under a CA built
    # exactly like it verifies with the flag set (tests/core/test_tls.py). The official SDK
    # clears the flag because an older Vast root had pathlen without keyCertSign; that root is
    # gone. What strict mode would still refuse is a leaf without an Authority Key Identifier
    # (verify code 85); such a failure is a certificate failure naming worker_ca like any other.
    # VERIFY_X509_PARTIAL_CHAIN: off (3.13's create_default_context turns it on): a chain must
    # end at a self-signed root we were given, as on 3.10-3.12, so pinning an intermediate or a
    # leaf does not quietly become a trust anchor.
    flags = context.verify_flags | ssl.VERIFY_X509_STRICT
    context.verify_flags = flags & ~ssl.VERIFY_X509_PARTIAL_CHAIN
    # httpcore sets ALPN again on every connection (to the same value for HTTP/1.1 clients);
    # setting it here makes the context complete for aiohttp and plain ssl users too.
    context.set_alpn_protocols(["http/1.1"])


def worker_ssl_context(worker_ca: WorkerCA = None) -> ssl.SSLContext:
    """The TLS context for connections to workers: trusts only the worker CA.

    Not the system store nor certifi: a worker certificate must chain to Vast's root (or to
    ``worker_ca``) and carry the worker's IP address as a subjectAltName. TLS 1.2 or newer,
    ``CERT_REQUIRED``, ``check_hostname`` on, ``VERIFY_X509_STRICT`` on and
    ``VERIFY_X509_PARTIAL_CHAIN`` off on every Python version.

    Contexts are cached by the CA's content (what building one costs: docs/benchmarks.md) and
    shared between clients: do not modify the one you get.

    Raises:
        ConfigError: as :func:`load_worker_ca`.
    """
    return _worker_context(load_worker_ca(worker_ca))


@functools.lru_cache(maxsize=16)
def _worker_context(pem: bytes) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # starts with no trusted CA at all
    _configure(context)
    context.load_verify_locations(cadata=pem.decode("ascii"))
    return context


def ssl_context(worker_ca: WorkerCA = None) -> ssl.SSLContext:
    """One TLS context for an HTTP client that talks to both the router and the workers.

    Trusts what httpx trusts by default (certifi's roots, or ``SSL_CERT_FILE`` /
    ``SSL_CERT_DIR`` when set) for the router, plus the worker CA for the workers::

        httpx.Client(verify=vast_llm.ssl_context())

    The worker CA is added restricted to IP addresses. Vast's root carries a critical name
    constraint permitting IPv4 addresses only, but a name constraint limits only the name
    types it lists: on its own it leaves DNS names unconstrained, so the root as published
    could vouch for any host name this client contacts. Here the CA is re-anchored: the
    context trusts a copy of each self-signed worker CA (same subject and key) issued by a
    throwaway in-memory anchor (its private key is dropped once the copies are signed), with
    the CA's own constraints plus an exclusion of every DNS name. Certificates from the worker
    CA then verify for IP addresses only; public host names keep their public roots. A
    worker certificate that also lists a DNS name is refused here (not by
    :func:`worker_ssl_context`).

    Cached and shared like :func:`worker_ssl_context` (keyed by the CA and the two variables).
    """
    pem = load_worker_ca(worker_ca)
    return _combined_context(
        pem, os.environ.get("SSL_CERT_FILE") or None, os.environ.get("SSL_CERT_DIR") or None
    )


@functools.lru_cache(maxsize=16)
def _combined_context(pem: bytes, cafile: str | None, capath: str | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _configure(context)
    if cafile or capath:
        context.load_verify_locations(cafile=cafile, capath=capath)
    else:
        import certifi  # httpx's own dependency, imported only when this context is built

        context.load_verify_locations(cafile=certifi.where())
    context.load_verify_locations(cadata=_ip_only(pem).decode("ascii"))
    return context


def _ip_only(pem: bytes) -> bytes:
    """``pem`` with each self-signed CA replaced by a copy that vouches for IP addresses only."""
    certificates = x509.load_pem_x509_certificates(pem)
    roots = [c for c in certificates if _is_ca(c) and c.issuer == c.subject]
    if not roots:
        return pem  # nothing that can anchor a chain: added as given
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vast-llm"),
            x509.NameAttribute(NameOID.COMMON_NAME, "vast-llm IP-only anchor for the worker CA"),
        ]
    )
    start = min(c.not_valid_before_utc for c in roots) - datetime.timedelta(days=1)
    end = max(c.not_valid_after_utc for c in roots) + datetime.timedelta(days=1)
    anchor = (
        _ca_builder(name, name, key.public_key(), start, end, path_length=None)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    issuer_id = x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key())
    out = [anchor]
    for root in roots:
        ext = root.extensions
        basic = ext.get_extension_for_class(x509.BasicConstraints).value
        try:
            subject_id = ext.get_extension_for_class(x509.SubjectKeyIdentifier).value
        except x509.ExtensionNotFound:
            subject_id = x509.SubjectKeyIdentifier.from_public_key(root.public_key())
        try:
            constraints: x509.NameConstraints | None = ext.get_extension_for_class(
                x509.NameConstraints
            ).value
        except x509.ExtensionNotFound:
            constraints = None
        permitted = constraints.permitted_subtrees if constraints else None
        excluded = list((constraints.excluded_subtrees or []) if constraints else [])
        excluded.append(x509.DNSName(""))  # the empty name matches every DNS name
        copy = (
            _ca_builder(
                root.subject,
                name,
                root.public_key(),
                root.not_valid_before_utc,
                root.not_valid_after_utc,
                path_length=basic.path_length,
            )
            .add_extension(subject_id, critical=False)
            .add_extension(issuer_id, critical=False)
            .add_extension(
                x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=excluded),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        out.append(copy)
    others = [c for c in certificates if c not in roots]  # non-CA pins can vouch for no one else
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in out + others)


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _ca_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: CertificatePublicKeyTypes,
    start: datetime.datetime,
    end: datetime.datetime,
    *,
    path_length: int | None,
) -> x509.CertificateBuilder:
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
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(usage, critical=True)
    )


def certificate_error(exc: BaseException | None) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind a transport error, or None.

    Follows ``__cause__`` / ``__context__`` (httpx → httpcore → ssl) and aiohttp's
    ``ClientConnectorCertificateError.certificate_error``. The result's ``verify_code`` and
    ``verify_message`` say what failed (e.g. 19/20 "unable to get local issuer certificate"
    for an unknown CA, 64 "IP address mismatch", 47/48 name-constraint violations).
    """
    seen: set[int] = set()
    pending = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        # aiohttp's error subclasses ssl.CertificateError itself, without ssl's fields: the
        # real one is its .certificate_error.
        inner = getattr(current, "certificate_error", None)
        if isinstance(inner, ssl.SSLCertVerificationError):
            return inner
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        pending.extend((current.__context__, current.__cause__))
    return None
