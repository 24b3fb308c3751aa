"""Signed-message recipes, verification and key loading (shared by the client and the emulator).

Every Vast worker generation checks SHA-256 / RSA PKCS#1 v1.5 over the UTF-8 bytes of a
``json.dumps`` string; what changed over time is which fields go into that string. The values
go in exactly as the router sent them (an int stays an int, a float stays a float), so callers
must hand us the route answer as parsed, never re-typed.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ._errors import ConfigError

__all__ = [
    "MEMO_BYTES",
    "MEMO_SIZE",
    "MIN_KEY_BITS",
    "RECIPES",
    "Memo",
    "MemoDict",
    "Recipe",
    "check_key_size",
    "load_public_key",
    "public_key_pem",
    "sign",
    "signed_message",
    "verify",
]

Recipe = Literal["g3", "g2", "g1"]
# Newest first: the recipe production uses today is tried first.
RECIPES: tuple[Recipe, ...] = ("g3", "g2", "g1")

_G2_FIELDS = ("cost", "endpoint", "reqnum", "request_idx", "url")
_G1_FIELDS = ("cost", "endpoint", "reqnum", "url")
# RSA keys shorter than this are factorable with public effort (NIST SP 800-131A disallows
# them for signatures since 2014); the autoscaler's key is 2048 bits.
MIN_KEY_BITS = 2048
_PADDING = padding.PKCS1v15()
_HASH = hashes.SHA256()


def signed_message(recipe: Recipe, answer: Mapping[str, Any]) -> bytes | None:
    """The bytes a worker of this generation verifies, or None if the answer lacks a field."""
    try:
        if recipe == "g3":
            url = answer["url"]
            if isinstance(url, str):
                # The bytes of json.dumps({"url": url}, indent=4, sort_keys=True), without the
                # pure-Python encoder that indent= selects (tests compare the two).
                return b'{\n    "url": ' + json.dumps(url).encode() + b"\n}"
            return json.dumps({"url": url}, indent=4, sort_keys=True).encode()
        if recipe == "g2":
            message = {name: answer[name] for name in _G2_FIELDS}
            return json.dumps(message, indent=4, sort_keys=True).encode()
        if recipe == "g1":
            # Key order matters here: G1 workers do not sort.
            return json.dumps({name: answer[name] for name in _G1_FIELDS}, indent=4).encode()
    except (KeyError, RecursionError):  # a field missing, or nested too deeply to encode
        return None
    raise ValueError(f"unknown signing recipe {recipe!r}; expected one of {RECIPES}")


def _decode_signature(signature: Any) -> bytes | None:
    if not isinstance(signature, str) or not signature:
        return None
    try:
        # Standard alphabet only, as the workers decode it: url-safe base64 must not pass.
        return base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return None


# A memo of checks already made: (id(key), recipe, signature, message) -> (key, outcome).
# The key itself rides in the value, so its id cannot be reused while the entry lives.
Slot = tuple[int, str, str, bytes]
MemoDict = dict[Slot, tuple[rsa.RSAPublicKey, bool]]
MEMO_BYTES = 1 << 20  # a usual entry holds ~0.5 KB (a 344-character signature, a short URL)
MEMO_SIZE = 1024  # entries of a plain dict used as a memo (each at most _PLAIN_ENTRY bytes)
_PLAIN_ENTRY = 4 << 10
_ENTRY_OVERHEAD = 200  # the tuples, the dict slot and the bool, roughly


class Memo(MemoDict):
    """Signature checks already made, bounded by the bytes they hold, not by their number.

    A worker URL comes from the autoscaler and can be 60 KB long, and every entry holds its
    signed message, so a count of entries bounds nothing. Entries over 1/64 of ``max_bytes``
    (16 KiB by default) are not kept (that check is simply made again); when the next entry
    would pass ``max_bytes``, the memo starts over.
    """

    def __init__(self, max_bytes: int = MEMO_BYTES) -> None:
        super().__init__()
        self.max_bytes = max_bytes
        self.size = 0

    def remember(self, slot: Slot, outcome: tuple[rsa.RSAPublicKey, bool]) -> None:
        cost = _ENTRY_OVERHEAD + len(slot[2]) + len(slot[3])
        if cost > self.max_bytes // 64:
            return
        if self.size + cost > self.max_bytes:
            self.clear()
        self[slot] = outcome
        self.size += cost

    def clear(self) -> None:
        super().clear()
        self.size = 0


def _remember(memo: MemoDict, slot: Slot, outcome: tuple[rsa.RSAPublicKey, bool]) -> None:
    if isinstance(memo, Memo):
        memo.remember(slot, outcome)
    elif len(slot[2]) + len(slot[3]) <= _PLAIN_ENTRY:  # a plain dict: bounded per entry
        if len(memo) >= MEMO_SIZE:
            memo.clear()
        memo[slot] = outcome


def verify(
    key: rsa.RSAPublicKey,
    answer: Mapping[str, Any],
    recipes: Sequence[Recipe] = RECIPES,
    memo: MemoDict | None = None,
) -> Recipe | None:
    """Return the first recipe under which ``answer["signature"]`` verifies, or None.

    With ``memo`` (a :class:`Memo`), a check already made is not made again. An RSA check is
    a pure function of key, message and signature, and PKCS#1 v1.5 signatures are
    deterministic: g3 signs only the worker's URL, so every assignment to one worker carries
    the same signature over the same bytes. The memo turns that repeat (an RSA check per call;
    its cost: docs/benchmarks.md) into a dict lookup; any change of key, message or signature
    is a new check.
    """
    signature = answer.get("signature")
    raw = _decode_signature(signature)
    if raw is None or key.key_size < MIN_KEY_BITS:  # a weak key proves nothing
        return None
    assert isinstance(signature, str)  # _decode_signature admits strings only
    for recipe in recipes:
        message = signed_message(recipe, answer)
        if message is None:
            continue
        slot = (id(key), recipe, signature, message)
        known = memo.get(slot) if memo is not None else None
        if known is not None and known[0] is key:
            ok = known[1]
        else:
            try:
                key.verify(raw, message, _PADDING, _HASH)
                ok = True
            except InvalidSignature:
                ok = False
            if memo is not None:
                _remember(memo, slot, (key, ok))
        if ok:
            return recipe
    return None


def sign(key: rsa.RSAPrivateKey, recipe: Recipe, answer: Mapping[str, Any]) -> str:
    """Sign a route answer the way the autoscaler does (used by the emulator and tests)."""
    message = signed_message(recipe, answer)
    if message is None:
        raise ValueError(f"the answer lacks a field the {recipe} recipe signs")
    return base64.b64encode(key.sign(message, _PADDING, _HASH)).decode()


def load_public_key(source: str | bytes | os.PathLike[str]) -> rsa.RSAPublicKey:
    """Load an RSA public key from PEM text or bytes (SPKI or PKCS#1), or from a PEM file path."""
    if isinstance(source, os.PathLike) or (isinstance(source, str) and "-----BEGIN" not in source):
        path = os.fspath(source)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise ConfigError(
                f"public_key: cannot read a PEM file at {path!r} ({exc.strerror}); "
                "pass the PEM text itself or a readable path"
            ) from None
    else:
        data = source.encode() if isinstance(source, str) else source
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(
            "public_key is not a PEM public key (expected '-----BEGIN PUBLIC KEY-----' "
            "or '-----BEGIN RSA PUBLIC KEY-----')"
        ) from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ConfigError("public_key must be an RSA key (the autoscaler signs with RSA)")
    return check_key_size(key)


def check_key_size(key: rsa.RSAPublicKey) -> rsa.RSAPublicKey:
    """``key``, if it is at least :data:`MIN_KEY_BITS` long; else :class:`ConfigError`."""
    if key.key_size < MIN_KEY_BITS:
        raise ConfigError(
            f"public_key is a {key.key_size}-bit RSA key; at least {MIN_KEY_BITS} bits are "
            "required (a shorter key can be factored, and its signatures forged)"
        )
    return key


def public_key_pem(key: rsa.RSAPublicKey) -> str:
    """The SPKI PEM text of a public key, as ``GET /pubkey/`` serves it."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
