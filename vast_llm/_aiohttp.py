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
import yarl
import yarl._url

from ._body import aread_body
from ._deadlines import Deadlines
from ._errors import ConfigError
from ._flow import NO_ANSWER, worker_header_allowed
from ._wire import Fetched, Req

__all__ = ["AiohttpIO", "AiohttpOpened", "translate"]

# First match wins, so subclasses come before their bases.
_TRANSLATION: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),  # sock_read: silent for too long
    (TimeoutError, httpx.ReadTimeout),
    (asyncio.TimeoutError, httpx.ReadTimeout),  # what aiohttp raises; not TimeoutError on 3.10
    (aiohttp.ClientConnectorError, httpx.ConnectError),  # refused, DNS, TLS handshake
    (aiohttp.ClientPayloadError, httpx.RemoteProtocolError),  # body cut or malformed
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),  # not a valid HTTP answer
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.NonHttpUrlClientError, httpx.UnsupportedProtocol),
    (aiohttp.ClientOSError, httpx.ReadError),  # reset by the peer
    (aiohttp.ClientConnectionError, httpx.ReadError),
)


def translate(exc: BaseException) -> httpx.TransportError | None:
    """The httpx exception that means what ``exc`` (an aiohttp failure) means, or None."""
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        # Closed with no answer at all: said in httpcore's words, which the flow knows (the
        # request did not run, so it may be sent again).
        return httpx.RemoteProtocolError(
            f"Server disconnected {NO_ANSWER} [aiohttp {type(exc).__name__}]"
        )
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


# aiohttp rounds a timeout of 5 s or more up to a whole second: ours end when they say.
_EXACT = float("inf")
# A router call's whole exchange is bounded by the driver's own watch (``Deadlines``).
_UNBOUNDED = aiohttp.ClientTimeout(total=None, connect=None, sock_read=None, sock_connect=None)


def _timeout(request: Req, whole: bool) -> aiohttp.ClientTimeout:
    """aiohttp's timeouts for ``request``; ``whole``: the answer is read whole under one bound
    for the exchange (:func:`_whole_bound`), which the driver keeps itself."""
    timeout = request.timeout
    read = timeout.get("read")
    if whole and not request.worker and read is not None:
        # The route call, the key fetch: one bound for all of it, where per-phase bounds
        # re-arm a read timer on every chunk that arrives.
        return _UNBOUNDED
    # httpx's four phases onto aiohttp's: ``connect`` there covers the wait for a pooled
    # connection and the connect itself; sock_read bounds each wait for bytes, as httpx's read.
    phases = (timeout.get("pool"), timeout.get("connect"), read)
    made = _PHASES.get(phases)
    if made is None:
        # Calls with time to spare get the same phases each time (the settings' own, below
        # the deadline's rest): one object per set, a few kept.
        if len(_PHASES) >= 32:
            _PHASES.clear()
        made = _PHASES[phases] = aiohttp.ClientTimeout(
            total=None,
            connect=phases[0],
            sock_connect=phases[1],
            sock_read=read,
            ceil_threshold=_EXACT,
        )
    return made


_PHASES: dict[tuple[float | None, float | None, float | None], aiohttp.ClientTimeout] = {}


def _whole_bound(request: Req) -> float | None:
    """Seconds for the whole exchange of an answer read whole (headers and body)."""
    read = request.timeout.get("read")
    budget = request.budget
    if request.worker or read is None:
        return budget
    return read if budget is None else min(read, budget)


class AiohttpOpened:
    """A response whose headers are in: what the flow and the clients read on aiohttp.

    Its body is asked for raw (``auto_decompress=False``): the readers in ``_body`` decode it
    under their size limits, where aiohttp would decode each chunk whole.
    """

    __slots__ = ("_deadlines", "_done", "_response", "headers", "status_code")

    def __init__(self, response: aiohttp.ClientResponse, deadlines: Deadlines) -> None:
        self._response = response
        self._deadlines = deadlines
        self._done = False
        self.status_code = response.status
        self.headers = response.headers

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body's raw bytes as they arrive (failures as httpx exceptions)."""
        content = self._response.content
        try:
            async for part in content.iter_any():
                yield part
        except aiohttp.ClientPayloadError as exc:
            # aiohttp raises a cut as soon as it sees it, even with bytes that arrived before
            # it still buffered: hand those out first (the tokens before a cut are the
            # caller's), then the cut.
            buffered = getattr(content, "_buffer", None)
            if buffered:
                held = b"".join(buffered)
                buffered.clear()
                yield held
            _reraise(exc)
        except BaseException as exc:
            _reraise(exc)
        self._done = True

    async def read_all(self, limit: int, seconds: float) -> bytes | None:
        """The whole body in one read, when it declares a length within ``limit`` and no
        encoding: aiohttp then reads exactly that many bytes (its parser, in C) with nothing
        to decode, where the general reader takes a turn of the event loop per piece. None
        when the answer is of another kind (the caller reads it the general way)."""
        coding = self.headers.get("Content-Encoding")
        if coding is not None and coding.strip().lower() != "identity":
            return None
        response = self._response
        length = response.content_length
        if length is None or length > limit:
            return None
        try:
            # No bound of its own (the caller's, if any), or nothing left to wait for: the
            # body came with the headers (the usual short answer).
            if seconds == float("inf") or response.content.is_eof():
                content = await response.read()
            else:
                content = await self._deadlines.within(response.read(), seconds)
        except (TimeoutError, asyncio.TimeoutError):  # distinct before Python 3.11
            raise httpx.ReadTimeout(f"the answer did not arrive within {seconds:g}s") from None
        except BaseException as exc:
            _reraise(exc)
        self._done = True  # (aiohttp's read released the connection to the pool)
        return content

    async def aclose(self) -> None:
        """Release the connection: back to the pool once read whole, else closed (a half-read
        answer must not be left for the next request on that connection)."""
        if self._done:
            self._response.release()
        else:
            self._response.close()


class AiohttpIO:
    """The flow's :class:`~vast_llm._drive.AsyncIO` on an ``aiohttp.ClientSession``.

    The session stays the caller's (its connector, limits, proxies and TLS settings apply; it
    is not closed here). One with default auth or credential headers is refused: those would
    reach workers.
    """

    __slots__ = ("_deadlines", "_netrc", "session", "worker_ssl")

    def __init__(self, session: Any, worker_ssl: ssl.SSLContext) -> None:
        if not isinstance(session, aiohttp.ClientSession):
            raise ConfigError(
                "http_client must be an httpx.AsyncClient or an aiohttp.ClientSession, got "
                f"{type(session).__name__}"
            )
        self.session = session
        self.worker_ssl = worker_ssl
        self._netrc: dict[str, bool] = {}  # host -> netrc holds credentials for it
        self._deadlines = Deadlines()  # the waits this driver bounds, on one timer
        self._check()

    def _check(self) -> None:
        session = self.session
        # A session's default headers go with every request, to workers too: the same rule as
        # for headers a caller names for workers (the flow's), no credential of any kind.
        if session.auth is None and not session.headers:  # the usual session
            return
        if session.auth is not None or not all(
            worker_header_allowed(name) for name in session.headers
        ):
            raise ConfigError(
                "this aiohttp.ClientSession sends credentials with every request (auth= or an "
                "Authorization/Cookie/API-key default header); they would reach workers. "
                "Give the client a session without them (the API key goes in api_key=)."
            )

    async def _check_request(self, request: Req, url: yarl.URL) -> None:
        """Refuse to send what this session would add credentials to (checked per request:
        a session's jar and its netrc can change at any time)."""
        session = self.session
        jar = session.cookie_jar
        if not isinstance(jar, aiohttp.DummyCookieJar) and len(jar) and jar.filter_cookies(url):
            raise ConfigError(
                f"this aiohttp.ClientSession would send cookies to {url.host}: vast-llm sends no "
                "cookies to the autoscaler or to workers. Give the client a session that keeps "
                "none: aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())"
            )
        if session.trust_env and url.host is not None:
            known = self._netrc.get(url.host)
            if known is None:
                loop = asyncio.get_running_loop()
                known = await loop.run_in_executor(None, _netrc_has, url.host)
                self._netrc[url.host] = known
            if known:
                raise ConfigError(
                    f"this aiohttp.ClientSession has trust_env=True and ~/.netrc holds "
                    f"credentials for {url.host}: aiohttp would send them. Use a session with "
                    "trust_env=False (give proxies with proxy=), or remove the netrc entry."
                )

    async def _send(self, request: Req, whole: bool) -> aiohttp.ClientResponse:
        # A short address goes as it is: aiohttp parses it through yarl's cache.
        url: str | yarl.URL = request.url
        if len(request.url) > _YARL_CACHED_LEN:
            url = _yarl(request.url)
        session = self.session
        jar = session.cookie_jar
        if session.trust_env or (not isinstance(jar, aiohttp.DummyCookieJar) and len(jar)):
            # (not for a usual session)
            await self._check_request(request, url if isinstance(url, yarl.URL) else _yarl(url))
        try:
            sending = self.session.request(
                request.method,
                url,
                data=request.content or None,
                headers=request.headers,
                timeout=_timeout(request, whole),
                allow_redirects=False,
                raise_for_status=False,
                auto_decompress=False,  # the readers decode, under their limits
                # Workers are trusted through the worker CA only, whatever the session's own
                # TLS settings (which stay in force for the autoscaler).
                **({"ssl": self.worker_ssl} if request.worker else {}),
            )
            if request.budget is None or whole:
                response = await sending  # (whole: the caller bounds the exchange)
            else:
                # The whole exchange until the headers: a peer dripping them cannot hold it.
                response = await self._deadlines.within(sending, request.budget)
        except BaseException as exc:
            _reraise(exc)
        if "Set-Cookie" in response.headers:  # (reading .cookies would build an empty jar)
            self._forget(response)
        return response

    def _forget(self, response: aiohttp.ClientResponse) -> None:
        """Take out of the session's jar the cookies this answer just put in: nothing a
        router or a worker sets is kept (so nothing goes back, to it or to anyone)."""
        names = set(response.cookies)
        host = response.url.host or ""
        self.session.cookie_jar.clear(
            lambda morsel: morsel.key in names and morsel["domain"].lstrip(".") in ("", host)
        )

    async def fetch(self, request: Req, limit: int) -> Fetched:
        # Headers and body under one bound, the driver's watch: no timer per phase. The
        # readers' bounds on size stay.
        bound = _whole_bound(request)
        try:
            return await self._deadlines.within(self._fetch(request, limit), bound)
        except (TimeoutError, asyncio.TimeoutError):  # distinct before Python 3.11
            raise httpx.ReadTimeout(f"no whole answer within {bound:g}s") from None

    async def _fetch(self, request: Req, limit: int) -> Fetched:
        opened = AiohttpOpened(await self._send(request, whole=True), self._deadlines)
        content = await aread_body(opened, limit, float("inf"))
        return Fetched(opened.status_code, opened.headers, content)

    async def open(self, request: Req) -> AiohttpOpened:
        # Checked on every worker call too: default headers can be added to a session later.
        self._check()
        response = await self._send(request, whole=False)
        if request.read_after_start is not None:
            # The answer started: the rest is read under the idle timeout, not the deadline's.
            connection = response.connection
            protocol = connection.protocol if connection is not None else None
            if protocol is not None:
                protocol.read_timeout = request.read_after_start
        return AiohttpOpened(response, self._deadlines)

    async def read(self, response: Any, limit: int, seconds: float) -> bytes:
        return await aread_body(response, limit, seconds, truncate=True)


_YARL_CACHED_LEN = 2048


def _yarl(url: str) -> yarl.URL:
    """``url`` parsed for aiohttp. yarl remembers the last 128 strings it parsed: fine for the
    autoscaler's and the workers' short addresses, not for a hostile 60 KB one, which is
    parsed past the cache."""
    if len(url) <= _YARL_CACHED_LEN:
        return yarl.URL(url)
    parse = getattr(yarl._url.encode_url, "__wrapped__", None)  # lru_cache keeps the original
    parsed = parse(url) if parse is not None else yarl.URL(url)
    assert isinstance(parsed, yarl.URL)
    return parsed


def _netrc_has(host: str) -> bool:
    """True when ~/.netrc (or $NETRC) holds credentials aiohttp would send to ``host``."""
    from aiohttp.helpers import basicauth_from_netrc, netrc_from_env

    try:
        return basicauth_from_netrc(netrc_from_env(), host) is not None
    except (LookupError, ValueError, OSError):
        return False
