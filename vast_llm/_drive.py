"""Drivers: carry the flow's actions out on an HTTP stack. They decide nothing.

``run_sync`` drives a flow with an ``httpx.Client``; ``run_async`` with an :class:`AsyncIO`,
the four operations the flow needs from an async HTTP stack: :class:`HttpxIO` for
``httpx.AsyncClient`` here, ``AiohttpIO`` (``_aiohttp``) for ``aiohttp.ClientSession``.
"""

from __future__ import annotations

import asyncio
import builtins
import sys
import time
from typing import Any, Protocol, TypeVar

import httpx

from ._body import aread_body, read_body
from ._budget import budget
from ._flow import Flow, Notify, ReadBody, Send, Sleep
from ._keys import KeyStore
from ._progress import ProgressListener, adeliver, deliver
from ._wire import Fetched, Opened, Req

__all__ = ["AsyncIO", "HttpxIO", "run_async", "run_sync", "to_httpx"]

T = TypeVar("T")

# Parsing a URL is half the cost of building an httpx.Request; the same few URLs (the
# autoscaler's, each worker's) come back on every call, and httpx.URL is immutable.
_URLS: dict[str, httpx.URL] = {}
_URLS_MAX = 1024
_URL_CACHED_LEN = 2048  # a longer URL is parsed each time, never kept


def _url(url: str) -> httpx.URL:
    parsed = _URLS.get(url)
    if parsed is None:
        parsed = httpx.URL(url)
        if len(url) <= _URL_CACHED_LEN:
            if len(_URLS) >= _URLS_MAX:
                _URLS.clear()
            _URLS[url] = parsed
    return parsed


def to_httpx(request: Req) -> httpx.Request:
    """The flow's request as an ``httpx.Request``."""
    return httpx.Request(
        request.method,
        _url(request.url),
        headers=request.headers,
        content=request.content or None,
        extensions={"timeout": request.timeout},
    )


def _unusable(exc: Exception) -> httpx.TransportError:
    """An exception an HTTP stack raised outside its transport vocabulary (a URL it cannot
    parse, an exception group from its task machinery), as one the flow can decide on."""
    return httpx.UnsupportedProtocol(f"the request could not be sent ({type(exc).__name__}: {exc})")


# Exception groups (anyio raises them from its task machinery on some failures): a builtin from
# Python 3.11, anyio's backport before.
_GROUPS: tuple[type[BaseException], ...]
if sys.version_info >= (3, 11):
    _GROUPS = (builtins.BaseExceptionGroup,)
else:  # pragma: no cover - Python 3.10: anyio's backport, when installed
    try:
        from exceptiongroup import BaseExceptionGroup as _Group  # type: ignore[import-not-found]

        _GROUPS = (_Group,)
    except ImportError:
        _GROUPS = ()

# Raised while sending, as something other than an httpx transport error.
_ODD = (httpx.InvalidURL, httpx.HTTPError, ValueError, OverflowError, UnicodeError)


def _seconds_left(request: Req, started: float) -> float:
    if request.budget is None:
        return float("inf")
    return request.budget - (time.monotonic() - started)


# auth=None: a user-supplied client's auth must never be applied to these requests.
_SEND: dict[str, Any] = {"stream": True, "auth": None, "follow_redirects": False}


def _started(request: Req) -> None:
    # The answer has started: its body is read under the idle timeout, not the deadline's rest
    # (httpcore reads the timeout dict, shared with the request, when the body starts).
    if request.read_after_start is not None:
        request.timeout["read"] = request.read_after_start


def run_sync(
    flow: Flow[T],
    router: httpx.Client,
    worker: httpx.Client,
    keys: KeyStore,
    listener: ProgressListener | None = None,
) -> T:
    """Drive a flow with sync httpx clients: ``router`` for the autoscaler, ``worker`` for
    workers (two trust decisions; the same client when the user gave one). ``listener`` is the
    client's own progress listener (``observe``'s are found by ``deliver``)."""

    def fetch_key(key_flow: Flow[Any]) -> Any:
        return run_sync(key_flow, router, worker, keys)

    value: Any = None
    error: Exception | None = None
    try:
        while True:
            try:
                action = flow.throw(error) if error is not None else flow.send(value)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            value, error = None, None
            try:
                if isinstance(action, Send):
                    request = action.request
                    client = worker if request.worker else router
                    started = time.monotonic()
                    try:
                        with budget(request.budget):
                            response = client.send(to_httpx(request), **_SEND)
                    except _ODD as exc:
                        if isinstance(exc, httpx.TransportError):
                            raise
                        raise _unusable(exc) from exc
                    if action.read_limit is None:
                        _started(request)
                        value = response
                    else:
                        left = _seconds_left(request, started)
                        content = read_body(response, action.read_limit, left)
                        value = Fetched(response.status_code, response.headers, content)
                elif isinstance(action, ReadBody):
                    value = read_body(action.response, action.limit, action.seconds, truncate=True)
                elif isinstance(action, Sleep):
                    time.sleep(action.seconds)
                elif isinstance(action, Notify):
                    deliver(action.event, listener)
                else:
                    value = keys.get(fetch_key, action.stale)
            except Exception as exc:
                error = exc
    finally:
        flow.close()


class AsyncIO(Protocol):
    """What the flow needs from an async HTTP stack. Transport failures are raised as httpx
    exceptions (``httpx.ConnectError``, ``httpx.ReadTimeout``...), whatever the stack."""

    async def fetch(self, request: Req, limit: int) -> Fetched:
        """Send, read up to ``limit`` bytes of the answer, close it."""

    async def open(self, request: Req) -> Opened:
        """Send and answer once the headers are in; the body stays unread."""

    async def read(self, response: Any, limit: int, seconds: float) -> bytes:
        """Read up to ``limit`` decoded bytes of an opened response within ``seconds`` and
        close it (cut at the limit, not refused)."""


class HttpxIO:
    """:class:`AsyncIO` on ``httpx.AsyncClient`` s: one for the autoscaler, one for workers
    (the same one when the user gave a client)."""

    __slots__ = ("router", "worker")

    def __init__(self, router: httpx.AsyncClient, worker: httpx.AsyncClient | None = None) -> None:
        self.router = router
        self.worker = worker or router

    async def _send(self, request: Req) -> httpx.Response:
        client = self.worker if request.worker else self.router
        try:
            with budget(request.budget):
                return await client.send(to_httpx(request), **_SEND)
        except _ODD as exc:
            if isinstance(exc, httpx.TransportError):
                raise
            raise _unusable(exc) from exc
        except _GROUPS as group:
            if group.subgroup(lambda e: not isinstance(e, Exception)) is not None:  # type: ignore[attr-defined]
                raise  # a cancellation or an interrupt travels as it is
            raise _unusable(group) from group  # type: ignore[arg-type]

    async def fetch(self, request: Req, limit: int) -> Fetched:
        started = time.monotonic()
        response = await self._send(request)
        content = await aread_body(response, limit, _seconds_left(request, started))
        return Fetched(response.status_code, response.headers, content)

    async def open(self, request: Req) -> httpx.Response:
        response = await self._send(request)
        _started(request)
        return response

    async def read(self, response: Any, limit: int, seconds: float) -> bytes:
        return await aread_body(response, limit, seconds, truncate=True)


async def run_async(
    flow: Flow[T],
    io: AsyncIO,
    keys: KeyStore,
    key_lock: asyncio.Lock,
    listener: ProgressListener | None = None,
) -> T:
    """Drive a flow on an async HTTP stack (``key_lock`` belongs to the running loop)."""

    async def fetch_key(key_flow: Flow[Any]) -> Any:
        return await run_async(key_flow, io, keys, key_lock)

    value: Any = None
    error: Exception | None = None
    try:
        while True:
            try:
                action = flow.throw(error) if error is not None else flow.send(value)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            value, error = None, None
            try:
                if isinstance(action, Send):
                    if action.read_limit is None:
                        value = await io.open(action.request)
                    else:
                        value = await io.fetch(action.request, action.read_limit)
                elif isinstance(action, ReadBody):
                    value = await io.read(action.response, action.limit, action.seconds)
                elif isinstance(action, Sleep):
                    await asyncio.sleep(action.seconds)
                elif isinstance(action, Notify):
                    await adeliver(action.event, listener)
                else:
                    value = await keys.aget(fetch_key, action.stale, key_lock)
            except Exception as exc:
                error = exc
    finally:
        flow.close()
