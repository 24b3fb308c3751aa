"""Content-Encoding decoding that counts decoded bytes and never makes more than a limit. Pure.

A worker or router can send a body that is small on the wire and enormous once decoded (a
591-byte ``Content-Encoding: gzip, gzip`` answer decodes to 268 MB). HTTP libraries decode a
whole chunk of input at once, so a size limit checked on what they hand out comes too late.
:class:`BoundedDecoder` decodes from raw (undecoded) bytes, layer by layer, asking each layer
for at most a bounded amount of output at a time (``zlib``'s ``max_length`` and
``unconsumed_tail``, brotli's ``output_buffer_limit``, zstd fed in slices small enough that one
slice cannot expand past a fixed bound), so memory stays proportional to the limit whatever
the compression ratio.

- Codings: ``identity``, ``gzip``/``x-gzip`` (several members allowed), ``deflate`` (zlib-wrapped
  or raw, as httpx accepts both), and ``br``/``zstd`` when ``brotli``/``zstandard`` are
  importable (the same optional modules httpx uses). :func:`accept_encoding` names them.
- Stacked codings (``gzip, gzip``) are undone last-applied first, at most :data:`MAX_LAYERS`.
- Refusals are small exceptions of their own, for the drivers to map onto a typed error:
  :class:`TooLarge` (the limit was passed) and :class:`BadEncoding` (an unknown or unsupported
  coding, too many layers, data that is not what its coding says, or a body cut short).
"""

from __future__ import annotations

import importlib
import zlib
from collections.abc import Iterable, Iterator
from typing import Any


def _optional(name: str) -> Any:
    # The same optional modules httpx uses; imported by name so typing does not depend on them.
    try:
        return importlib.import_module(name)
    except ImportError:  # pragma: no cover - depends on the environment
        return None


_brotli = _optional("brotli")
_zstd = _optional("zstandard")

__all__ = [
    "MAX_LAYERS",
    "BadEncoding",
    "BoundedDecoder",
    "DecodeError",
    "TooLarge",
    "accept_encoding",
    "codings",
    "supported",
]

MAX_LAYERS = 3  # real servers apply one; more than a few is an attack, not a configuration
# Output asked of a layer at a time, when the caller did not ask for less.
STEP = 64 << 10
# RFC 8878 §3.1.1.1.2: zstd as an HTTP content coding uses windows of 8 MB at most (a frame may
# declare up to 2 GB, which the decoder would otherwise allocate).
ZSTD_WINDOW = 8 << 20
# zstd input is fed in slices of this size. A zstd block decodes to 128 KiB at most and needs
# at least 4 bytes of input (an RLE block), so one slice expands to at most ~1.1 MiB.
ZSTD_SLICE = 32


class DecodeError(Exception):
    """The body could not be decoded within the rules (internal; drivers map it)."""


class TooLarge(DecodeError):
    """The body decodes to more than the limit (``.limit`` bytes)."""

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class BadEncoding(DecodeError):
    """The Content-Encoding is unknown, unsupported or stacked too deep, or the body is not what
    its coding says (including a compressed body cut short)."""


def supported() -> tuple[str, ...]:
    """The content codings this process can decode (besides ``identity``)."""
    names = ["gzip", "deflate"]
    if _brotli is not None and _brotli_bounded():
        names.append("br")
    if _zstd is not None:
        names.append("zstd")
    return tuple(names)


def accept_encoding() -> str:
    """An ``Accept-Encoding`` value naming exactly what :class:`BoundedDecoder` can decode."""
    return ", ".join(supported())


def _brotli_bounded() -> bool:
    # brotli >= 1.2 can bound a call's output; older versions cannot, so br is refused there.
    return _brotli is not None and hasattr(_brotli.Decompressor(), "can_accept_more_data")


def codings(header: str | Iterable[str] | None) -> list[str]:
    """The codings named by ``Content-Encoding`` value(s), in the order they were applied.

    Several header lines count as one comma-separated list (RFC 9110 §5.3); ``identity`` and
    empty items are dropped; ``x-gzip`` is ``gzip``.
    """
    if header is None:
        return []
    values = [header] if isinstance(header, str) else list(header)
    names: list[str] = []
    for value in values:
        for item in value.split(","):
            name = item.strip().lower()
            if name and name != "identity":
                names.append("gzip" if name == "x-gzip" else name)
    return names


# -- layers: one content coding each -----------------------------------------------------------


class _Layer:
    """One coding being undone: ``push`` input, ``pull`` at most ``n`` bytes of output."""

    name = ""

    def push(self, data: bytes) -> None:
        raise NotImplementedError

    def pull(self, n: int) -> bytes:
        """Up to ``n`` bytes; ``b""`` when more input is needed (or the coding has ended)."""
        raise NotImplementedError

    def end(self) -> None:
        """No more input will come: raise BadEncoding if the coded data is incomplete."""
        raise NotImplementedError

    def _bad(self, detail: str) -> BadEncoding:
        return BadEncoding(
            f"the body is marked {self.name!r} but is not valid {self.name}: {detail}"
        )


class _Zlib(_Layer):
    """gzip (several members, zero padding between them allowed) and deflate (zlib or raw)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._d: Any = None  # zlib.Decompress, created once the format is known
        self._tail = b""  # input not consumed yet
        self._more = False  # the last call filled its output: more may come without input
        self._seen = False
        self._members = 0

    def push(self, data: bytes) -> None:
        if data:
            self._tail = self._tail + data if self._tail else data

    def _start(self) -> bool:
        """Create the decompressor for the next member; False while more input is needed."""
        if self.name == "gzip":
            if self._members:
                # Between gzip members, zero bytes are padding (as the gzip module reads them).
                self._tail = self._tail.lstrip(b"\x00")
                if not self._tail:
                    return False
            self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        else:
            if self._members:
                raise self._bad("data after the end of the compressed stream")
            if len(self._tail) < 2:
                return False
            # A zlib header (RFC 1950) or, as some servers send, raw deflate (RFC 1951).
            cmf, flg = self._tail[0], self._tail[1]
            wrapped = cmf & 0x0F == 8 and (cmf << 8 | flg) % 31 == 0
            self._d = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        self._members += 1
        return True

    def pull(self, n: int) -> bytes:
        d = self._d
        if d is None or d.eof:
            if not self._tail or not self._start():
                return b""
            d = self._d
        elif not self._tail and not self._more:
            return b""
        self._seen = True
        try:
            out: bytes = d.decompress(self._tail, n)
        except zlib.error as exc:
            raise self._bad(str(exc)) from None
        self._more = len(out) == n
        self._tail = d.unused_data if d.eof else d.unconsumed_tail
        return out

    def end(self) -> None:
        if self._d is None:
            if self._tail:  # one byte of deflate: not a stream
                raise self._bad("the body ended before the compressed stream")
            return
        if not self._d.eof:
            raise self._bad("the body ended before the compressed stream did")


class _Brotli(_Layer):
    """br. ``output_buffer_limit`` stops the output buffer growing once it reaches the limit,
    which it may pass by a little: the excess waits in ``_out``."""

    name = "br"

    def __init__(self) -> None:
        self._d = _brotli.Decompressor()
        self._tail = b""
        self._out = b""
        self._seen = False

    def push(self, data: bytes) -> None:
        if data:
            self._tail = self._tail + data if self._tail else data

    def pull(self, n: int) -> bytes:
        if not self._out:
            finished = self._d.is_finished()
            try:
                if self._tail and finished:
                    raise self._bad("data after the end of the compressed stream")
                if self._tail and self._d.can_accept_more_data():
                    data, self._tail, self._seen = self._tail, b"", True
                    self._out = self._d.process(data, output_buffer_limit=n)
                elif not finished and self._seen:
                    # Output can be pending with no input left (the limit stopped it).
                    self._out = self._d.process(b"", output_buffer_limit=n)
            except _brotli.error as exc:
                raise self._bad(str(exc)) from None
        out, self._out = self._out[:n], self._out[n:]
        return out

    def end(self) -> None:
        if self._seen and not self._d.is_finished():
            raise self._bad("the body ended before the compressed stream did")


class _Zstd(_Layer):
    """zstd, one frame after another. ``zstandard`` cannot bound one call's output, so input goes
    in :data:`ZSTD_SLICE`-byte slices and the output of one slice waits in ``_out``."""

    name = "zstd"

    def __init__(self) -> None:
        self._dctx = _zstd.ZstdDecompressor(max_window_size=ZSTD_WINDOW)
        self._d: Any = None
        self._tail = b""
        self._at = 0  # how much of _tail was fed
        self._out = b""
        self._started = False

    def push(self, data: bytes) -> None:
        if data:
            if self._at:
                self._tail, self._at = self._tail[self._at :], 0
            self._tail = self._tail + data if self._tail else data

    def pull(self, n: int) -> bytes:
        while not self._out:
            if self._at >= len(self._tail):
                self._tail, self._at = b"", 0
                return b""
            if self._d is None or self._d.eof:
                if self._d is not None:
                    self._tail, self._at = self._d.unused_data + self._tail[self._at :], 0
                    if not self._tail:
                        return b""
                self._d = self._dctx.decompressobj(write_size=ZSTD_SLICE << 10)
                self._started = True
            piece = self._tail[self._at : self._at + ZSTD_SLICE]
            self._at += len(piece)
            try:
                self._out = self._d.decompress(piece)
            except _zstd.ZstdError as exc:
                raise self._bad(str(exc)) from None
        out, self._out = self._out[:n], self._out[n:]
        return out

    def end(self) -> None:
        if self._d is not None and not self._d.eof:
            raise self._bad("the body ended before the compressed stream did")


def _layer(name: str) -> _Layer:
    if name in ("gzip", "deflate"):
        return _Zlib(name)
    if name == "br" and _brotli_bounded():
        return _Brotli()
    if name == "zstd" and _zstd is not None:
        return _Zstd()
    if name in ("br", "zstd"):
        module = "brotli>=1.2" if name == "br" else "zstandard"
        raise BadEncoding(
            f"the body is encoded with {name!r}, which needs the {module} package "
            "(not installed); the request did not offer it"
        )
    raise BadEncoding(f"unknown Content-Encoding {name!r} (supported: {', '.join(supported())})")


# -- the decoder -------------------------------------------------------------------------------


class BoundedDecoder:
    """Decodes a body's raw bytes as they arrive, never producing more than ``limit`` bytes.

    Args:
        content_encoding: the ``Content-Encoding`` header value(s), or None.
        limit: decoded bytes allowed in all. Passing it raises :class:`TooLarge`, unless
            ``truncate`` is set: then output stops at exactly ``limit`` bytes and
            :attr:`full` turns True (for error bodies, which are only quoted).
        truncate: stop quietly at the limit instead of raising.

    Raw input is bounded too: a compressed body longer than ``limit`` plus a small margin is
    :class:`TooLarge` (compression never legitimately makes a body much bigger), so a stream of
    empty compressed blocks cannot keep a reader busy forever.

    Use :meth:`feed` for each piece of raw body (or :meth:`decode` to get the output in pieces
    of at most ``step`` bytes), then :meth:`flush` at the end of the body.
    """

    __slots__ = (
        "_layers",
        "_raw",
        "_step",
        "decoded",
        "full",
        "limit",
        "raw",
        "raw_limit",
        "truncate",
    )

    def __init__(
        self,
        content_encoding: str | Iterable[str] | None,
        limit: int,
        *,
        truncate: bool = False,
        step: int = STEP,
    ) -> None:
        if limit < 0 or step <= 0:
            raise ValueError("limit must be >= 0 and step > 0")
        names = codings(content_encoding)
        if len(names) > MAX_LAYERS:
            raise BadEncoding(
                f"the body is encoded {len(names)} times over ({', '.join(names)}); "
                f"at most {MAX_LAYERS} layers are accepted"
            )
        # Undone in reverse: the last coding applied is the first removed.
        self._layers = [_layer(name) for name in reversed(names)]
        self.limit = limit
        self.truncate = truncate
        self.raw_limit = limit + limit // 8 + (64 << 10)
        self._step = step
        self._raw = b""
        self.decoded = 0  # bytes handed out so far
        self.raw = 0  # raw bytes taken in so far
        self.full = False  # truncate mode: the limit was reached, nothing more will come out

    @property
    def step(self) -> int:
        """The most bytes :meth:`decode` hands out in one piece."""
        return self._step

    @property
    def identity(self) -> bool:
        """True when the body is not encoded (raw bytes are the decoded bytes)."""
        return not self._layers

    def feed(self, raw: bytes) -> bytes:
        """All the decoded output ``raw`` adds (never more than the limit in all)."""
        if not self._layers:
            self.raw += len(raw)
            if self.decoded + len(raw) <= self.limit:  # _count's usual case, inlined
                self.decoded += len(raw)
                return raw
            return self._count(raw)
        return b"".join(self.decode(raw))

    def decode(self, raw: bytes) -> Iterator[bytes]:
        """The decoded output ``raw`` adds, in pieces of at most ``step`` bytes.

        Stop iterating at any time: what was not decoded yet stays for the next call.
        """
        if self.full:
            return
        if not self._layers:
            self.raw += len(raw)
            out = self._count(raw)
            for at in range(0, len(out), self._step):
                yield out[at : at + self._step]
            return
        if raw:
            self.raw += len(raw)
            self._raw = self._raw + raw if self._raw else raw
        while not self.full:
            room = self.limit - self.decoded + 1  # one byte past the limit proves it passed
            out = self._pull(len(self._layers) - 1, min(self._step, room))
            if not out:
                # All input taken: checked only now, so a body cut at the limit still yields
                # its first ``limit`` bytes.
                if self.raw > self.raw_limit:
                    self._over(f"the compressed body passed {self.raw_limit} bytes")
                return
            out = self._count(out)
            if out:
                yield out

    def flush(self) -> bytes:
        """The end of the body: what remains, and :class:`BadEncoding` if it was cut short."""
        if not self._layers or self.full:
            return b""
        out = b"".join(self.decode(b""))
        if not self.full:
            for layer in self._layers:
                layer.end()
        return out

    def _count(self, out: bytes) -> bytes:
        self.decoded += len(out)
        if self.decoded > self.limit:
            keep = len(out) - (self.decoded - self.limit)
            self.decoded = self.limit
            self._over(f"the body decodes to more than {self.limit} bytes")
            return out[:keep]
        return out

    def _over(self, message: str) -> None:
        if not self.truncate:
            raise TooLarge(message, self.limit)
        self.full = True

    def _pull(self, i: int, n: int) -> bytes:
        layer = self._layers[i]
        while True:
            out = layer.pull(n)
            if out:
                return out
            if i == 0:
                if not self._raw:
                    return b""
                data, self._raw = self._raw, b""
            else:
                data = self._pull(i - 1, self._step)
                if not data:
                    return b""
            layer.push(data)
