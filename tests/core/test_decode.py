"""Bounded Content-Encoding decoding: round trips split anywhere, limits, refusals, and bombs
that stop at the limit with memory proportional to it (measured in a memory-capped process)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import zlib

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.reliability.bombs import MiB, bomb, encode, zstandard
from vast_llm._decode import (
    MAX_LAYERS,
    BadEncoding,
    BoundedDecoder,
    TooLarge,
    accept_encoding,
    codings,
    supported,
)

# Codings this environment can produce and decode; deflate-raw is sent as "deflate".
CODINGS = ["gzip", "deflate", "deflate-raw"]
CODINGS += ["zstd"] if zstandard is not None else []
CODINGS += ["br"] if "br" in supported() else []


def header(stack: list[str]) -> str:
    return ", ".join(name.replace("-raw", "") for name in stack)


def encoded(data: bytes, stack: list[str]) -> bytes:
    for name in stack:
        data = encode(name, data)
    return data


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    out, last = [], 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}):
        out.append(data[last:cut])
        last = cut
    out.append(data[last:])
    return out


def decode_all(head: str | None, parts: list[bytes], limit: int = 1 << 30, **kw: int) -> bytes:
    decoder = BoundedDecoder(head, limit, **kw)  # type: ignore[arg-type]
    return b"".join(decoder.feed(part) for part in parts) + decoder.flush()


@given(
    data=st.binary(max_size=3000) | st.text(max_size=2000).map(str.encode),
    stack=st.lists(st.sampled_from(CODINGS), min_size=0, max_size=MAX_LAYERS),
    cuts=st.lists(st.integers(min_value=0), max_size=12),
    step=st.sampled_from([1, 3, 64, 1 << 16]),
)
def test_round_trip_split_anywhere(
    data: bytes, stack: list[str], cuts: list[int], step: int
) -> None:
    body = encoded(data, stack)
    assert decode_all(header(stack), pieces(body, cuts), step=step) == data


@given(
    data=st.binary(min_size=1, max_size=2000),
    stack=st.lists(st.sampled_from(CODINGS), min_size=1, max_size=2),
    step=st.integers(min_value=1, max_value=300),
)
def test_pieces_never_exceed_the_step(data: bytes, stack: list[str], step: int) -> None:
    decoder = BoundedDecoder(header(stack), 1 << 20, step=step)
    out = list(decoder.decode(encoded(data, stack)))
    assert all(0 < len(piece) <= step for piece in out)
    assert b"".join(out) + decoder.flush() == data


@given(data=st.binary(max_size=2000), name=st.sampled_from(["gzip", "deflate", "deflate-raw"]))
def test_same_bytes_as_httpx(data: bytes, name: str) -> None:
    body = encode(name, data)
    coding = name.replace("-raw", "")
    response = httpx.Response(200, headers={"content-encoding": coding}, content=body)
    assert response.read() == decode_all(coding, [body]) == data


@given(data=st.binary(min_size=1, max_size=4000), limit=st.integers(min_value=0, max_value=4000))
def test_the_limit_counts_decoded_bytes(data: bytes, limit: int) -> None:
    body = encode("gzip", data)
    if len(data) <= limit:
        assert decode_all("gzip", [body], limit) == data
    else:
        with pytest.raises(TooLarge):
            decode_all("gzip", [body], limit)
    truncating = BoundedDecoder("gzip", limit, truncate=True)
    out = truncating.feed(body) + truncating.flush()
    assert out == data[:limit] and truncating.full == (len(data) > limit)
    if truncating.full:
        assert truncating.feed(b"more") == b""  # nothing more once full


def test_identity_counts_too() -> None:
    decoder = BoundedDecoder(None, 10)
    assert decoder.identity and decoder.feed(b"12345") == b"12345"
    with pytest.raises(TooLarge):
        decoder.feed(b"678901")
    truncating = BoundedDecoder("identity", 10, truncate=True)
    assert truncating.feed(b"1234567") + truncating.feed(b"89012") == b"1234567890"


def test_header_forms() -> None:
    assert codings(None) == [] and codings("") == [] and codings("identity") == []
    assert codings("GZip, ,x-gzip") == ["gzip", "gzip"]
    assert codings(["gzip", "identity, Deflate"]) == ["gzip", "deflate"]
    data = b"two header lines are one list"
    body = encode("deflate", encode("gzip", data))
    assert decode_all(["gzip", "deflate"], [body]) == data  # type: ignore[arg-type]
    assert decode_all("x-gzip", [encode("gzip", data)]) == data
    assert accept_encoding().startswith("gzip, deflate")


def test_gzip_members_and_padding() -> None:
    body = gzip.compress(b"one ") + b"\0\0\0" + gzip.compress(b"two")
    assert decode_all("gzip", pieces(body, [1, 21, 22, 25])) == b"one two"


def test_an_empty_body_is_fine_under_any_coding() -> None:
    for name in ["gzip", "deflate", *(["zstd"] if zstandard else [])]:
        assert decode_all(name, [b""]) == b""


@pytest.mark.parametrize(
    ("coding", "body", "match"),
    [
        ("gzip", b"plain text, not gzip", "not valid gzip"),
        ("deflate", b"\xff\xff plain", "not valid deflate"),
        ("gzip", gzip.compress(b"x" * 1000, mtime=0)[:-10], "ended before"),  # cut short
        ("deflate", zlib.compress(b"hello") + b"junk", "after the end"),
        ("gzip", gzip.compress(b"hello", mtime=0) + b"junk", "not valid gzip"),
        ("deflate", b"x", "ended before"),
    ],
)
def test_bad_bodies(coding: str, body: bytes, match: str) -> None:
    with pytest.raises(BadEncoding, match=match):
        decode_all(coding, [body])


@pytest.mark.parametrize(
    ("coding", "match"),
    [
        ("compress", "unknown Content-Encoding 'compress'"),
        ("gzip, rot13", "unknown"),
        (", ".join(["gzip"] * (MAX_LAYERS + 1)), "at most 3 layers"),
    ],
)
def test_refused_codings(coding: str, match: str) -> None:
    with pytest.raises(BadEncoding, match=match):
        BoundedDecoder(coding, 100)


@pytest.mark.skipif(zstandard is None, reason="zstandard is not installed")
def test_zstd_frames_and_window() -> None:
    body = encode("zstd", b"first ") + encode("zstd", b"second")
    assert decode_all("zstd", pieces(body, [3, 10, 20])) == b"first second"
    huge_window = zstandard.ZstdCompressor(
        compression_params=zstandard.ZstdCompressionParameters(window_log=27)
    ).compressobj()
    body = huge_window.compress(b"\0" * 1000) + huge_window.flush()
    with pytest.raises(BadEncoding, match="zstd"):
        decode_all("zstd", [body])


def test_endless_empty_blocks_hit_the_raw_limit() -> None:
    # A stored deflate block of length 0, forever: input without output.
    decoder = BoundedDecoder("deflate", 1000)
    decoder.feed(b"\x78\x01")
    with pytest.raises(TooLarge, match="compressed body"):
        decoder.feed(b"\x00\x00\x00\xff\xff" * 100_000)


BOMBS = ["gzip", "gzip, gzip", "deflate", "deflate, gzip"]
BOMBS += ["zstd", "gzip, zstd"] if zstandard is not None else []
BOMBS += ["br"] if "br" in supported() else []


@pytest.mark.parametrize("coding", BOMBS)
def test_bombs_stop_at_the_limit(coding: str) -> None:
    body = bomb(coding)
    decoder = BoundedDecoder(coding, MiB)

    def feed_in_pieces() -> None:
        for i in range(0, len(body), 16 << 10):
            decoder.feed(body[i : i + (16 << 10)])

    with pytest.raises(TooLarge):
        feed_in_pieces()
    assert decoder.decoded == MiB and decoder.raw <= len(body)
    truncating = BoundedDecoder(coding, 64 << 10, truncate=True)
    assert truncating.feed(body) == b"\0" * (64 << 10) and truncating.full


# In a process whose address space is capped at its size after imports plus 64 MiB, a GiB bomb
# decodes with a 1 MiB limit (peak RSS growing by a few MiB); a plain zlib call on the same
# bytes runs out of memory.
_CAPPED = r"""
import json, resource, sys, zlib
from tests.reliability.bombs import bomb
from vast_llm._decode import BoundedDecoder, TooLarge

def status(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))

coding, mode = sys.argv[1], sys.argv[2]
body = bomb(coding)
resource.setrlimit(resource.RLIMIT_AS, (status("VmSize") + (64 << 20),) * 2)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets the peak RSS (VmHWM) to the current RSS
before = status("VmRSS")
outcome = "finished"
try:
    if mode == "bounded":
        decoder = BoundedDecoder(coding, 1 << 20)
        for i in range(0, len(body), 16 << 10):
            decoder.feed(body[i : i + (16 << 10)])
    else:
        zlib.decompressobj(31).decompress(body)
except TooLarge:
    outcome = "TooLarge"
except MemoryError:
    outcome = "MemoryError"
print(json.dumps({"outcome": outcome, "peak_growth": status("VmHWM") - before}))
"""


def capped(coding: str, mode: str) -> dict[str, int | str]:
    done = subprocess.run(
        [sys.executable, "-c", _CAPPED, coding, mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, int | str] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize("coding", ["gzip, gzip", *(["zstd"] if zstandard else [])])
def test_a_gib_bomb_in_64_mib(coding: str) -> None:
    got = capped(coding, "bounded")
    assert got["outcome"] == "TooLarge", got
    assert int(got["peak_growth"]) < 8 * MiB, got  # measured: 0.8 MiB (gzip, gzip), 2.6 (zstd)


def test_the_cap_is_real() -> None:
    """The control: the same cap stops an unbounded decode of a 1 GiB gzip."""
    assert capped("gzip", "unbounded")["outcome"] == "MemoryError"
