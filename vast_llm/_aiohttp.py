"""The flow on ``aiohttp`` directly: ``AsyncVastClient(http_client=aiohttp.ClientSession())``.

httpx's client layer (request and response models, cookie jar, auth and redirect machinery)
costs more client CPU than the whole request on aiohttp (docs/benchmarks.md). This driver
hands the flow's requests to an ``aiohttp.ClientSession`` as they are and reads the answers
with aiohttp's C parser. aiohttp's exceptions are translated into httpx's vocabulary, which the
flow's retry decisions and the clients' error mapping speak, so every failure ends in the same
typed error as on httpx (tests/reliability run the fault matrix on both).

Only the optional ``aiohttp`` package is needed (``pip install "vast-llm[aiohttp]"``); this
module is imported when a session is passed, never otherwise.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import aiohttp
import httpx

from ._errors import ConfigError
from ._wire import Fetched, Req

__all__ = ["AiohttpIO", "AiohttpOpened", "translate"]

# Header names that carry credentials: a session sending any of them by default would send
# them to workers, which must never see one.
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key"}
)

# First match wins, so subclasses come before their bases.
_TRANSLATION: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),  # sock_read: silent for too long
    (TimeoutError, httpx.ReadTimeout),
    (asyncio.TimeoutError, httpx.ReadTimeout),  # what aiohttp raises; not TimeoutError on 3.10
    (aiohttp.ClientConnectorError, httpx.ConnectError),  # refused, DNS, TLS handshake
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),  # closed without an answer
    (aiohttp.ClientPayloadError, httpx.RemoteProtocolError),  # body cut or malformed
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),  # not a valid HTTP answer
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.NonHttpUrlClientError, httpx.UnsupportedProtocol),
    (aiohttp.ClientOSError, httpx.ReadError),  # reset by the peer
    (aiohttp.ClientConnectionError, httpx.ReadError),
)


def translate(exc: BaseException) -> httpx.TransportError | None:
    """The httpx exception that means what ``exc`` (an aiohttp failure) means, or None."""
    for source, target in _TRANSLATION:
        if isinstance(exc, source):
            detail = str(exc) or type(exc).__name__
            return target(f"{detail} [aiohttp {type(exc).__name__}]")
    if isinstance(exc, aiohttp.ClientError):
        return httpx.NetworkError(f"{exc or type(exc).__name__} [aiohttp {type(exc).__name__}]")
    return None


def _reraise(exc: BaseException) -> NoReturn:
    mapped = translate(exc)
    if mapped is None:
        raise exc
    raise mapped from exc


def _timeout(request: Req) -> aiohttp.ClientTimeout:
    timeout = request.timeout
    read = timeout.get("read")
    if not request.worker and read is not None:
        # One bound for the whole call (the route call, the key fetch): a single timer, where
        # per-phase bounds re-arm a read timer on every chunk that arrives.
        return aiohttp.ClientTimeout(total=read)
    # httpx's four phases onto aiohttp's: ``connect`` there covers the wait for a pooled
    # connection and the connect itself; sock_read bounds each wait for bytes, as httpx's read.
    return aiohttp.ClientTimeout(
        total=None,
        connect=timeout.get("pool"),
        sock_connect=timeout.get("connect"),
        sock_read=read,
    )


class AiohttpOpened:
    """A response whose headers are in: what the flow and the clients read on aiohttp."""

    __slots__ = ("_done", "_response", "headers", "status_code")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self._done = False
        self.status_code = response.status
        self.headers = response.headers

    async def aread(self) -> bytes:
        """The whole body (failures as httpx exceptions)."""
        try:
            content = await self._response.read()
        except BaseException as exc:
            _reraise(exc)
        self._done = True
        return content

    async def read_limited(self, limit: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        try:
            while size < limit:
                part = await self._response.content.read(limit - size)
                if not part:
                    self._done = True
                    break
                parts.append(part)
                size += len(part)
        except BaseException as exc:
            _reraise(exc)
        finally:
            await self.aclose()
        return b"".join(parts)

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._response.content.iter_any():
                yield part
        except BaseException as exc:
            _reraise(exc)
        self._done = True

    async def aclose(self) -> None:
        """Release the connection: back to the pool once read whole, else closed (a half-read
        answer must not be left for the next request on that connection)."""
        if self._done:
            self._response.release()
        else:
            self._response.close()

    def as_httpx(self) -> httpx.Response:
        """The same open response as an ``httpx.Response`` (for httpx-sse and the transport)."""
        return httpx.Response(
            self.status_code, headers=list(self.headers.items()), stream=_Body(self)
        )


class _Body(httpx.AsyncByteStream):
    def __init__(self, opened: AiohttpOpened) -> None:
        self._opened = opened

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self._opened.aiter_bytes():
            yield part

    async def aclose(self) -> None:
        await self._opened.aclose()


class AiohttpIO:
    """The flow's :class:`~vast_llm._drive.AsyncIO` on an ``aiohttp.ClientSession``.

    The session stays the caller's (its connector, limits, proxies and TLS settings apply; it
    is not closed here). One with default auth or credential headers is refused: those would
    reach workers.
    """

    __slots__ = ("session", "worker_ssl")

    def __init__(self, session: Any, worker_ssl: ssl.SSLContext) -> None:
        if not isinstance(session, aiohttp.ClientSession):
            raise ConfigError(
                "http_client must be an httpx.AsyncClient or an aiohttp.ClientSession, got "
                f"{type(session).__name__}"
            )
        self.session = session
        self.worker_ssl = worker_ssl
        self._check()

    def _check(self) -> None:
        session = self.session
        if session.auth is not None or any(
            name.lower() in _SECRET_HEADERS for name in session.headers
        ):
            raise ConfigError(
                "this aiohttp.ClientSession sends credentials with every request (auth= or an "
                "Authorization/Cookie/API-key default header); they would reach workers. "
                "Give the client a session without them (the API key goes in api_key=)."
            )

    async def _send(self, request: Req) -> aiohttp.ClientResponse:
        try:
            return await self.session.request(
                request.method,
                request.url,
                data=request.content or None,
                headers=request.headers,
                timeout=_timeout(request),
                allow_redirects=False,
                raise_for_status=False,
                # Workers are trusted through the worker CA only, whatever the session's own
                # TLS settings (which stay in force for the autoscaler).
                **({"ssl": self.worker_ssl} if request.worker else {}),
            )
        except BaseException as exc:
            _reraise(exc)

    async def fetch(self, request: Req, limit: int) -> Fetched:
        opened = AiohttpOpened(await self._send(request))
        length = opened.headers.get("Content-Length", "")
        if length.isdigit() and int(length) <= limit:
            try:
                content = await opened.aread()
            finally:
                await opened.aclose()
        else:
            content = await opened.read_limited(limit)
        return Fetched(opened.status_code, opened.headers, content)

    async def open(self, request: Req) -> AiohttpOpened:
        # Checked on every worker call too: default headers can be added to a session later.
        self._check()
        response = await self._send(request)
        if request.read_after_start is not None:
            # The answer started: the rest is read under the idle timeout, not the deadline's.
            connection = response.connection
            protocol = connection.protocol if connection is not None else None
            if protocol is not None:
                protocol.read_timeout = request.read_after_start
        return AiohttpOpened(response)

    async def read(self, response: Any, limit: int) -> bytes:
        opened: AiohttpOpened = response
        return await opened.read_limited(limit)
