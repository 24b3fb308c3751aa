"""Signature recipes and verification, against the shared vectors (checked by real worker code)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import load_vectors
from vast_llm import ConfigError
from vast_llm._signing import (
    MEMO_SIZE,
    RECIPES,
    Memo,
    MemoDict,
    check_key_size,
    load_public_key,
    public_key_pem,
    sign,
    signed_message,
    verify,
)

VECTORS = load_vectors("signatures.json")
CASES = VECTORS["cases"]
KEY = load_public_key(VECTORS["public_key_spki_pem"])


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_vector_verdict_under_its_recipe(case: dict[str, Any]) -> None:
    answer = json.loads(case["route_answer"])  # parsed, never re-typed
    assert (verify(KEY, answer, (case["recipe"],)) == case["recipe"]) is case["valid"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_client_trying_every_recipe(case: dict[str, Any]) -> None:
    """The client accepts an answer if any known recipe verifies it under the key."""
    answer = json.loads(case["route_answer"])
    recipe = verify(KEY, answer)
    if case["name"] == "g1-signature-checked-as-g3":
        assert recipe == "g1"  # a client trying all recipes accepts it under g1
    elif case["valid"]:
        assert recipe == case["recipe"]
    else:
        assert recipe is None


def test_pkcs1_pem_loads_the_same_key() -> None:
    pkcs1 = load_public_key(VECTORS["public_key_pkcs1_pem"])
    assert pkcs1.public_numbers() == KEY.public_numbers()


def test_key_from_bytes_and_from_path(tmp_path: Any) -> None:
    path = tmp_path / "key.pem"
    path.write_text(VECTORS["public_key_spki_pem"])
    assert load_public_key(str(path)).public_numbers() == KEY.public_numbers()
    assert load_public_key(path).public_numbers() == KEY.public_numbers()
    assert load_public_key(VECTORS["public_key_spki_pem"].encode()).public_numbers() == (
        KEY.public_numbers()
    )


@pytest.mark.parametrize(
    "source", ["-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n", "/no/such/file.pem"]
)
def test_bad_key_is_a_config_error(source: str) -> None:
    with pytest.raises(ConfigError, match="public_key"):
        load_public_key(source)


def test_g1_message_keeps_key_order_and_types() -> None:
    answer = {"url": "http://h:1", "reqnum": 7, "endpoint": "e", "cost": 256}
    assert (
        signed_message("g1", answer)
        == json.dumps(
            {"cost": 256, "endpoint": "e", "reqnum": 7, "url": "http://h:1"}, indent=4
        ).encode()
    )
    assert b"256.0" in (signed_message("g1", {**answer, "cost": 256.0}) or b"")


def test_missing_field_means_no_message() -> None:
    assert signed_message("g2", {"url": "http://h:1"}) is None
    assert signed_message("g3", {}) is None


def test_garbage_signatures_never_verify() -> None:
    answer = json.loads(CASES[0]["route_answer"])
    for bad in (None, "", 42, "not base64!!", base64.b64encode(b"x" * 256).decode()):
        assert verify(KEY, {**answer, "signature": bad}) is None


PRIVATE = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC = PRIVATE.public_key()
urls = st.from_regex(r"https?://[a-z0-9.]{1,20}:[0-9]{2,5}", fullmatch=True)


@given(url=urls, other=urls, recipe=st.sampled_from(RECIPES))
def test_a_signature_never_verifies_for_a_changed_url(url: str, other: str, recipe: Any) -> None:
    answer = {"url": url, "cost": 256.0, "endpoint": "e", "reqnum": 3, "request_idx": 9}
    answer["signature"] = sign(PRIVATE, recipe, answer)
    assert verify(PUBLIC, answer) is not None
    if other != url:
        assert verify(PUBLIC, {**answer, "url": other}) is None


def test_pem_roundtrip() -> None:
    assert load_public_key(public_key_pem(PUBLIC)).public_numbers() == PUBLIC.public_numbers()


@given(url=st.text())
def test_g3_message_is_json_dumps_with_indent_byte_for_byte(url: str) -> None:
    """The g3 fast path builds the exact bytes workers hash (json.dumps, indent=4, sorted)."""
    expected = json.dumps({"url": url}, indent=4, sort_keys=True).encode()
    assert signed_message("g3", {"url": url}) == expected


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_memo_never_changes_a_verdict(case: dict[str, Any]) -> None:
    answer = json.loads(case["route_answer"])
    memo = Memo()
    first = verify(KEY, answer, memo=memo)
    assert first == verify(KEY, answer)
    assert verify(KEY, answer, memo=memo) == first  # answered from the memo
    assert memo or first is None  # undecodable signatures are refused before any check


class _CountingKey:
    """A public key that counts its RSA checks."""

    def __init__(self, key: rsa.RSAPublicKey) -> None:
        self.key, self.checks = key, 0
        self.key_size = key.key_size

    def verify(self, *args: Any) -> None:
        self.checks += 1
        self.key.verify(*args)


def test_memo_skips_only_the_identical_check() -> None:
    answer = {"url": "http://10.0.0.1:8000", "cost": 1.0, "endpoint": "e", "reqnum": 1}
    answer["signature"] = sign(PRIVATE, "g3", answer)
    key: Any = _CountingKey(PUBLIC)
    memo = Memo()
    for reqnum in range(5):  # g3 signs the URL only: one worker, one signature, one check
        assert verify(key, {**answer, "reqnum": reqnum}, ("g3",), memo) == "g3"
    assert key.checks == 1
    # Another URL under the same signature is a new check, and fails.
    assert verify(key, {**answer, "url": "http://10.0.0.2:8000"}, ("g3",), memo) is None
    assert key.checks == 2
    # A tampered signature is a new check, and fails (also when asked again).
    tampered = base64.b64encode(b"\0" + base64.b64decode(answer["signature"])[1:]).decode()
    for _ in range(2):
        assert verify(key, {**answer, "signature": tampered}, ("g3",), memo) is None
    assert key.checks == 3
    # Another key (a rotation) is a new check: the memo is per key object.
    other: Any = _CountingKey(PUBLIC)
    assert verify(other, answer, ("g3",), memo) == "g3" and other.checks == 1
    other_private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert verify(other_private.public_key(), answer, ("g3",), memo) is None


def test_memo_stays_bounded() -> None:
    memo: MemoDict = {}  # a plain dict: bounded by entries, each small
    for port in range(MEMO_SIZE + 10):
        answer = {"url": f"http://10.0.0.1:{port}"}
        answer["signature"] = base64.b64encode(b"x" * 256).decode()
        verify(PUBLIC, answer, ("g3",), memo)
    assert len(memo) <= MEMO_SIZE


def test_memo_is_bounded_by_bytes() -> None:
    """Issue 14 item 9: 60 KB worker URLs kept ~60 KB each in a memo of 1,024 entries."""
    answer = {"url": "http://w:1/"}
    answer["signature"] = sign(PRIVATE, "g3", answer)
    memo = Memo(max_bytes=64 << 10)
    for n in range(2000):
        verify(PUBLIC, {**answer, "url": f"http://w:1/{n}"}, ("g3",), memo)
        assert memo.size <= memo.max_bytes
    assert 0 < len(memo) < 2000
    huge = {**answer, "url": "http://w:1/" + "a" * 60_000}
    for memo_kind in (Memo(), {}):
        assert verify(PUBLIC, huge, ("g3",), memo_kind) is None
        assert not memo_kind  # too big to keep: checked again next time instead
    assert verify(PUBLIC, answer, ("g3",), memo) == "g3" and verify(PUBLIC, answer, memo=memo)


WEAK = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 (the point)


def test_keys_under_2048_bits_are_refused() -> None:
    """Issue 14 item 9: a 1024-bit key was accepted, pinned or served by /pubkey/."""
    with pytest.raises(ConfigError, match="1024-bit RSA key; at least 2048"):
        load_public_key(public_key_pem(WEAK.public_key()))
    with pytest.raises(ConfigError, match="1024-bit"):
        check_key_size(WEAK.public_key())
    answer = {"url": "http://w:1"}
    answer["signature"] = sign(WEAK, "g3", answer)
    # Handed over as an object, past the loader: its signatures still verify nothing.
    assert verify(WEAK.public_key(), answer) is None
