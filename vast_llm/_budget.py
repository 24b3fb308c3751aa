"""Time budgets for whole exchanges, enforced on every socket read and write of our own pools.

httpx bounds each socket read (``read`` timeout), not a call: a peer that sends one byte just
inside that timeout — a header line in pieces, a body in drips — keeps a call open forever. So
the client's own HTTP pools run on a network backend whose streams clamp each read and write
to what is left of the current budget (:func:`budget`, a context variable: per thread for the
sync clients, per task for the async ones), and raise httpcore's own timeout once it is spent.
httpx turns that into ``httpx.ReadTimeout`` / ``WriteTimeout``, which the flow already knows.

Without a budget (a user's own HTTP client, or a call outside any ``budget`` block) nothing
changes: the drivers then check the time after each piece of a body instead.
"""

from __future__ import annotations

import contextvars
import functools
import os
import select
import socket
import ssl
import time
import typing
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import httpcore
import httpx

from ._pool import fair

__all__ = ["anext_within", "async_pools", "budget", "install", "left", "next_within", "pools"]

_UNTIL: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "vast_llm_budget", default=None
)


class budget:  # lower case: used like a function, ``with budget(seconds):``
    """Within this block, every read and write on our pools ends by ``seconds`` from now.

    A class rather than a ``contextlib.contextmanager``: a stream enters one per chunk it
    reads, and a generator-based manager costs about a microsecond more each time.
    """

    __slots__ = ("_token", "_until")

    def __init__(self, seconds: float | None) -> None:
        self._until = None if seconds is None else time.monotonic() + seconds

    def __enter__(self) -> None:
        self._token = _UNTIL.set(self._until)

    def __exit__(self, *exc_info: object) -> None:
        _UNTIL.reset(self._token)


def next_within(pieces: Iterator[bytes], seconds: float) -> bytes | None:
    """``next(pieces, None)`` in a :class:`budget` of ``seconds``, in one call (a stream takes
    its next piece once per token)."""
    token = _UNTIL.set(time.monotonic() + seconds)
    try:
        return next(pieces, None)
    finally:
        _UNTIL.reset(token)


async def anext_within(pieces: AsyncIterator[bytes], seconds: float) -> bytes | None:
    """:func:`next_within` for an async iterator."""
    token = _UNTIL.set(time.monotonic() + seconds)
    try:
        return await anext(pieces, None)
    finally:
        _UNTIL.reset(token)


def left() -> float | None:
    """Seconds left in the current budget (None: no budget)."""
    until = _UNTIL.get()
    return None if until is None else until - time.monotonic()


def _clamp(timeout: float | None, kind: type[Exception]) -> float | None:
    until = _UNTIL.get()
    if until is None:
        return timeout
    remaining = until - time.monotonic()
    if remaining <= 0:
        raise kind("the call's time budget is spent")
    return remaining if timeout is None else min(timeout, remaining)


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        wrapped = self._inner.start_tls(
            ssl_context, server_hostname, _clamp(timeout, httpcore.ConnectTimeout)
        )
        return _Stream(wrapped)

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(
            host, port, _clamp(timeout, httpcore.ConnectTimeout), local_address, socket_options
        )
        return _Stream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_unix_socket(
            path, _clamp(timeout, httpcore.ConnectTimeout), socket_options
        )
        return _Stream(stream)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


_poll = getattr(select, "poll", None)


def _readable(sock: socket.socket | None) -> bool:
    # What httpcore's is_socket_readable answers: data (or the EOF of a closed peer) waits.
    if sock is None or sock.fileno() < 0:
        return True  # no socket: the next read would end at once
    if _poll is None:  # pragma: no cover - Windows
        return bool(select.select([sock], [], [], 0)[0])
    poller = _poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class _AsyncStream(httpcore.AsyncNetworkStream):
    __slots__ = ("_inner", "_sock")

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self._sock: socket.socket | None = None

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, _clamp(timeout, httpcore.ReadTimeout))

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, _clamp(timeout, httpcore.WriteTimeout))

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        wrapped = await self._inner.start_tls(
            ssl_context, server_hostname, _clamp(timeout, httpcore.ConnectTimeout)
        )
        return _AsyncStream(wrapped)

    def get_extra_info(self, info: str) -> typing.Any:
        if info == "is_readable":
            # httpcore asks this of every idle connection of a pool, on every request the pool
            # takes or ends; anyio answers it by building a dict of the socket's attributes
            # each time (~10 us). The same answer, from the same socket, without that.
            if self._sock is None:
                self._sock = self._inner.get_extra_info("socket")
            return _readable(self._sock)
        return self._inner.get_extra_info(info)


class _AsyncBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self._inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(
            host, port, _clamp(timeout, httpcore.ConnectTimeout), local_address, socket_options
        )
        return _AsyncStream(stream)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_unix_socket(
            path, _clamp(timeout, httpcore.ConnectTimeout), socket_options
        )
        return _AsyncStream(stream)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def install(client: httpx.Client | httpx.AsyncClient) -> None:
    """Put the budget-aware network backend under a client we created (never a user's).

    httpx has no public seam for httpcore's network backend, so this reaches the pools of the
    client's transports (its own and its proxy mounts) before any connection exists. If a
    future httpx moves them, nothing breaks: the drivers' per-piece time checks still bound
    bodies; only the header phase then falls back to httpx's per-read timeout.
    """
    transports = [getattr(client, "_transport", None), *getattr(client, "_mounts", {}).values()]
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        if pool is not None:
            fair(pool)
        backend = getattr(pool, "_network_backend", None)
        if backend is None or isinstance(backend, (_Backend, _AsyncBackend)):
            continue
        if isinstance(backend, httpcore.AsyncNetworkBackend):
            pool._network_backend = _AsyncBackend(backend)  # type: ignore[union-attr]
        elif isinstance(backend, httpcore.NetworkBackend):
            pool._network_backend = _Backend(backend)  # type: ignore[union-attr]


class _NoCookies(httpx.Cookies):
    """A cookie store that takes nothing: no Set-Cookie from a router or a worker is kept, so
    none is sent back, a worker cannot grow the client one cookie at a time, and no answer's
    URL goes through urllib's (caching) URL parser on the way."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


def _cookieless(client: httpx.Client | httpx.AsyncClient) -> None:
    # httpx has no seam for the store it extracts into; its public setter would copy ours.
    client._cookies = _NoCookies()


def router_ssl_context() -> ssl.SSLContext:
    """The autoscaler's trust, as httpx would build it (certifi, or SSL_CERT_FILE /
    SSL_CERT_DIR), made once per process and per environment: loading a CA bundle is slow
    (docs/benchmarks.md, "HTTPS workers"), and every client (and every event loop's pool) used
    to pay it again."""
    return _router_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.lru_cache(maxsize=4)
def _router_context(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    return httpx.create_ssl_context(trust_env=True)


def split(limits: httpx.Limits) -> tuple[httpx.Limits, httpx.Limits]:
    """The client's ``limits`` shared out between its two pools (router, workers).

    ``max_keepalive_connections`` is the client's in all, as when it had one pool: httpcore
    walks every kept connection of a pool on each request and each response, so a pool
    keeping more costs more at high concurrency. The router's calls are short, so its pool
    keeps a quarter, the workers' (whose connections carry TLS and long answers) the rest.
    ``max_connections`` bounds each pool (the concurrency gate bounds calls in all).
    """
    keep = limits.max_keepalive_connections
    if keep is None:
        return limits, limits
    router_keep = max(1, keep // 4)
    return _keeping(limits, router_keep), _keeping(limits, max(1, keep - router_keep))


def _keeping(limits: httpx.Limits, kept: int) -> httpx.Limits:
    return httpx.Limits(
        max_connections=limits.max_connections,
        max_keepalive_connections=kept,
        keepalive_expiry=limits.keepalive_expiry,
    )


def pools(
    limits: httpx.Limits, timeout: httpx.Timeout, worker_verify: ssl.SSLContext
) -> tuple[httpx.Client, httpx.Client]:
    """The two sync pools a client owns: the router's (public trust) and the workers'."""
    router_limits, worker_limits = split(limits)
    router = httpx.Client(limits=router_limits, timeout=timeout, verify=router_ssl_context())
    worker = httpx.Client(limits=worker_limits, timeout=timeout, verify=worker_verify)
    for client in (router, worker):
        install(client)
        _cookieless(client)
    return router, worker


def async_pools(
    limits: httpx.Limits, timeout: httpx.Timeout, worker_verify: ssl.SSLContext
) -> tuple[httpx.AsyncClient, httpx.AsyncClient]:
    """The two async pools a client owns in one event loop."""
    router_limits, worker_limits = split(limits)
    router = httpx.AsyncClient(limits=router_limits, timeout=timeout, verify=router_ssl_context())
    worker = httpx.AsyncClient(limits=worker_limits, timeout=timeout, verify=worker_verify)
    for client in (router, worker):
        install(client)
        _cookieless(client)
    return router, worker
