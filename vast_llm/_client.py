"""VastClient and AsyncVastClient: thin drivers of the one request flow in ``_flow``."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

import httpx
from httpx_sse import EventSource, ServerSentEvent, SSEError

from ._answer import AnswerBuilder, whole_answer
from ._apis import ChatTemplate, WorkerCall, chat_call, completion_call
from ._config import (
    DEFAULT_DEADLINE,
    DEFAULT_MAX_RETRIES,
    DEFAULT_ROUTE_TIMEOUT,
    DEFAULT_TIMEOUT,
    Cost,
    PublicKeySource,
    Settings,
    resolve_settings,
)
from ._drive import AsyncIO, HttpxIO, as_httpx, run_async, run_sync
from ._errors import ConfigError, WorkerStreamError
from ._flow import Context, KeyStore, request_flow, route_flow
from ._gate import Gate
from ._retry import Backoff
from ._signing import RECIPES, Recipe
from ._types import Assignment, Chunk, Completion, RouteInfo, Usage

if TYPE_CHECKING:
    import aiohttp

__all__ = ["DEFAULT_LIMITS", "AsyncStream", "AsyncVastClient", "Stream", "VastClient"]

# httpcore visits every pooled connection on every request event, so idle connections cost
# throughput: at c=64, 64 kept-alive connections gave 266 req/s where 20 gave 454 (LlamaIndex
# acomplete through this client, benchmarks/). 20 is httpx's own default; 30 s keeps TLS to the
# autoscaler warm between calls.
DEFAULT_LIMITS = httpx.Limits(
    max_connections=256, max_keepalive_connections=20, keepalive_expiry=30
)

Message = Mapping[str, Any]


def _cut(exc: httpx.TransportError, url: str) -> WorkerStreamError:
    if isinstance(exc, httpx.TimeoutException):
        return WorkerStreamError(
            f"worker {url} went silent for longer than the timeout mid-answer "
            f"({type(exc).__name__}: idle timeout); raise timeout= if the model is slow",
            worker_url=url,
        )
    return WorkerStreamError(
        f"the answer from worker {url} was cut ({type(exc).__name__}: {exc or 'no detail'}); "
        "it is not retried because the worker may already have done the work",
        worker_url=url,
    )


def _aiohttp_io(session: Any) -> AsyncIO:
    try:
        from ._aiohttp import AiohttpIO
    except ImportError:
        raise ConfigError(
            "http_client must be an httpx.AsyncClient (or an aiohttp.ClientSession, with "
            f'pip install "vast-llm[aiohttp]"), got {type(session).__name__}'
        ) from None
    return AiohttpIO(session)


class _BaseClient:
    """Settings, call building and the pure parts both clients share."""

    _settings: Settings

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        api: str = "tgi",
        payload_format: str = "wrapped",
        signature_policy: str | None = None,
        public_key: PublicKeySource = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        route_timeout: float = DEFAULT_ROUTE_TIMEOUT,
        deadline: float = DEFAULT_DEADLINE,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backoff: Backoff | None = None,
        cost: Cost = None,
        chat_template: ChatTemplate | None = None,
        limits: httpx.Limits | None = None,
        max_concurrency: int | None = None,
        recipes: tuple[Recipe, ...] = RECIPES,
    ) -> None:
        self._settings = resolve_settings(
            endpoint,
            api_key=api_key,
            base_url=base_url,
            api=api,
            payload_format=payload_format,
            signature_policy=signature_policy,
            public_key=public_key,
            timeout=timeout,
            route_timeout=route_timeout,
            deadline=deadline,
            max_retries=max_retries,
            backoff=backoff,
            cost=cost,
            chat_template=chat_template,
            recipes=recipes,
        )
        self._limits = limits or DEFAULT_LIMITS
        self._gate = Gate(max_concurrency or self._limits.max_connections or 256)
        self._ctx = Context()
        self._keys = KeyStore(self._settings)

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

    def _completion(self, prompt: str, params: Mapping[str, Any], stream: bool) -> WorkerCall:
        return completion_call(self._settings.api, prompt, params, stream)

    def _chat(
        self, messages: Sequence[Message], params: Mapping[str, Any], stream: bool
    ) -> WorkerCall:
        return chat_call(self._settings.api, messages, params, stream, self._settings.chat_template)

    def _cost(self, call: WorkerCall, cost: float | None) -> float:
        if cost is not None:
            return float(cost)
        return self._settings.cost_of(call.payload, call.max_tokens)

    def _flow(self, call: WorkerCall) -> Any:
        return request_flow(
            self._settings,
            self._ctx,
            path=call.path,
            payload=call.payload,
            cost=self._cost(call, None),
            stream=call.stream,
        )


class VastClient(_BaseClient):
    """A synchronous client for one Vast.ai Serverless endpoint.

    Each call obtains a worker from the autoscaler, verifies the signed assignment before the
    worker is contacted, calls it, and retries what is safe to retry (before the first byte of
    the answer) on a fresh route.

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
        api_key: Vast.ai API key (``VAST_API_KEY``); sent to the autoscaler only, never to a worker.
        base_url: the autoscaler (``VAST_BASE_URL``, default ``https://run.vast.ai``).
        api: ``"tgi"`` (``/generate``, ``/generate_stream``) or ``"openai"``
            (``/v1/completions``, ``/v1/chat/completions``).
        payload_format: ``"wrapped"`` (current workers) or ``"flat"`` (legacy G0 workers).
        signature_policy: ``"strict"`` (default: raise), ``"warn"`` or ``"off"``
            (``VAST_SIGNATURE_POLICY``).
        public_key: pin the autoscaler's key (PEM text, bytes or a file path;
            ``VAST_PUBLIC_KEY``) instead of fetching ``/pubkey/``.
        timeout: seconds a worker may stay silent (connect: at most 10 s), or an ``httpx.Timeout``.
        route_timeout: seconds for one ``/route/`` call.
        deadline: seconds to obtain a worker that starts answering, waits and retries included.
        max_retries: retries after a failed attempt (route or worker), each on a fresh route.
        backoff: waits between attempts and re-polls (:class:`Backoff`).
        cost: the load estimate sent to ``/route/``: a number, or a callable of the request
            body; default: the request's max tokens.
        chat_template: renders chat messages into a prompt for TGI workers (default ChatML).
        recipes: the signing recipes accepted, newest first (default all: g3, g2, g1).
        limits: connection pool limits of the client's own ``httpx.Client``.
        max_concurrency: requests this client runs at once (default: the pool's
            ``max_connections``, 256); more wait their turn, and their deadline starts after.
        http_client: an ``httpx.Client`` to use instead (its proxies, hooks and transport apply;
            its auth and default headers are never sent to workers).
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        http_client: httpx.Client | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(endpoint, **kwargs)
        if http_client is not None and not isinstance(http_client, httpx.Client):
            raise ConfigError(
                f"http_client must be an httpx.Client, got {type(http_client).__name__} "
                "(async clients and aiohttp sessions go to AsyncVastClient)"
            )
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(
            limits=self._limits, timeout=self._settings.timeout
        )

    def route(self, cost: float = 256) -> Assignment:
        """One verified worker assignment, waiting (up to the deadline) for a ready worker."""
        return run_sync(route_flow(self._settings, self._ctx, float(cost)), self._http, self._keys)

    def generate(self, prompt: str, **params: Any) -> Completion:
        """Complete ``prompt``; ``params`` are sampling parameters (``max_tokens``, ``stop``...)."""
        return self._whole(self._completion(prompt, params, stream=False))

    def chat(self, messages: Sequence[Message], **params: Any) -> Completion:
        """Answer a chat (OpenAI-style messages); on TGI workers through ``chat_template``."""
        return self._whole(self._chat(messages, params, stream=False))

    def stream(self, prompt: str, **params: Any) -> Stream:
        """Stream a completion of ``prompt`` chunk by chunk (use it in a ``with`` block)."""
        return Stream(self, self._completion(prompt, params, stream=True))

    def stream_chat(self, messages: Sequence[Message], **params: Any) -> Stream:
        """Stream a chat answer chunk by chunk (use it in a ``with`` block)."""
        return Stream(self, self._chat(messages, params, stream=True))

    def _whole(self, call: WorkerCall) -> Completion:
        with self._gate:
            started = self._ctx.clock()
            response, route = run_sync(self._flow(call), self._http, self._keys)
            try:
                content = response.read()
            except httpx.TransportError as exc:
                raise _cut(exc, route.worker_url) from exc
            finally:
                response.close()
        return whole_answer(call, content, route, started, self._ctx.clock)

    def close(self) -> None:
        """Close the connection pool (only if this client created it)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> VastClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncVastClient(_BaseClient):
    """The asynchronous twin of :class:`VastClient` (same arguments, ``httpx.AsyncClient``).

    Example:
        .. code-block:: python

            from vast_llm import AsyncVastClient

            async with AsyncVastClient("my-endpoint", api="openai") as client:
                answer = await client.chat([{"role": "user", "content": "Hi"}])
                async for chunk in client.stream("Tell me a story"):
                    print(chunk.text, end="")

    ``http_client`` may also be an ``aiohttp.ClientSession`` (``pip install
    "vast-llm[aiohttp]"``): the same flow then runs on aiohttp directly, at about a third of
    httpx's client CPU per request (docs/benchmarks.md). The session stays yours to close; one
    that sends default credentials (``auth=``, an ``Authorization`` header) is refused.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        http_client: httpx.AsyncClient | aiohttp.ClientSession | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(endpoint, **kwargs)
        self._owns_http = http_client is None
        self._io: AsyncIO
        if http_client is None or isinstance(http_client, httpx.AsyncClient):
            self._http = http_client or httpx.AsyncClient(
                limits=self._limits, timeout=self._settings.timeout
            )
            self._io = HttpxIO(self._http)
        else:
            self._io = _aiohttp_io(http_client)

    async def route(self, cost: float = 256) -> Assignment:
        """One verified worker assignment, waiting (up to the deadline) for a ready worker."""
        flow = route_flow(self._settings, self._ctx, float(cost))
        return await run_async(flow, self._io, self._keys)

    async def generate(self, prompt: str, **params: Any) -> Completion:
        """Complete ``prompt``; ``params`` are sampling parameters (``max_tokens``, ``stop``...)."""
        return await self._whole(self._completion(prompt, params, stream=False))

    async def chat(self, messages: Sequence[Message], **params: Any) -> Completion:
        """Answer a chat (OpenAI-style messages); on TGI workers through ``chat_template``."""
        return await self._whole(self._chat(messages, params, stream=False))

    def stream(self, prompt: str, **params: Any) -> AsyncStream:
        """Stream a completion chunk by chunk (``async for``; ``async with`` closes it early)."""
        return AsyncStream(self, self._completion(prompt, params, stream=True))

    def stream_chat(self, messages: Sequence[Message], **params: Any) -> AsyncStream:
        """Stream a chat answer chunk by chunk."""
        return AsyncStream(self, self._chat(messages, params, stream=True))

    async def _whole(self, call: WorkerCall) -> Completion:
        async with self._gate:
            started = self._ctx.clock()
            response, route = await run_async(self._flow(call), self._io, self._keys)
            try:
                content = await response.aread()
            except httpx.TransportError as exc:
                raise _cut(exc, route.worker_url) from exc
            finally:
                await response.aclose()
        return whole_answer(call, content, route, started, self._ctx.clock)

    async def aclose(self) -> None:
        """Close the connection pool (only if this client created it)."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncVastClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


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


class Stream(_StreamView, Iterator[Chunk]):
    """A streamed answer: iterate for :class:`Chunk` objects.

    The request starts on the first ``next()``. The worker connection is released when the
    stream is exhausted, closed (``close()`` or the end of a ``with`` block) or broken.
    """

    def __init__(self, client: VastClient, call: WorkerCall) -> None:
        self._client = client
        self._call = call
        self._builder = AnswerBuilder(call, client._ctx.clock(), client._ctx.clock)
        self._chunks = self._run()

    def _run(self) -> Generator[Chunk, None, None]:
        with self._client._gate:
            yield from self._read()

    def _read(self) -> Generator[Chunk, None, None]:
        client, builder = self._client, self._builder
        builder.restart(client._ctx.clock())
        response, builder.route = run_sync(client._flow(self._call), client._http, client._keys)
        events = cast(Generator[ServerSentEvent, None, None], EventSource(response).iter_sse())
        try:
            for sse in events:
                chunk = builder.feed(sse.event, sse.data)
                if chunk is not None:
                    yield chunk
                if builder.finished:
                    break
            tail = builder.end()
            if tail is not None:
                yield tail
        except httpx.TransportError as exc:
            raise _cut(exc, builder.route.worker_url) from exc
        except SSEError as exc:
            raise WorkerStreamError(
                f"not a stream: {exc}", worker_url=builder.route.worker_url
            ) from exc
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

    def __init__(self, client: AsyncVastClient, call: WorkerCall) -> None:
        self._client = client
        self._call = call
        self._builder = AnswerBuilder(call, client._ctx.clock(), client._ctx.clock)
        self._chunks = self._run()

    async def _run(self) -> AsyncGenerator[Chunk, None]:
        async with self._client._gate:
            async for chunk in self._read():
                yield chunk

    async def _read(self) -> AsyncGenerator[Chunk, None]:
        client, builder = self._client, self._builder
        builder.restart(client._ctx.clock())
        response, builder.route = await run_async(
            client._flow(self._call), client._io, client._keys
        )
        events = EventSource(as_httpx(response)).aiter_sse()
        try:
            async for sse in events:
                chunk = builder.feed(sse.event, sse.data)
                if chunk is not None:
                    yield chunk
                if builder.finished:
                    break
            tail = builder.end()
            if tail is not None:
                yield tail
        except httpx.TransportError as exc:
            raise _cut(exc, builder.route.worker_url) from exc
        except SSEError as exc:
            raise WorkerStreamError(
                f"not a stream: {exc}", worker_url=builder.route.worker_url
            ) from exc
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
