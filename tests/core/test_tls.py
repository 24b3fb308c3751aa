"""Worker trust (vast_llm._tls): the pinned root, the CA inputs, and real handshakes on 127.0.0.1.

The servers here are plain ``ssl`` sockets in a thread, presenting leaves issued by CAs built like
Vast's root (vast_llm.emulator._tls); every client check is a real TLS handshake.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import pathlib
import socket
import ssl
import threading
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from vast_llm import ConfigError
from vast_llm import _tls as tls
from vast_llm.emulator._tls import Authority, Leaf, _leaf_key, new_authority

SHARED_ROOT = pathlib.Path("/work/shared/vectors/vast_root_ca.pem")
PINNED = "A1A78F9E1A806C74DAD08B8F01F5F08C739FB70A5BFBB52D28923751C223451D"


@pytest.fixture(scope="module")
def ca() -> Authority:
    return new_authority("test worker CA")


@pytest.fixture(scope="module")
def foreign() -> Authority:
    return new_authority("test foreign CA")


class Server:
    """An HTTPS server on 127.0.0.1 presenting one certificate; records what reached it."""

    def __init__(self, leaf: Leaf, tmp: pathlib.Path) -> None:
        tmp.mkdir()
        cert, key = tmp / "leaf.crt", tmp / "leaf.key"
        cert.write_bytes(leaf.cert_pem)
        key.write_bytes(leaf.key_pem)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.received: list[bytes] = []  # request bytes, from connections that got through TLS
        self.handshakes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self.sock.accept()
            except OSError:
                continue
            raw.settimeout(5)
            try:
                with self.context.wrap_socket(raw, server_side=True) as conn:
                    self.handshakes += 1
                    data = b""
                    while b"\r\n\r\n" not in data:
                        piece = conn.recv(65536)
                        if not piece:
                            break
                        data += piece
                    if data:
                        self.received.append(data)
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            except (OSError, ssl.SSLError):
                raw.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def serve(tmp_path: pathlib.Path) -> Iterator[Any]:
    servers: list[Server] = []

    def start(leaf: Leaf) -> Server:
        server = Server(leaf, tmp_path / str(len(servers)))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def handshake(context: ssl.SSLContext, port: int, hostname: str) -> int | None:
    """Connect to 127.0.0.1:port checking ``hostname``; None if it verified, else the code."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with context.wrap_socket(raw, server_hostname=hostname):
                return None
        except ssl.SSLCertVerificationError as exc:
            return int(exc.verify_code)


def leaf_for(ca: Authority, names: list[x509.GeneralName], *, aki: bool = True) -> Leaf:
    """A leaf with arbitrary subjectAltNames (the emulator only issues IP leaves)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    key = _leaf_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test leaf")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if aki:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), False
        )
    cert = builder.sign(ca.key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Leaf(cert.public_bytes(serialization.Encoding.PEM), key_pem)


def ip(address: str) -> x509.GeneralName:
    return x509.IPAddress(ipaddress.ip_address(address))


# -- the bundled root ---------------------------------------------------------------------------


def test_bundled_root_is_vasts_and_matches_the_pin() -> None:
    pem = tls.load_worker_ca()
    (root,) = x509.load_pem_x509_certificates(pem)
    assert hashlib.sha256(root.public_bytes(serialization.Encoding.DER)).hexdigest() == (
        PINNED.lower()
    )
    assert PINNED.lower() == tls.VAST_ROOT_SHA256
    assert root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "Vast.ai Jupyter CA"
    )
    if SHARED_ROOT.exists():  # the copy the project was given
        assert x509.load_pem_x509_certificate(SHARED_ROOT.read_bytes()) == root


def test_the_emulator_ca_is_built_like_vasts_root(ca: Authority) -> None:
    (root,) = x509.load_pem_x509_certificates(tls.load_worker_ca())

    def shape(cert: x509.Certificate) -> set[tuple[str, bool]]:
        return {(e.oid.dotted_string, e.critical) for e in cert.extensions}

    assert shape(ca.cert) == shape(root)
    for cert in (ca.cert, root):
        ext = cert.extensions
        basic = ext.get_extension_for_class(x509.BasicConstraints).value
        assert basic.ca and basic.path_length == 0
        usage = ext.get_extension_for_class(x509.KeyUsage).value
        assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
        names = ext.get_extension_for_class(x509.NameConstraints).value
        assert names.permitted_subtrees == [x509.IPAddress(ipaddress.ip_network("0.0.0.0/0"))]
        assert names.excluded_subtrees is None


@pytest.fixture
def bundled_file(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[pathlib.Path]:
    """Point the package-data lookup at a copy we can alter; the cache is cleared around it."""
    (tmp_path / "vast_root_ca.pem").write_bytes(tls._read_bundled())
    monkeypatch.setattr(tls.importlib.resources, "files", lambda _package: tmp_path)
    tls._bundled.cache_clear()
    yield tmp_path / "vast_root_ca.pem"
    tls._bundled.cache_clear()


def test_an_intact_copy_loads(bundled_file: pathlib.Path) -> None:
    assert tls.load_worker_ca() == bundled_file.read_bytes()


@pytest.mark.parametrize(
    ("tamper", "says"),
    [
        ("other_ca", "its SHA-256 is"),  # a valid certificate, but not Vast's
        ("flip_signature_byte", "SHA-256"),  # Vast's, one byte altered
        ("garbage", "cannot be read"),
        ("two_certificates", "holds 2 certificates"),
        ("missing", "cannot be read"),
    ],
)
def test_a_tampered_bundle_raises_and_never_falls_back(
    bundled_file: pathlib.Path, ca: Authority, tamper: str, says: str
) -> None:
    original = bundled_file.read_bytes()
    if tamper == "other_ca":
        bundled_file.write_text(ca.pem)
    elif tamper == "flip_signature_byte":
        der = bytearray(
            x509.load_pem_x509_certificate(original).public_bytes(serialization.Encoding.DER)
        )
        der[-5] ^= 0x01
        changed = x509.load_der_x509_certificate(bytes(der))
        bundled_file.write_bytes(changed.public_bytes(serialization.Encoding.PEM))
    elif tamper == "garbage":
        bundled_file.write_bytes(b"not a certificate")
    elif tamper == "two_certificates":
        bundled_file.write_bytes(original + ca.pem.encode())
    else:
        bundled_file.unlink()
    with pytest.raises(ConfigError, match="pinned fingerprint") as info:
        tls.worker_ssl_context()
    assert says in str(info.value) and "worker_ca" in str(info.value)
    with pytest.raises(ConfigError):  # every later call too: no silent fallback
        tls.load_worker_ca()


# -- CA inputs ----------------------------------------------------------------------------------


def test_pem_text_bytes_and_paths(ca: Authority, tmp_path: pathlib.Path) -> None:
    expected = ca.pem.encode()
    path = tmp_path / "ca.pem"
    path.write_text("comment before\n" + ca.pem + "trailing text\n")
    assert tls.load_worker_ca(ca.pem) == expected
    assert tls.load_worker_ca(expected) == expected
    assert tls.load_worker_ca(str(path)) == expected
    assert tls.load_worker_ca(path) == expected


def test_only_certificates_are_kept(ca: Authority, foreign: Authority) -> None:
    key = ca.issue().key_pem.decode()
    loaded = tls.load_worker_ca(key + ca.pem + foreign.pem)
    assert b"PRIVATE KEY" not in loaded
    assert len(x509.load_pem_x509_certificates(loaded)) == 2


@pytest.mark.parametrize(
    "source",
    [
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
        b"just some bytes",
        b"",
        "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n",
    ],
)
def test_garbage_is_a_config_error_naming_the_setting(source: str | bytes) -> None:
    with pytest.raises(ConfigError, match=r"worker_ca \(or VAST_WORKER_CA\)"):
        tls.worker_ssl_context(source)


def test_an_unreadable_path_is_a_config_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match="cannot read a PEM file") as info:
        tls.load_worker_ca(str(tmp_path / "missing.pem"))
    assert "VAST_WORKER_CA" in str(info.value)


# -- the contexts -------------------------------------------------------------------------------


def test_worker_context_settings(ca: Authority) -> None:
    context = tls.worker_ssl_context(ca.pem)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_flags & ssl.VERIFY_X509_STRICT
    assert not context.verify_flags & ssl.VERIFY_X509_PARTIAL_CHAIN
    assert not context.hostname_checks_common_name
    # Only the worker CA: not the system store, not certifi.
    (only,) = context.get_ca_certs()
    assert (("commonName", "test worker CA"),) in only["subject"]


def test_contexts_are_cached_by_content(ca: Authority, foreign: Authority) -> None:
    assert tls.worker_ssl_context(ca.pem) is tls.worker_ssl_context(ca.pem.encode())
    assert tls.worker_ssl_context(ca.pem) is not tls.worker_ssl_context(foreign.pem)
    assert tls.worker_ssl_context() is tls.worker_ssl_context(None)
    assert tls.ssl_context(ca.pem) is tls.ssl_context(ca.pem)


def test_combined_context_trusts_certifi_and_the_worker_ca(
    ca: Authority, monkeypatch: pytest.MonkeyPatch
) -> None:
    import certifi

    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)

    context = tls.ssl_context(ca.pem)
    public = ssl.create_default_context(cafile=certifi.where()).get_ca_certs()
    subjects = [c["subject"] for c in context.get_ca_certs()]
    assert len(subjects) == len(public) + 2  # certifi's roots, our anchor, the CA's copy
    assert all(c["subject"] in subjects for c in public)
    assert context.verify_flags & ssl.VERIFY_X509_STRICT


# -- real handshakes ----------------------------------------------------------------------------


def test_handshake_with_a_leaf_from_the_worker_ca(ca: Authority, serve: Any) -> None:
    server = serve(ca.issue())
    with httpx.Client(verify=tls.worker_ssl_context(ca.pem)) as client:
        response = client.get(f"https://127.0.0.1:{server.port}/health")
    assert response.status_code == 200 and response.text == "ok"
    assert server.received[0].startswith(b"GET /health HTTP/1.1")


def test_a_foreign_ca_fails_before_any_request_byte(
    ca: Authority, foreign: Authority, serve: Any
) -> None:
    server = serve(foreign.issue())
    with (
        httpx.Client(verify=tls.worker_ssl_context(ca.pem)) as client,
        pytest.raises(httpx.ConnectError) as info,
    ):
        client.post(f"https://127.0.0.1:{server.port}/generate", content=b"secret prompt")
    cause = tls.certificate_error(info.value)
    assert cause is not None and cause.verify_code == 20  # unable to get local issuer
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)
    assert server.received == [] and server.handshakes == 0


def test_the_bundled_root_refuses_the_emulator_ca(ca: Authority, serve: Any) -> None:
    server = serve(ca.issue())
    assert handshake(tls.worker_ssl_context(), server.port, "127.0.0.1") == 20


def test_an_ip_mismatch_fails(ca: Authority, serve: Any) -> None:
    server = serve(leaf_for(ca, [ip("127.0.0.2")]))
    context = tls.worker_ssl_context(ca.pem)
    assert handshake(context, server.port, "127.0.0.1") == 64  # IP address mismatch
    assert handshake(context, server.port, "127.0.0.2") is None  # the same leaf, its own IP
    assert server.received == []


def test_x509_strict_set_explicitly_passes_a_well_formed_leaf(ca: Authority, serve: Any) -> None:
    # What Python 3.13 does by default, set by hand on this Python, on a plain context: a CA
    # built exactly like Vast's root and a properly formed leaf verify under strict rules.
    server = serve(ca.issue())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=ca.pem)
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    assert handshake(context, server.port, "127.0.0.1") is None
    assert handshake(tls.worker_ssl_context(ca.pem), server.port, "127.0.0.1") is None


def test_x509_strict_refuses_a_leaf_without_authority_key_identifier(
    ca: Authority, serve: Any
) -> None:
    # The one thing strict mode asks of a leaf beyond the usual: an AKI. The official SDK
    # clears the flag; we keep it and document this (see _tls._configure).
    server = serve(leaf_for(ca, [ip("127.0.0.1")], aki=False))
    relaxed = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    relaxed.load_verify_locations(cadata=ca.pem)
    relaxed.verify_flags &= ~ssl.VERIFY_X509_STRICT
    assert handshake(relaxed, server.port, "127.0.0.1") is None
    assert handshake(tls.worker_ssl_context(ca.pem), server.port, "127.0.0.1") == 85


def test_name_constraints_refuse_addresses_outside_ipv4(ca: Authority, serve: Any) -> None:
    server = serve(leaf_for(ca, [ip("::1")]))
    for context in (tls.worker_ssl_context(ca.pem), tls.ssl_context(ca.pem)):
        assert handshake(context, server.port, "::1") == 47  # permitted subtree violation


def test_dns_names_under_the_worker_ca(ca: Authority, serve: Any) -> None:
    # An IPv4-only permitted subtree constrains IP addresses, not DNS names: with the root as
    # published, a leaf for a host name verifies (harmless in the worker context, which only
    # ever sees worker IPs). The combined context re-anchors the CA with every DNS name
    # excluded, so there the same leaf is refused, even beside a valid IP.
    dns_only = serve(leaf_for(ca, [x509.DNSName("run.vast.ai")]))
    both = serve(leaf_for(ca, [ip("127.0.0.1"), x509.DNSName("evil.example")]))
    worker, combined = tls.worker_ssl_context(ca.pem), tls.ssl_context(ca.pem)
    assert handshake(worker, dns_only.port, "run.vast.ai") is None
    assert handshake(combined, dns_only.port, "run.vast.ai") == 48  # excluded subtree
    assert handshake(combined, both.port, "127.0.0.1") == 48
    assert handshake(combined, both.port, "evil.example") == 48


def test_combined_context_verifies_ip_leaves_under_strict(ca: Authority, serve: Any) -> None:
    server = serve(ca.issue())
    with httpx.Client(verify=tls.ssl_context(ca.pem)) as client:
        assert client.get(f"https://127.0.0.1:{server.port}/").text == "ok"


def test_combined_context_follows_ssl_cert_file(
    ca: Authority, serve: Any, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The router side trusts what httpx would: SSL_CERT_FILE when set.
    public = new_authority("a private public CA", permitted=[])
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(public.pem)
    server = serve(leaf_for(public, [x509.DNSName("router.example")]))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    assert handshake(tls.ssl_context(ca.pem), server.port, "router.example") is None
    monkeypatch.delenv("SSL_CERT_FILE")
    assert handshake(tls.ssl_context(ca.pem), server.port, "router.example") == 20


def test_a_leaf_pinned_as_worker_ca_is_not_an_anchor(ca: Authority, serve: Any) -> None:
    # VERIFY_X509_PARTIAL_CHAIN off: trusting a leaf certificate does not make it an anchor.
    leaf = ca.issue()
    server = serve(leaf)
    assert handshake(tls.worker_ssl_context(leaf.cert_pem), server.port, "127.0.0.1") == 20


# -- recognising a certificate failure ----------------------------------------------------------


async def test_certificate_error_on_httpx_async_and_aiohttp(
    ca: Authority, foreign: Authority, serve: Any
) -> None:
    server = serve(foreign.issue())
    url = f"https://127.0.0.1:{server.port}/"
    context = tls.worker_ssl_context(ca.pem)
    async with httpx.AsyncClient(verify=context) as client:
        with pytest.raises(httpx.ConnectError) as httpx_info:
            await client.get(url)
    assert tls.certificate_error(httpx_info.value) is not None
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorCertificateError) as aiohttp_info:
            await session.get(url, ssl=context)
    cause = tls.certificate_error(aiohttp_info.value)
    assert cause is not None and cause.verify_code == 20
    # vast_llm._aiohttp translates it into httpx.ConnectError `from` the aiohttp error.
    from vast_llm._aiohttp import translate

    translated = translate(aiohttp_info.value)
    assert isinstance(translated, httpx.ConnectError)
    translated.__cause__ = aiohttp_info.value
    assert tls.certificate_error(translated) is cause
    assert server.received == []


def test_other_failures_are_not_certificate_errors() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with (
        httpx.Client(verify=tls.worker_ssl_context()) as client,
        pytest.raises(httpx.ConnectError) as info,
    ):
        client.get(f"https://127.0.0.1:{port}/")
    assert tls.certificate_error(info.value) is None
    assert tls.certificate_error(None) is None
