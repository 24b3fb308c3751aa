"""Decompression bombs: a few KB on the wire, a GB once decoded. Built in milliseconds.

Deflating a gigabyte of zeros takes seconds; instead one MiB of zeros is deflated once, ended
with a full flush (byte-aligned, dictionary reset), and that block repeated: each repetition
decodes to the same MiB. The checksums are computed over the zeros once per size.
"""

from __future__ import annotations

import functools
import importlib
import struct
import zlib
from typing import Any

MiB = 1 << 20
GiB = 1 << 30
_CHUNK = b"\0" * MiB


def _optional(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


brotli = _optional("brotli")
zstandard = _optional("zstandard")


@functools.cache
def _deflate_block() -> tuple[bytes, bytes]:
    """(raw deflate of one MiB of zeros ending in a full flush, the final empty block)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = c.compress(_CHUNK) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(_CHUNK) + c.flush(zlib.Z_FULL_FLUSH)
    assert block == again, "a full flush resets the compressor, so the block repeats"
    return block, c.flush()


@functools.cache
def _crc32(mib: int) -> int:
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(_CHUNK, crc)
    return crc


@functools.cache
def _adler32(mib: int) -> int:
    adler = 1
    for _ in range(mib):
        adler = zlib.adler32(_CHUNK, adler)
    return adler


def raw_deflate_zeros(size: int) -> bytes:
    block, end = _deflate_block()
    return block * (size // MiB) + end


def gzip_zeros(size: int) -> bytes:
    """A valid gzip member of ``size`` zero bytes (``size`` a multiple of a MiB)."""
    crc = _crc32(size // MiB)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return header + raw_deflate_zeros(size) + struct.pack("<II", crc, size & 0xFFFFFFFF)


def zlib_zeros(size: int) -> bytes:
    """A valid zlib stream (``Content-Encoding: deflate``) of ``size`` zero bytes."""
    return b"\x78\xda" + raw_deflate_zeros(size) + struct.pack(">I", _adler32(size // MiB))


@functools.cache
def bomb(coding: str, size: int = GiB) -> bytes:
    """A body of ``size`` zeros under ``coding`` (a Content-Encoding value, e.g. "gzip, gzip")."""
    body: bytes | None = None
    for name in [c.strip() for c in coding.split(",")]:
        body = _zeros(name, size) if body is None else encode(name, body)
    assert body is not None
    return body


def _zeros(name: str, size: int) -> bytes:
    if name == "gzip":
        return gzip_zeros(size)
    if name == "deflate":
        return zlib_zeros(size)
    if name == "zstd":
        # One frame of RLE blocks, as a compressor streaming zeros makes it (~32 KB per GiB).
        c = zstandard.ZstdCompressor(level=1).compressobj()
        return b"".join([c.compress(_CHUNK) for _ in range(size // MiB)] + [c.flush()])
    if name == "br":
        c = brotli.Compressor(quality=1)
        return b"".join([c.process(_CHUNK) for _ in range(size // MiB)] + [c.finish()])
    raise ValueError(name)


def encode(name: str, data: bytes) -> bytes:
    """``data`` under one content coding (``deflate`` zlib-wrapped; ``deflate-raw`` raw)."""
    if name == "gzip":
        c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        return c.compress(data) + c.flush()
    if name == "deflate":
        return zlib.compress(data, 9)
    if name == "deflate-raw":
        c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        return c.compress(data) + c.flush()
    if name == "zstd":
        return bytes(zstandard.ZstdCompressor().compress(data))
    if name == "br":
        return bytes(brotli.compress(data))
    raise ValueError(name)
