"""VastTransport / AsyncVastTransport: Vast routing as an httpx transport.

Any httpx-based client reaches a Vast endpoint through these unchanged, e.g. the official
``openai`` SDK::

    import httpx, openai
    from vast_llm import VastTransport

    client = openai.OpenAI(
        base_url="http://vast/v1",            # the host is ignored; the path picks the route
        api_key="unused",                     # never sent anywhere: workers get no credentials
        max_retries=0,                        # the transport already retries what is safe
        http_client=httpx.Client(transport=VastTransport("my-endpoint")),
    )

Each request is routed, its assignment verified, rewritten to the worker (the JSON body
wrapped with the signed assignment, credentials stripped, cost taken from ``max_tokens`` /
``max_new_tokens``) and retried before its first byte like any other. A worker's final error
answer (a 4xx, or a 429/5xx after the retries) is returned as the response, so the SDK raises
its own error type for it; failures to obtain a worker raise :class:`~vast_llm.VastError`.
The route facts ride along in ``response.extensions["vast_route"]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from ._apis import DEFAULT_MAX_TOKENS, max_tokens_of
from ._body import EventReader, StreamTooLong
from ._budget import async_pools, budget, pools
from ._config import ClientOptions, Settings, resolve_settings
from ._decode import BoundedDecoder, DecodeError
from ._drive import HttpxIO, run_async, run_sync
from ._errors import ConfigError, WorkerError, WorkerStreamError
from ._failures import cut as _cut
from ._failures import unreadable as _unreadable
from ._flow import Context, request_flow, worker_header_allowed
from ._gate import Gate, acquire_async
from ._keys import KeyStore
from ._loops import PerLoop
from ._progress import listening
from ._sse import StreamError
from ._tls import worker_ssl_context
from ._types import RouteInfo

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["AsyncVastTransport", "VastTransport"]


def _incoming(s: Settings, request: httpx.Request) -> tuple[str, Any, float, bool, dict[str, str]]:
    """Path, JSON payload, cost and stream flag of a request addressed to the endpoint."""
    try:
        payload = json.loads(request.content) if request.content else {}
    except ValueError:
        raise ConfigError(
            "VastTransport carries JSON request bodies only (workers take a JSON payload)"
        ) from None
    if request.method != "POST":
        raise ConfigError(f"VastTransport carries POST requests only, got {request.method}")
    # The path only: an SDK's query string (e.g. ?api_key=...) never reaches a worker.
    path = request.url.path
    budget = max_tokens_of(payload) if isinstance(payload, dict) else None
    cost = s.cost_of(payload if isinstance(payload, dict) else {}, budget or DEFAULT_MAX_TOKENS)
    stream = isinstance(payload, dict) and payload.get("stream") is True
    # An SDK's own headers reach a worker only from the allow-list (its auth never does).
    headers = {
        name: value
        for name, value in request.headers.items()
        if worker_header_allowed(name, named_by_user=False)
    }
    return path, payload, cost, stream, headers


def _check_kind(http_client: Any, kind: type) -> None:
    if http_client is not None and not isinstance(http_client, kind):
        raise ConfigError(
            f"http_client must be an {kind.__module__}.{kind.__name__}, "
            f"got {type(http_client).__name__}"
        )


def _error_response(error: WorkerError, request: httpx.Request) -> httpx.Response:
    # The worker's own error answer, handed to the SDK so it raises its own error type.
    content = error.content
    return httpx.Response(
        error.status_code or 502,
        headers={"content-type": "application/json"} if content.lstrip()[:1] == b"{" else None,
        content=content,
        request=request,
        extensions={"vast_error": error},
    )


class _Common:
    _settings: Settings

    def _setup(self, endpoint: str | None, options: ClientOptions) -> None:
        self._settings = resolve_settings(endpoint, **options)
        self._ctx = Context()
        self._keys = KeyStore(self._settings, self._ctx)

    @staticmethod
    def _max_tokens(request: httpx.Request) -> int:
        try:
            payload = json.loads(request.content)
        except (ValueError, RecursionError):
            return DEFAULT_MAX_TOKENS
        found = max_tokens_of(payload) if isinstance(payload, dict) else None
        return found or DEFAULT_MAX_TOKENS

    def _flow(self, request: httpx.Request) -> Any:
        s = self._settings
        path, payload, cost, stream, headers = _incoming(s, request)
        return request_flow(
            s,
            self._ctx,
            path=path,
            payload=payload,
            cost=cost,
            stream=stream,
            headers=headers,
            observed=listening(s.on_progress),
        )


class _Relay:
    """The bounds on a relayed answer, for an SDK that reads it as plain bytes.

    The body is decoded here, under ``max_answer_bytes`` (the SDK gets it without its
    ``Content-Encoding``, so its own HTTP stack never decodes a bomb); an event stream must make
    progress (complete events) within the idle timeout and carry no more events than the token
    budget allows; any other body must arrive whole within the idle timeout.
    """

    def __init__(self, response: httpx.Response, s: Settings, max_tokens: int) -> None:
        self.url = str(response.request.url) if response.request else "the worker"
        idle = s.timeout.read or float("inf")
        if "text/event-stream" in response.headers.get("content-type", ""):
            self.reader: EventReader | None = EventReader(
                response,
                max_bytes=s.max_answer_bytes,
                max_event=s.max_event_bytes,
                max_events=4 * max_tokens + 64,
                idle=idle,
            )
            self.decoder: BoundedDecoder | None = None
        else:
            self.reader = None
            self.decoder = BoundedDecoder(
                response.headers.get("content-encoding"), s.max_answer_bytes
            )
        self.end = time.monotonic() + idle

    def left(self) -> float:
        return self.reader.left() if self.reader is not None else self.end - time.monotonic()

    def feed(self, raw: bytes) -> Iterator[bytes]:
        """The decoded pieces of ``raw``, each checked against the bounds before it goes on."""
        try:
            if self.reader is not None:
                # The reader decodes and parses; the SDK gets the decoded bytes as they are.
                for piece in self.reader.decode(raw):
                    self.reader.feed_decoded(piece)
                    yield piece
                self.reader.feed_decoded(b"")
                return
            assert self.decoder is not None
            yield from self.decoder.decode(raw)
            if time.monotonic() > self.end:
                raise httpx.ReadTimeout("the answer did not arrive within the idle timeout")
        except httpx.TimeoutException as exc:
            raise _cut(exc, self.url) from None
        except (DecodeError, StreamError, StreamTooLong) as exc:
            raise _unreadable(exc, self.url, stream=True) from None

    def flush(self) -> bytes:
        try:
            if self.reader is not None:
                self.reader.end()
                return b""
            assert self.decoder is not None
            return self.decoder.flush()
        except (DecodeError, StreamError) as exc:
            raise _unreadable(exc, self.url, stream=True) from None


def _relayed_headers(headers: httpx.Headers) -> list[tuple[str, str]]:
    # Decoded here, so neither the encoding nor the raw length applies; cookies stay out.
    dropped = {"content-encoding", "content-length", "set-cookie", "transfer-encoding"}
    return [(k, v) for k, v in headers.multi_items() if k.lower() not in dropped]


class _SyncBody(httpx.SyncByteStream):
    def __init__(self, response: httpx.Response, relay: _Relay, gate: Gate) -> None:
        self._response = response
        self._relay = relay
        # The request's turn ends with its body: when it is closed, or, if an SDK drops it
        # unclosed, when it is collected (else the transport would run out of turns).
        self._release = weakref.finalize(self, gate.release)

    def __iter__(self) -> Iterator[bytes]:
        relay = self._relay
        pieces = self._response.iter_raw()
        try:
            while True:
                with budget(relay.left()):
                    raw = next(pieces, None)
                if raw is None:
                    break
                yield from relay.feed(raw)
        except httpx.TransportError as exc:
            raise _cut(exc, relay.url) from exc
        tail = relay.flush()
        if tail:
            yield tail

    def close(self) -> None:
        try:
            self._response.close()
        finally:
            self._release()


def _release_in_loop(loop: asyncio.AbstractEventLoop, gate: asyncio.Semaphore) -> None:
    # A finalizer may run in any thread (the collector's); the semaphore is its loop's.
    if loop.is_closed():
        return
    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
        loop.call_soon_threadsafe(gate.release)


class _AsyncBody(httpx.AsyncByteStream):
    def __init__(self, response: httpx.Response, relay: _Relay, gate: asyncio.Semaphore) -> None:
        self._response = response
        self._relay = relay
        self._gate = gate
        self._release = weakref.finalize(self, _release_in_loop, asyncio.get_running_loop(), gate)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        relay = self._relay
        pieces = self._response.aiter_raw()
        try:
            while True:
                with budget(relay.left()):
                    raw = await anext(pieces, None)
                if raw is None:
                    break
                for piece in relay.feed(raw):
                    yield piece
        except httpx.TransportError as exc:
            raise _cut(exc, relay.url) from exc
        tail = relay.flush()
        if tail:
            yield tail

    async def aclose(self) -> None:
        try:
            await self._response.aclose()
        finally:
            if self._release.detach() is not None:
                self._gate.release()


def _relay(
    response: httpx.Response, route: RouteInfo, stream: httpx.SyncByteStream | httpx.AsyncByteStream
) -> httpx.Response:
    return httpx.Response(
        response.status_code,
        headers=_relayed_headers(response.headers),
        stream=stream,
        extensions={"vast_route": route, "http_version": b"HTTP/1.1"},
    )


class VastTransport(_Common, httpx.BaseTransport):
    """An httpx transport that sends each request to a verified worker of a Vast endpoint.

    Takes the same settings as :class:`~vast_llm.VastClient` (``endpoint``, ``api_key``,
    ``base_url``, ``payload_format``, ``signature_policy``, ``public_key``, ``timeout``,
    ``deadline``, ``max_retries``, ``cost``, ``max_concurrency``...); ``http_client`` is the
    ``httpx.Client`` used for the route and worker calls themselves. A request holds one of
    ``max_concurrency`` turns (default 256) until its response body is closed.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        http_client: httpx.Client | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        self._setup(endpoint, options)
        _check_kind(http_client, httpx.Client)
        self._gate = Gate(self._settings.max_concurrency)
        self._owns_http = http_client is None
        s = self._settings
        if http_client is not None:
            self._router = self._worker = http_client
        else:
            self._router, self._worker = pools(s.limits, s.timeout, worker_ssl_context(s.worker_ca))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        s = self._settings
        self._gate.acquire(s.deadline)
        try:
            response, route = run_sync(
                self._flow(request), self._router, self._worker, self._keys, s.on_progress
            )
        except BaseException as error:
            self._gate.release()
            if isinstance(error, WorkerError) and not isinstance(error, WorkerStreamError):
                return _error_response(error, request)
            raise
        relay = _Relay(response, s, self._max_tokens(request))
        return _relay(response, route, _SyncBody(response, relay, self._gate))

    def close(self) -> None:
        if self._owns_http:
            self._router.close()
            self._worker.close()


class AsyncVastTransport(_Common, httpx.AsyncBaseTransport):
    """The async twin of :class:`VastTransport`, for ``httpx.AsyncClient``-based SDKs."""

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        http_client: httpx.AsyncClient | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        self._setup(endpoint, options)
        _check_kind(http_client, httpx.AsyncClient)
        self._user_http = http_client
        self._user_loop: asyncio.AbstractEventLoop | None = None
        self._user_lock = threading.Lock()
        self._loops: PerLoop[_TransportLoop] = PerLoop(self._loop_state, _close_transport_loop)

    def _loop_state(self) -> _TransportLoop:
        s = self._settings
        gate = asyncio.Semaphore(s.max_concurrency)
        if self._user_http is not None:
            loop = asyncio.get_running_loop()
            if self._user_loop is None:
                self._user_loop = loop
            elif self._user_loop is not loop:
                raise ConfigError(
                    "the httpx.AsyncClient given as http_client belongs to another event loop "
                    "(the one it was first used in); create it inside the loop that uses it, or "
                    "leave http_client out and the transport keeps a pool per event loop"
                )
            return _TransportLoop(HttpxIO(self._user_http), gate, asyncio.Lock(), ())
        router, worker = async_pools(s.limits, s.timeout, worker_ssl_context(s.worker_ca))
        return _TransportLoop(HttpxIO(router, worker), gate, asyncio.Lock(), (router, worker))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        state = await self._loops.get()
        s = self._settings
        await acquire_async(state.gate, s.max_concurrency, s.deadline)
        try:
            flow = self._flow(request)
            response, route = await run_async(
                flow, state.io, self._keys, state.key_lock, s.on_progress
            )
        except BaseException as error:
            state.gate.release()
            if isinstance(error, WorkerError) and not isinstance(error, WorkerStreamError):
                return _error_response(error, request)
            raise
        relay = _Relay(response, s, self._max_tokens(request))
        return _relay(response, route, _AsyncBody(response, relay, state.gate))

    async def aclose(self) -> None:
        await self._loops.aclose_current()
        self._loops.forget_all()


@dataclass(slots=True)
class _TransportLoop:
    io: HttpxIO
    gate: asyncio.Semaphore
    key_lock: asyncio.Lock
    owned: tuple[httpx.AsyncClient, ...]


async def _close_transport_loop(state: _TransportLoop) -> None:
    for client in state.owned:
        await client.aclose()
