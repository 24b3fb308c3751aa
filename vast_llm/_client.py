"""VastClient and AsyncVastClient: thin drivers of the one request flow in ``_flow``.

A client is settings plus HTTP pools. The sync client's pools serve every thread. The async
client's pools, gate and key lock exist once per running event loop (``_loops.PerLoop``), so
one client works under ``asyncio.run`` called again and again, pytest-asyncio's loop per test,
notebooks and threads that each run a loop; a pool is closed with its loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, cast, overload

import httpx

from . import _embed
from ._answer import AnswerBuilder, whole_answer
from ._apis import WorkerCall, chat_call, completion_call
from ._body import EventReader, StreamTooLong, aread_body, aread_events, read_body, read_events
from ._budget import async_pools, pools
from ._config import PER_CALL, ClientOptions, Settings, resolve_settings
from ._decode import DecodeError
from ._drive import AsyncIO, HttpxIO, run_async, run_sync
from ._errors import ConfigError
from ._failures import check_event_stream as _check_event_stream
from ._failures import cut as _cut
from ._failures import event_reader
from ._failures import unreadable as _unreadable
from ._flow import Context, request_flow, route_flow
from ._gate import Gate, acquire_async
from ._keys import KeyStore
from ._loops import PerLoop
from ._progress import listening
from ._raw import AsyncEventStream, EventStream, WorkerAnswer, fetch_async, fetch_sync, raw_call
from ._reuse import drain, drain_async
from ._session import DEFAULT_LIFETIME, AsyncVastSession, Pin, VastSession, pin_for, session_flow
from ._sse import StreamError
from ._tls import worker_ssl_context
from ._types import Assignment, Chunk, Completion, RouteInfo, ToolCall, Usage, answer_facts

if TYPE_CHECKING:
    import aiohttp
    from typing_extensions import Unpack

__all__ = ["AsyncStream", "AsyncVastClient", "Stream", "VastClient"]

Message = Mapping[str, Any]


def _max_events(call: WorkerCall) -> int:
    # A worker sends about one event per token; far more than the budget is a worker lying.
    return 4 * call.max_tokens + 64


def _reader(call: _Call, response: Any, clock: Any) -> EventReader:
    return event_reader(call.settings, response, _max_events(call.worker), clock)


def _split(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A call's keyword arguments: per-call settings (``timeout``...) and generation params."""
    if PER_CALL.isdisjoint(params):  # the usual call
        return {}, dict(params)
    overrides = {k: v for k, v in params.items() if k in PER_CALL}
    return overrides, {k: v for k, v in params.items() if k not in PER_CALL}


def _restore(cls: type[_BaseClient], endpoint: str | None, options: dict[str, Any]) -> Any:
    return cls(endpoint, **options)


class _BaseClient:
    """Settings, call building and the pure parts both clients share."""

    _settings: Settings
    _user_http: Any = None

    def __init__(self, endpoint: str | None = None, **options: Unpack[ClientOptions]) -> None:
        self._endpoint_arg = endpoint
        self._options: dict[str, Any] = dict(options)
        self._settings = resolve_settings(endpoint, **options)
        self._ctx = Context()
        self._keys = KeyStore(self._settings, self._ctx)

    @property
    def settings(self) -> Settings:
        """The resolved settings (the API key is kept out of their repr)."""
        return self._settings

    @property
    def endpoint(self) -> str:
        return self._settings.endpoint

    @property
    def base_url(self) -> str:
        return self._settings.base_url

    @property
    def api(self) -> str:
        return self._settings.api

    def __repr__(self) -> str:
        s = getattr(self, "_settings", None)
        if s is None:
            return f"<{type(self).__name__} (not configured)>"
        return (
            f"{type(self).__name__}(endpoint={s.endpoint!r}, base_url={s.base_url!r}, "
            f"api={s.api!r}, payload_format={s.payload_format!r}, "
            f"signature_policy={s.signature_policy!r})"
        )

    # Copies and pickles carry the settings as given (the key included: a pickle is a secret
    # like the key itself) and build their own pools; a user's HTTP client is shared by
    # copies and cannot be pickled.
    def __reduce__(self) -> tuple[Any, ...]:
        if self._user_http is not None:
            raise TypeError(
                f"cannot pickle a {type(self).__name__} built with http_client=: an HTTP "
                "client holds sockets; pickle one without it"
            )
        return (_restore, (type(self), self._endpoint_arg, self._options))

    def __copy__(self) -> Any:
        return self.__deepcopy__({})

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        extra = {"http_client": self._user_http} if self._user_http is not None else {}
        return type(self)(self._endpoint_arg, **extra, **self._options)

    def _call_settings(self, overrides: Mapping[str, Any]) -> Settings:
        return self._settings.for_call(overrides) if overrides else self._settings

    def _completion(
        self,
        prompt: str,
        params: Mapping[str, Any],
        stream: bool,
        headers: Mapping[str, str] | None = None,
    ) -> _Call:
        overrides, rest = _split(params)
        return _Call(
            completion_call(self._settings.api, prompt, rest, stream),
            self._call_settings(overrides),
            headers,
        )

    def _chat(
        self,
        messages: Sequence[Message],
        params: Mapping[str, Any],
        stream: bool,
        headers: Mapping[str, str] | None = None,
    ) -> _Call:
        overrides, rest = _split(params)
        call = chat_call(self._settings.api, messages, rest, stream, self._settings.chat_template)
        return _Call(call, self._call_settings(overrides), headers)

    def _flow(self, call: _Call) -> Any:
        s = call.settings
        if call.session is not None:  # a worker session's call: no route (vast_llm._session)
            return session_flow(
                call.session, call.worker, s, self._ctx, listening(s.on_progress), call.headers
            )
        return request_flow(
            s,
            self._ctx,
            path=call.worker.path,
            payload=call.worker.payload,
            cost=s.cost_of(call.worker.payload, call.worker.max_tokens),
            stream=call.worker.stream,
            observed=listening(s.on_progress),
            headers=call.headers,
        )

    def _route_flow(self, cost: float) -> Any:
        s = self._settings
        return route_flow(s, self._ctx, float(cost), observed=listening(s.on_progress))


@dataclass(frozen=True, slots=True)
class _Call:
    """One call: what to send to the worker, under which settings."""

    worker: WorkerCall
    settings: Settings
    headers: Mapping[str, str] | None = None  # extra worker request headers (no credentials)
    session: Pin | None = None  # set by a worker session's view: the call goes there


class VastClient(_BaseClient):
    """A synchronous client for one Vast.ai Serverless endpoint.

    Each call obtains a worker from the autoscaler, verifies the signed assignment before the
    worker is contacted, calls it, and retries what is safe to retry (before the first byte of
    the answer) on a fresh route. A client is thread-safe: share one across threads.

    Setup:
        ``pip install vast-llm``; set ``VAST_API_KEY`` and ``VAST_ENDPOINT`` (or pass them).

    Example:
        .. code-block:: python

            from vast_llm import VastClient

            with VastClient("my-endpoint") as client:          # api="tgi" by default
                print(client.generate("Hello", max_tokens=32).text)
                for chunk in client.stream("Tell me a story"):
                    print(chunk.text, end="", flush=True)

    Args:
        endpoint: endpoint name (``VAST_ENDPOINT``).
        http_client: an ``httpx.Client`` to use for the autoscaler and the workers instead of
            the client's own pools (its proxies, hooks and transport apply; its auth and default
            headers are never sent to workers).
        **options: the settings of :class:`vast_llm.ClientOptions` (``api_key``, ``base_url``,
            ``api``, ``timeout``, ``deadline``, ``max_retries``...; the README's configuration
            table lists them all). Unknown names raise :class:`ConfigError`.

    Each call takes generation parameters (``max_tokens``, ``temperature``, ``stop``...) and
    may override ``timeout``, ``deadline``, ``max_retries`` and ``cost`` for itself.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        http_client: httpx.Client | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        super().__init__(endpoint, **options)
        if http_client is not None and not isinstance(http_client, httpx.Client):
            raise ConfigError(
                f"http_client must be an httpx.Client, got {type(http_client).__name__} "
                "(async clients and aiohttp sessions go to AsyncVastClient)"
            )
        self._user_http = http_client
        self._gate = Gate(self._settings.max_concurrency)
        self._lock = threading.Lock()
        self._router: httpx.Client | None = http_client
        self._worker: httpx.Client | None = http_client
        self._closed = False

    def _pools(self) -> tuple[httpx.Client, httpx.Client]:
        router, worker = self._router, self._worker
        if router is not None and worker is not None:
            return router, worker
        with self._lock:
            if self._closed:
                raise ConfigError(f"this {type(self).__name__} is closed")
            s = self._settings
            if self._router is None or self._worker is None:
                self._router, self._worker = pools(
                    s.limits, s.timeout, worker_ssl_context(s.worker_ca)
                )
            return self._router, self._worker

    def _run(self, flow: Any) -> Any:
        router, worker = self._pools()
        return run_sync(flow, router, worker, self._keys, self._settings.on_progress)

    def route(self, cost: float = 256) -> Assignment:
        """One verified worker assignment, waiting (up to the deadline) for a ready worker."""
        return cast(Assignment, self._run(self._route_flow(cost)))

    def generate(
        self, prompt: str, *, headers: Mapping[str, str] | None = None, **params: Any
    ) -> Completion:
        """Complete ``prompt``; ``params`` are generation parameters (``max_tokens``,
        ``stop``...) and per-call settings (``timeout``, ``deadline``, ``max_retries``,
        ``cost``). ``headers`` are added to the worker request (never to the autoscaler's;
        credential headers such as ``Authorization`` are dropped)."""
        return self._whole(self._completion(prompt, params, stream=False, headers=headers))

    def chat(
        self,
        messages: Sequence[Message],
        *,
        headers: Mapping[str, str] | None = None,
        **params: Any,
    ) -> Completion:
        """Answer a chat (OpenAI-style messages); on TGI workers through ``chat_template``."""
        return self._whole(self._chat(messages, params, stream=False, headers=headers))

    def stream(
        self, prompt: str, *, headers: Mapping[str, str] | None = None, **params: Any
    ) -> Stream:
        """Stream a completion of ``prompt`` chunk by chunk (use it in a ``with`` block)."""
        return Stream(self, self._completion(prompt, params, stream=True, headers=headers))

    def stream_chat(
        self,
        messages: Sequence[Message],
        *,
        headers: Mapping[str, str] | None = None,
        **params: Any,
    ) -> Stream:
        """Stream a chat answer chunk by chunk (use it in a ``with`` block)."""
        return Stream(self, self._chat(messages, params, stream=True, headers=headers))

    def session(
        self,
        *,
        lifetime: float = DEFAULT_LIFETIME,
        cost: float | None = None,
        recreate: bool = True,
    ) -> VastSession:
        """A worker session, for a ``with`` block: its calls go to one worker with no route
        call, so they skip the route round trip and find the worker's prefix cache warm.

        ``lifetime``: seconds the worker keeps the session past its last call's start; a
        call running longer than that may be cut by the worker, so make it exceed your
        longest call. ``cost``: the load it reserves on its worker (default: the ``cost``
        setting if it is a number, else 256). ``recreate``: when the worker loses the session,
        make a new one on a fresh route (default) instead of raising. See
        :class:`vast_llm.VastSession`.
        """
        return VastSession(self, pin_for(self._settings, lifetime, cost, recreate))

    def _whole(self, call: _Call) -> Completion:
        self._gate.acquire(call.settings.deadline)
        try:
            started = self._ctx.clock()
            response, route = self._run(self._flow(call))
            s = call.settings
            try:
                content = read_body(response, s.max_answer_bytes, s.timeout.read or float("inf"))
            except httpx.TransportError as exc:
                raise _cut(exc, route.worker_url, started=False) from exc
            except DecodeError as exc:
                raise _unreadable(exc, route.worker_url, stream=False) from None
        finally:
            self._gate.release()
        return whole_answer(call.worker, content, route, started, self._ctx.clock)

    def close(self) -> None:
        """Close the connection pools (only those this client created); a closed client
        refuses further calls."""
        with self._lock:
            self._closed = True
            pools = [] if self._user_http is not None else [self._router, self._worker]
            self._router = self._worker = self._user_http
        for pool in pools:
            if pool is not None:
                pool.close()

    def __enter__(self) -> VastClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- any worker route; embeddings, rerank, score (vast_llm._raw, vast_llm._embed) ----

    @overload
    def request(
        self,
        path: str,
        payload: Any,
        *,
        stream: Literal[False] = False,
        headers: Mapping[str, str] | None = None,
        **settings: Any,
    ) -> WorkerAnswer: ...
    @overload
    def request(
        self,
        path: str,
        payload: Any,
        *,
        stream: Literal[True],
        headers: Mapping[str, str] | None = None,
        **settings: Any,
    ) -> EventStream: ...
    def request(
        self,
        path: str,
        payload: Any,
        *,
        stream: bool = False,
        headers: Mapping[str, str] | None = None,
        **settings: Any,
    ) -> WorkerAnswer | EventStream:
        """Send ``payload`` (any JSON value) to any worker route, routed, verified and retried
        like every call: ``request("/generate/sync", workflow)`` for ComfyUI,
        ``request("/v1/audio/speech", {...})``... Returns the whole answer (parsed when it is
        JSON, with the route facts), or with ``stream=True`` an :class:`EventStream` of the
        worker's server-sent events (use it in a ``with`` block). ``settings``: ``timeout``,
        ``deadline``, ``max_retries``, ``cost`` for this call (the default cost: what Vast's
        worker counts for the embeddings, rerank and score routes, else the payload's max
        tokens, else 256)."""
        call = raw_call(
            self._settings, path, payload, stream=stream, headers=headers, overrides=settings
        )
        return EventStream(self, call) if stream else fetch_sync(self, call).answer()

    def embed(self, texts: Sequence[str], **params: Any) -> _embed.Embeddings:
        """Embed ``texts`` through ``/v1/embeddings``: one vector per text, in order, with
        usage and the route facts of every request. Long inputs go in batches of
        ``batch_size`` (the ``embed_batch_size`` setting, 64); a batch a worker refuses as too
        large is halved. ``params``: ``model``, ``dimensions``, ``batch_size``, per-call
        settings (``timeout``...), anything else for the model server
        (``truncate_prompt_tokens``...). Rules and errors: :mod:`vast_llm._embed`."""
        return _embed.embed_sync(self, texts, params)

    def iter_embed(self, texts: Iterable[str], **params: Any) -> Iterator[_embed.EmbeddingBatch]:
        """:meth:`embed`, batch by batch: reads ``texts`` (any iterable) one batch at a time and
        yields each batch's vectors, so memory stays that of one batch."""
        return _embed.iter_embed_sync(self, texts, params)

    def rerank(
        self, query: str, documents: Sequence[str], *, top_n: int | None = None, **params: Any
    ) -> _embed.Reranking:
        """Rank ``documents`` by relevance to ``query`` through ``/v1/rerank``: the best
        ``top_n`` (all by default), each with its input index and score; batched like
        :meth:`embed`."""
        return _embed.rerank_sync(self, query, documents, {**params, "top_n": top_n})

    def score(self, query: str, documents: Sequence[str], **params: Any) -> _embed.Scores:
        """One relevance score per document, in input order, through ``/v1/score``."""
        return _embed.score_sync(self, query, documents, params)


@dataclass(slots=True)
class _LoopState:
    """What an async client needs in one event loop."""

    io: AsyncIO
    gate: asyncio.Semaphore
    key_lock: asyncio.Lock
    owned: tuple[httpx.AsyncClient, ...] = ()


def _aiohttp_io(session: Any, settings: Settings) -> AsyncIO:
    try:
        from ._aiohttp import AiohttpIO
    except ImportError:
        raise ConfigError(
            "http_client must be an httpx.AsyncClient (or an aiohttp.ClientSession, with "
            f'pip install "vast-llm[aiohttp]"), got {type(session).__name__}'
        ) from None
    return AiohttpIO(session, worker_ssl_context(settings.worker_ca))


def _other_loop(what: str) -> ConfigError:
    return ConfigError(
        f"the {what} given as http_client belongs to another event loop (the one it was "
        "created in or first used in): its connections cannot be used from this one. Create "
        "it inside the loop that uses it, or leave http_client out and the client keeps a pool "
        "per event loop itself"
    )


class AsyncVastClient(_BaseClient):
    """The asynchronous twin of :class:`VastClient` (same arguments, ``httpx.AsyncClient``).

    One client serves any number of event loops, one after another (``asyncio.run`` called
    again, a test per loop) or at once in several threads: its pools, gate and locks exist
    per loop and are closed when that loop shuts down.

    Example:
        .. code-block:: python

            from vast_llm import AsyncVastClient

            async with AsyncVastClient("my-endpoint", api="openai") as client:
                answer = await client.chat([{"role": "user", "content": "Hi"}])
                async for chunk in client.stream("Tell me a story"):
                    print(chunk.text, end="")

    ``http_client`` may be an ``httpx.AsyncClient`` or an ``aiohttp.ClientSession`` (``pip
    install "vast-llm[aiohttp]"``: the same flow then runs on aiohttp directly, at about a
    third of httpx's client CPU per request, docs/benchmarks.md). Either belongs to one event
    loop, and using it from another raises :class:`ConfigError`. It stays yours to close; a
    session that sends default credentials (``auth=``, an ``Authorization`` header) is refused.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        http_client: httpx.AsyncClient | aiohttp.ClientSession | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        super().__init__(endpoint, **options)
        self._user_http = http_client
        self._user_io: AsyncIO | None = None
        self._user_loop: asyncio.AbstractEventLoop | None = None
        if http_client is not None:
            if isinstance(http_client, httpx.AsyncClient):
                self._user_io = HttpxIO(http_client)
            else:
                self._user_io = _aiohttp_io(http_client, self._settings)
        self._loops: PerLoop[_LoopState] = PerLoop(self._loop_state, _close_state)
        self._closed = False

    def _loop_state(self) -> _LoopState:
        s = self._settings
        owned: tuple[httpx.AsyncClient, ...] = ()
        if self._closed:
            raise ConfigError(f"this {type(self).__name__} is closed")
        if self._user_io is None:
            router, worker = async_pools(s.limits, s.timeout, worker_ssl_context(s.worker_ca))
            io: AsyncIO = HttpxIO(router, worker)
            owned = (router, worker)
        else:
            io = self._user_io
            self._check_user_loop()
        return _LoopState(io, asyncio.Semaphore(s.max_concurrency), asyncio.Lock(), owned)

    def _check_user_loop(self) -> None:
        loop = asyncio.get_running_loop()
        session_loop = getattr(self._user_http, "_loop", None)  # aiohttp binds at creation
        if isinstance(session_loop, asyncio.AbstractEventLoop) and session_loop is not loop:
            raise _other_loop(type(self._user_http).__name__)
        if self._user_loop is None:
            self._user_loop = loop
        elif self._user_loop is not loop:
            raise _other_loop(type(self._user_http).__name__)

    async def _state(self) -> _LoopState:
        return await self._loops.get()

    async def route(self, cost: float = 256) -> Assignment:
        """One verified worker assignment, waiting (up to the deadline) for a ready worker."""
        state = await self._state()
        return cast(Assignment, await self._run(self._route_flow(cost), state))

    def _run(self, flow: Any, state: _LoopState) -> Any:
        return run_async(flow, state.io, self._keys, state.key_lock, self._settings.on_progress)

    async def generate(
        self, prompt: str, *, headers: Mapping[str, str] | None = None, **params: Any
    ) -> Completion:
        """Complete ``prompt``; ``params`` are generation parameters (``max_tokens``,
        ``stop``...) and per-call settings (``timeout``, ``deadline``, ``max_retries``,
        ``cost``). ``headers`` are added to the worker request (never to the autoscaler's;
        credential headers such as ``Authorization`` are dropped)."""
        return await self._whole(self._completion(prompt, params, stream=False, headers=headers))

    async def chat(
        self,
        messages: Sequence[Message],
        *,
        headers: Mapping[str, str] | None = None,
        **params: Any,
    ) -> Completion:
        """Answer a chat (OpenAI-style messages); on TGI workers through ``chat_template``."""
        return await self._whole(self._chat(messages, params, stream=False, headers=headers))

    def stream(
        self, prompt: str, *, headers: Mapping[str, str] | None = None, **params: Any
    ) -> AsyncStream:
        """Stream a completion chunk by chunk (``async for``; ``async with`` closes it early)."""
        return AsyncStream(self, self._completion(prompt, params, stream=True, headers=headers))

    def stream_chat(
        self,
        messages: Sequence[Message],
        *,
        headers: Mapping[str, str] | None = None,
        **params: Any,
    ) -> AsyncStream:
        """Stream a chat answer chunk by chunk."""
        return AsyncStream(self, self._chat(messages, params, stream=True, headers=headers))

    def session(
        self,
        *,
        lifetime: float = DEFAULT_LIFETIME,
        cost: float | None = None,
        recreate: bool = True,
    ) -> AsyncVastSession:
        """A worker session, for an ``async with`` block: :meth:`VastClient.session`."""
        return AsyncVastSession(self, pin_for(self._settings, lifetime, cost, recreate))

    async def _whole(self, call: _Call) -> Completion:
        state = await self._loops.get()
        await acquire_async(state.gate, self._settings.max_concurrency, call.settings.deadline)
        try:
            started = self._ctx.clock()
            response, route = await self._run(self._flow(call), state)
            s = call.settings
            try:
                content = await aread_body(
                    response, s.max_answer_bytes, s.timeout.read or float("inf")
                )
            except httpx.TransportError as exc:
                raise _cut(exc, route.worker_url, started=False) from exc
            except DecodeError as exc:
                raise _unreadable(exc, route.worker_url, stream=False) from None
        finally:
            state.gate.release()
        return whole_answer(call.worker, content, route, started, self._ctx.clock)

    async def aclose(self) -> None:
        """Close the pools this client created: this loop's now; those of other loops are
        dropped (they close with their loops). A closed client refuses further calls."""
        self._closed = True
        await self._loops.aclose_current()
        self._loops.forget_all()

    async def __aenter__(self) -> AsyncVastClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- any worker route; embeddings, rerank, score (vast_llm._raw, vast_llm._embed) ----

    @overload
    async def request(
        self,
        path: str,
        payload: Any,
        *,
        stream: Literal[False] = False,
        headers: Mapping[str, str] | None = None,
        **settings: Any,
    ) -> WorkerAnswer: ...
    @overload
    async def request(
        self,
        path: str,
        payload: Any,
        *,
        stream: Literal[True],
        headers: Mapping[str, str] | None = None,
        **settings: Any,
    ) -> AsyncEventStream: ...
    async def request(
        self,
        path: str,
        payload: Any,
        *,
        stream: bool = False,
        headers: Mapping[str, str] | None = None,
        **settings: Any,
    ) -> WorkerAnswer | AsyncEventStream:
        """:meth:`VastClient.request`; with ``stream=True`` the awaited value is an
        :class:`AsyncEventStream` (``async for``), which starts when first iterated."""
        call = raw_call(
            self._settings, path, payload, stream=stream, headers=headers, overrides=settings
        )
        if stream:
            return AsyncEventStream(self, call)
        return (await fetch_async(self, call)).answer()

    async def embed(
        self, texts: Sequence[str], *, concurrency: int | None = None, **params: Any
    ) -> _embed.Embeddings:
        """:meth:`VastClient.embed`, with up to ``concurrency`` batches in flight (default:
        the client's ``max_concurrency``); vectors in input order."""
        return await _embed.embed_async(self, texts, params, concurrency)

    def iter_embed(
        self, texts: Iterable[str], *, concurrency: int | None = None, **params: Any
    ) -> AsyncIterator[_embed.EmbeddingBatch]:
        """Batches of vectors in input order (``async for``), with up to ``concurrency``
        batches in flight (default 4): memory stays that of ``concurrency`` batches."""
        return _embed.iter_embed_async(self, texts, params, concurrency)

    async def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        concurrency: int | None = None,
        **params: Any,
    ) -> _embed.Reranking:
        """:meth:`VastClient.rerank`, batches run concurrently."""
        return await _embed.rerank_async(
            self, query, documents, {**params, "top_n": top_n}, concurrency
        )

    async def score(
        self,
        query: str,
        documents: Sequence[str],
        *,
        concurrency: int | None = None,
        **params: Any,
    ) -> _embed.Scores:
        """:meth:`VastClient.score`, batches run concurrently."""
        return await _embed.score_async(self, query, documents, params, concurrency)


async def _close_state(state: _LoopState) -> None:
    for client in state.owned:
        await client.aclose()


class _StreamView:
    """What both stream kinds expose while and after they run."""

    _builder: AnswerBuilder

    @property
    def route(self) -> RouteInfo | None:
        """How the request was routed (None until the stream has started)."""
        return self._builder.route

    @property
    def text(self) -> str:
        """The text handed out so far."""
        return self._builder.text

    @property
    def finish_reason(self) -> str | None:
        return self._builder.finish_reason

    @property
    def usage(self) -> Usage | None:
        return self._builder.usage

    @property
    def time_to_first_token(self) -> float | None:
        return self._builder.time_to_first_token

    @property
    def model(self) -> str | None:
        """The model name, once the worker said it."""
        return self._builder.model

    @property
    def tool_calls(self) -> list[ToolCall]:
        """The tool calls so far (arguments may still be partial JSON while streaming)."""
        return self._builder.tool_calls

    @property
    def raw(self) -> Any:
        """The last decoded event as the worker sent it (None before the first)."""
        return self._builder.last_raw

    def facts(self) -> dict[str, Any]:
        """What a framework reports about the answer so far (:meth:`Completion.facts`)."""
        b = self._builder
        return answer_facts(b.finish_reason, b.model, b.usage, b.route, b.time_to_first_token)


class Stream(_StreamView, Iterator[Chunk]):
    """A streamed answer: iterate for :class:`Chunk` objects.

    The request starts on the first ``next()``. The worker connection is released when the
    stream is exhausted, closed (``close()`` or the end of a ``with`` block) or broken.
    """

    def __init__(self, client: VastClient, call: _Call) -> None:
        self._client = client
        self._call = call
        self._builder = AnswerBuilder(call.worker, client._ctx.clock(), client._ctx.clock)
        self._chunks = self._run()

    def _run(self) -> Generator[Chunk, None, None]:
        gate = self._client._gate
        gate.acquire(self._call.settings.deadline)
        try:
            yield from self._read()
        finally:
            gate.release()

    def _read(self) -> Generator[Chunk, None, None]:
        client, builder = self._client, self._builder
        builder.restart(client._ctx.clock())
        response, builder.route = client._run(client._flow(self._call))
        events = read_events(response, _reader(self._call, response, client._ctx.clock))
        try:
            _check_event_stream(response, builder.route.worker_url)
            for sse in events:
                chunk = builder.feed(sse.event, sse.data)
                if chunk is not None:
                    yield chunk
                if builder.finished:
                    break
            if builder.complete:  # read the end too: the connection then goes back to the pool
                drain(events, response)
            tail = builder.end()
            if tail is not None:
                yield tail
        except httpx.TransportError as exc:
            raise _cut(exc, builder.route.worker_url, builder.started) from exc
        except (DecodeError, StreamError, StreamTooLong) as exc:
            raise _unreadable(exc, builder.route.worker_url, stream=True) from None
        finally:
            events.close()
            response.close()

    def __next__(self) -> Chunk:
        return next(self._chunks)

    def __iter__(self) -> Stream:
        return self

    def completion(self) -> Completion:
        """Read the rest of the stream and return the whole answer."""
        for _ in self:
            pass
        return self._builder.completion()

    def close(self) -> None:
        """Stop reading and release the worker connection at once."""
        self._chunks.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncStream(_StreamView, AsyncIterator[Chunk]):
    """A streamed answer for ``async for``; ``aclose()`` (or ``async with``) releases it at once."""

    def __init__(self, client: AsyncVastClient, call: _Call) -> None:
        self._client = client
        self._call = call
        self._builder = AnswerBuilder(call.worker, client._ctx.clock(), client._ctx.clock)
        self._chunks = self._run()

    async def _run(self) -> AsyncGenerator[Chunk, None]:
        client = self._client
        state = await client._state()
        limit = client._settings.max_concurrency
        await acquire_async(state.gate, limit, self._call.settings.deadline)
        try:
            async for chunk in self._read(state):
                yield chunk
        finally:
            state.gate.release()

    async def _read(self, state: _LoopState) -> AsyncGenerator[Chunk, None]:
        client, builder = self._client, self._builder
        builder.restart(client._ctx.clock())
        response, builder.route = await client._run(client._flow(self._call), state)
        events = aread_events(response, _reader(self._call, response, client._ctx.clock))
        try:
            _check_event_stream(response, builder.route.worker_url)
            async for sse in events:
                chunk = builder.feed(sse.event, sse.data)
                if chunk is not None:
                    yield chunk
                if builder.finished:
                    break
            if builder.complete:  # read the end too: the connection then goes back to the pool
                await drain_async(events)
            tail = builder.end()
            if tail is not None:
                yield tail
        except httpx.TransportError as exc:
            raise _cut(exc, builder.route.worker_url, builder.started) from exc
        except (DecodeError, StreamError, StreamTooLong) as exc:
            raise _unreadable(exc, builder.route.worker_url, stream=True) from None
        finally:
            await events.aclose()
            await response.aclose()

    async def __anext__(self) -> Chunk:
        return await self._chunks.__anext__()

    def __aiter__(self) -> AsyncStream:
        return self

    async def completion(self) -> Completion:
        """Read the rest of the stream and return the whole answer."""
        async for _ in self:
            pass
        return self._builder.completion()

    async def aclose(self) -> None:
        """Stop reading and release the worker connection at once."""
        await self._chunks.aclose()

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
