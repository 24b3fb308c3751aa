"""Drivers: carry the flow's actions out on an HTTP stack. They decide nothing.

``run_sync`` drives a flow with an ``httpx.Client``; ``run_async`` with an :class:`AsyncIO`,
the four operations the flow needs from an async HTTP stack: :class:`HttpxIO` for
``httpx.AsyncClient`` here, ``AiohttpIO`` (``_aiohttp``) for ``aiohttp.ClientSession``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol, TypeVar

import httpx

from ._flow import Flow, Notify, ReadBody, Send, Sleep
from ._keys import KeyStore
from ._progress import ProgressListener, adeliver, deliver
from ._wire import Fetched, Opened, Req

__all__ = ["AsyncIO", "HttpxIO", "as_httpx", "run_async", "run_sync", "to_httpx"]

T = TypeVar("T")

# Parsing a URL is half the cost of building an httpx.Request; the same few URLs (the
# autoscaler's, each worker's) come back on every call, and httpx.URL is immutable.
_URLS: dict[str, httpx.URL] = {}
_URLS_MAX = 1024


def _url(url: str) -> httpx.URL:
    parsed = _URLS.get(url)
    if parsed is None:
        if len(_URLS) >= _URLS_MAX:
            _URLS.clear()
        parsed = _URLS[url] = httpx.URL(url)
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


def as_httpx(response: Any) -> httpx.Response:
    """An opened response as an ``httpx.Response`` (what httpx-sse and transports read)."""
    if isinstance(response, httpx.Response):
        return response
    converted: httpx.Response = response.as_httpx()
    return converted


def _fits(response: httpx.Response, limit: int) -> bool:
    # A declared length within the limit can be read in one go (the common, fast case).
    length = response.headers.get("content-length", "")
    return length.isdigit() and int(length) <= limit


def _read_limited_sync(response: httpx.Response, limit: int) -> bytes:
    if _fits(response, limit):
        try:
            return response.read()
        finally:
            response.close()
    parts: list[bytes] = []
    size = 0
    try:
        for part in response.iter_bytes():
            parts.append(part)
            size += len(part)
            if size >= limit:
                break
    finally:
        response.close()
    return b"".join(parts)[:limit]


async def _read_limited_async(response: httpx.Response, limit: int) -> bytes:
    if _fits(response, limit):
        try:
            return await response.aread()
        finally:
            await response.aclose()
    parts: list[bytes] = []
    size = 0
    try:
        async for part in response.aiter_bytes():
            parts.append(part)
            size += len(part)
            if size >= limit:
                break
    finally:
        await response.aclose()
    return b"".join(parts)[:limit]


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
                    client = worker if action.request.worker else router
                    response = client.send(to_httpx(action.request), **_SEND)
                    if action.read_limit is None:
                        _started(action.request)
                        value = response
                    else:
                        content = _read_limited_sync(response, action.read_limit)
                        value = Fetched(response.status_code, response.headers, content)
                elif isinstance(action, ReadBody):
                    value = _read_limited_sync(action.response, action.limit)
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

    async def read(self, response: Any, limit: int) -> bytes:
        """Read up to ``limit`` bytes of an opened response and close it."""


class HttpxIO:
    """:class:`AsyncIO` on ``httpx.AsyncClient`` s: one for the autoscaler, one for workers
    (the same one when the user gave a client)."""

    __slots__ = ("router", "worker")

    def __init__(self, router: httpx.AsyncClient, worker: httpx.AsyncClient | None = None) -> None:
        self.router = router
        self.worker = worker or router

    async def fetch(self, request: Req, limit: int) -> Fetched:
        client = self.worker if request.worker else self.router
        response = await client.send(to_httpx(request), **_SEND)
        content = await _read_limited_async(response, limit)
        return Fetched(response.status_code, response.headers, content)

    async def open(self, request: Req) -> httpx.Response:
        client = self.worker if request.worker else self.router
        response = await client.send(to_httpx(request), **_SEND)
        _started(request)
        return response

    async def read(self, response: Any, limit: int) -> bytes:
        return await _read_limited_async(response, limit)


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
                    value = await io.read(action.response, action.limit)
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
