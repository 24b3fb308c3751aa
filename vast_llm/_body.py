"""Reading answers under bounds: decoded size, time, and (for streams) events.

Every answer body — a route answer, the autoscaler's key, a worker's error, a whole answer, a
stream — is read from its *raw* bytes (never through an HTTP library's decoding, which decodes a
whole chunk at once) through a :class:`~vast_llm._decode.BoundedDecoder`, so a limit counts
decoded bytes and a decompression bomb stops at it. Time is bounded the same way everywhere:

- a whole body must arrive within its budget (``seconds``): a body dripped one byte at a time
  cannot hold a call open;
- a stream must make *progress* — complete events, not comments or stray bytes — at least every
  ``idle`` seconds, and may not carry more events than its token budget allows, so neither
  keep-alive comments nor endless tokens hold it open.

On the client's own pools each socket read is clamped to the budget (``_budget``); on a user's
HTTP client the time is checked after each piece, so a call ends at most one read timeout late.
Failures are raised in the flow's vocabulary: ``httpx.ReadTimeout`` for time, ``DecodeError``
(``TooLarge``, ``BadEncoding``) and ``_sse.StreamError`` for what the bytes were.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator, Mapping
from typing import Any

import httpx

from ._budget import anext_within, budget, next_within
from ._decode import BoundedDecoder
from ._sse import Event, EventDecoder

__all__ = ["EventReader", "aread_body", "aread_events", "read_body", "read_events"]

Clock = Callable[[], float]


def _encoding(headers: Mapping[str, str]) -> str | None:
    return headers.get("content-encoding") or headers.get("Content-Encoding")


def _already_read(response: Any) -> bool:
    # A response some transport read whole before handing it over (httpx's MockTransport,
    # an httpx.Response built with content=): its bytes are in memory, already decoded.
    return isinstance(response, httpx.Response) and response.is_stream_consumed


def _response_encoding(response: Any) -> str | None:
    return None if _already_read(response) else _encoding(response.headers)


def _late(what: str, seconds: float) -> httpx.ReadTimeout:
    return httpx.ReadTimeout(f"{what} did not arrive within {seconds:g}s")


def _raw_sync(response: Any) -> Iterator[bytes]:
    if _already_read(response):
        return iter([response.content])
    raw: Iterator[bytes] = response.iter_raw()
    return raw


async def _one(content: bytes) -> AsyncIterator[bytes]:
    yield content


def _raw_async(response: Any) -> AsyncIterator[bytes]:
    if _already_read(response):
        return _one(response.content)
    raw: AsyncIterator[bytes] = response.aiter_raw()
    return raw


class _Whole:
    """The pure part of reading a whole body: raw pieces in, bounds checked, bytes out."""

    __slots__ = ("_clock", "_decoder", "_end", "_parts", "_seconds")

    def __init__(
        self, response: Any, limit: int, seconds: float, truncate: bool, clock: Clock
    ) -> None:
        self._decoder = BoundedDecoder(_response_encoding(response), limit, truncate=truncate)
        self._clock = clock
        self._seconds = seconds
        self._end = clock() + seconds
        self._parts: list[bytes] = []

    def left(self) -> float:
        return self._end - self._clock()

    def feed(self, raw: bytes | None) -> bool:
        """Take one raw piece (None: the body ended); True once nothing more is wanted."""
        if raw is None:
            self._parts.append(self._decoder.flush())
            return True
        self._parts.append(self._decoder.feed(raw))
        if self._decoder.full:
            return True
        if self.left() < 0:
            raise _late("the answer", self._seconds)
        return False

    def content(self) -> bytes:
        return b"".join(self._parts)


def read_body(
    response: Any,
    limit: int,
    seconds: float,
    *,
    truncate: bool = False,
    clock: Clock = time.monotonic,
) -> bytes:
    """The decoded body of an open ``httpx.Response``, closed afterwards.

    At most ``limit`` decoded bytes (past it: ``TooLarge``, or with ``truncate`` the first
    ``limit`` bytes), arriving within ``seconds`` (else ``httpx.ReadTimeout``).
    """
    try:
        whole = _Whole(response, limit, seconds, truncate, clock)
        pieces = _raw_sync(response)
        while True:
            with budget(whole.left()):
                raw = next(pieces, None)
            if whole.feed(raw):
                return whole.content()
    finally:
        response.close()


async def aread_body(
    response: Any,
    limit: int,
    seconds: float,
    *,
    truncate: bool = False,
    clock: Clock = time.monotonic,
) -> bytes:
    """:func:`read_body` for an open async response (httpx, or the aiohttp driver's)."""
    read_all = getattr(response, "read_all", None)  # the aiohttp driver's, for plain bodies
    if read_all is not None:
        # It answers None at once (before any wait) for a body it does not read; a body it
        # read whole has given its connection back already.
        try:
            content: bytes | None = await read_all(limit, seconds)
        except BaseException:
            await response.aclose()
            raise
        if content is not None:
            return content
    try:
        whole = _Whole(response, limit, seconds, truncate, clock)
        pieces = _raw_async(response)
        while True:
            with budget(whole.left()):
                raw = await anext(pieces, None)
            if whole.feed(raw):
                return whole.content()
    finally:
        await response.aclose()


class EventReader:
    """The pure part of reading a stream: raw bytes in, events out, bounds checked.

    Args:
        response: the open response (its ``Content-Encoding`` says how to decode it).
        max_bytes: decoded bytes allowed in all (a stream's answer has a size too).
        max_event: bytes allowed in one line or one event.
        max_events: events allowed in all (a worker sending past the token budget is lying).
        idle: seconds allowed without progress (a complete event).
    """

    __slots__ = ("_clock", "_decoder", "_sse", "events", "idle", "last_progress", "max_events")

    def __init__(
        self,
        response: Any,
        *,
        max_bytes: int,
        max_event: int,
        max_events: int,
        idle: float,
        clock: Clock = time.monotonic,
    ) -> None:
        self._decoder = BoundedDecoder(_response_encoding(response), max_bytes)
        self._sse = EventDecoder(max_line=max_event, max_event=max_event)
        self._clock = clock
        self.idle = idle
        self.max_events = max_events
        self.events = 0
        self.last_progress = clock()

    def left(self) -> float:
        """Seconds until the stream counts as silent."""
        return self.last_progress + self.idle - self._clock()

    def feed(self, raw: bytes) -> list[Event]:
        """The complete events ``raw`` adds (raises when a bound is broken)."""
        decoder = self._decoder
        if decoder.identity and len(raw) <= decoder.step:
            # The usual chunk: not encoded, one piece (no generator to run per chunk).
            return self.feed_decoded(decoder.feed(raw))
        events: list[Event] = []
        for piece in decoder.decode(raw):  # a bomb is parsed a bounded piece at a time
            events.extend(self.feed_decoded(piece))
        if not events:
            self.feed_decoded(b"")  # the time and count checks, even when nothing came
        return events

    def decode(self, raw: bytes) -> Iterator[bytes]:
        """The decoded pieces of ``raw`` (for a relay, which passes them on and feeds each to
        :meth:`feed_decoded`)."""
        return self._decoder.decode(raw)

    def feed_decoded(self, decoded: bytes) -> list[Event]:
        """:meth:`feed` for bytes already decoded by this reader's decoder (a relay that
        passes the decoded bytes on needs them as well as the events)."""
        events: list[Event] = []
        progress = False
        if decoded:
            events, progress = self._sse.feed(decoded)
        if events:
            self.events += len(events)
            if self.events > self.max_events:
                raise StreamTooLong(
                    f"the worker sent more than {self.max_events} events, past what the "
                    "request's token budget allows"
                )
        if progress:
            self.last_progress = self._clock()  # and so not silent: no need to look
        elif self.left() < 0:
            raise _late("a complete event", self.idle)
        return events

    def end(self) -> list[Event]:
        """The body ended: what the decoder and the event parser still held."""
        tail = self._decoder.flush()
        return self._sse.feed(tail).events if tail else []


class StreamTooLong(Exception):
    """More events than the token budget allows (internal; mapped to WorkerStreamError)."""


def read_events(response: Any, reader: EventReader) -> Generator[Event, None, None]:
    """The events of an open ``httpx.Response`` under ``reader``'s bounds (closes nothing)."""
    pieces = _raw_sync(response)
    while True:
        raw = next_within(pieces, reader.left())
        if raw is None:
            yield from reader.end()
            return
        yield from reader.feed(raw)


async def aread_events(response: Any, reader: EventReader) -> AsyncGenerator[Event, None]:
    """:func:`read_events` for an open async response (httpx, or the aiohttp driver's)."""
    pieces = _raw_async(response)
    while True:
        raw = await anext_within(pieces, reader.left())
        if raw is None:
            for event in reader.end():
                yield event
            return
        for event in reader.feed(raw):
            yield event
