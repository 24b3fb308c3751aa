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
import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from ._apis import DEFAULT_MAX_TOKENS, max_tokens_of
from ._config import ClientOptions, Settings, resolve_settings
from ._drive import HttpxIO, run_async, run_sync
from ._errors import ConfigError, WorkerError, WorkerStreamError
from ._flow import Context, request_flow
from ._gate import Gate, acquire_async
from ._keys import KeyStore
from ._loops import PerLoop
from ._progress import listening
from ._tls import worker_ssl_context
from ._types import RouteInfo

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["AsyncVastTransport", "VastTransport"]


def _incoming(s: Settings, request: httpx.Request) -> tuple[str, Any, float, bool, httpx.Headers]:
    """Path, JSON payload, cost and stream flag of a request addressed to the endpoint."""
    try:
        payload = json.loads(request.content) if request.content else {}
    except ValueError:
        raise ConfigError(
            "VastTransport carries JSON request bodies only (workers take a JSON payload)"
        ) from None
    if request.method != "POST":
        raise ConfigError(f"VastTransport carries POST requests only, got {request.method}")
    path = request.url.raw_path.decode("ascii")
    budget = max_tokens_of(payload) if isinstance(payload, dict) else None
    cost = s.cost_of(payload if isinstance(payload, dict) else {}, budget or DEFAULT_MAX_TOKENS)
    stream = isinstance(payload, dict) and payload.get("stream") is True
    return path, payload, cost, stream, request.headers


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


class _SyncBody(httpx.SyncByteStream):
    def __init__(self, response: httpx.Response, gate: Gate) -> None:
        self._response = response
        self._gate: Gate | None = gate

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._response.iter_raw()
        except httpx.TransportError as exc:
            raise httpx.ReadError(f"the worker's answer was cut: {exc}") from exc

    def close(self) -> None:
        try:
            self._response.close()
        finally:
            if self._gate is not None:  # the request's turn ends with its body
                self._gate.release()
                self._gate = None


class _AsyncBody(httpx.AsyncByteStream):
    def __init__(self, response: httpx.Response, gate: asyncio.Semaphore) -> None:
        self._response = response
        self._gate: asyncio.Semaphore | None = gate

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._response.aiter_raw():
                yield part
        except httpx.TransportError as exc:
            raise httpx.ReadError(f"the worker's answer was cut: {exc}") from exc

    async def aclose(self) -> None:
        try:
            await self._response.aclose()
        finally:
            if self._gate is not None:
                self._gate.release()
                self._gate = None


def _relay(
    response: httpx.Response, route: RouteInfo, stream: httpx.SyncByteStream | httpx.AsyncByteStream
) -> httpx.Response:
    return httpx.Response(
        response.status_code,
        headers=response.headers,
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
        self._router = http_client or httpx.Client(limits=s.limits, timeout=s.timeout)
        self._worker = http_client or httpx.Client(
            limits=s.limits, timeout=s.timeout, verify=worker_ssl_context(s.worker_ca)
        )

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
        return _relay(response, route, _SyncBody(response, self._gate))

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
        router = httpx.AsyncClient(limits=s.limits, timeout=s.timeout)
        worker = httpx.AsyncClient(
            limits=s.limits, timeout=s.timeout, verify=worker_ssl_context(s.worker_ca)
        )
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
        return _relay(response, route, _AsyncBody(response, state.gate))

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
