"""Any worker route on the one request flow: a JSON (or other) answer, or a stream of events.

``VastClient.request(path, payload)`` reaches routes the client does not wrap (ComfyUI's
``/generate/sync``, an OpenAI worker's audio and image routes...) with everything a wrapped
call gets: a verified assignment, retries before the answer starts, the deadline, the key kept
from workers, the client's concurrency limit. The embeddings and rerank calls (``_embed``)
are built on the same pieces.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from ._apis import DEFAULT_MAX_TOKENS, max_tokens_of
from ._body import StreamTooLong, aread_body, aread_events, read_body, read_events
from ._config import Settings
from ._decode import DecodeError
from ._errors import ConfigError, WorkerError, excerpt
from ._failures import check_event_stream, cut, event_reader, unreadable
from ._flow import request_flow
from ._gate import acquire_async
from ._progress import listening
from ._session import Pin, call_flow, current_pin
from ._sse import Event as _SSEEvent
from ._sse import StreamError
from ._types import RouteInfo

if TYPE_CHECKING:
    from ._client import AsyncVastClient, VastClient

__all__ = [
    "AsyncEventStream",
    "Event",
    "EventStream",
    "RawCall",
    "WorkerAnswer",
    "fetch_async",
    "fetch_sync",
    "raw_call",
]


@dataclass(frozen=True, slots=True)
class WorkerAnswer:
    """A worker's whole answer to :meth:`VastClient.request`.

    Attributes:
        data: the answer parsed as JSON; None when the worker said it is not JSON (an audio
            or image body: read ``content``).
        content: the body as received.
        status_code: the worker's status (2xx: anything else raised a ``WorkerError``).
        headers: the worker's response headers.
        route: how the request was routed (worker, reqnum, signature, attempts...).
        latency: seconds from the start of the call to the end of the answer.
    """

    data: Any
    content: bytes = field(repr=False)
    status_code: int
    headers: Mapping[str, str] = field(repr=False)
    route: RouteInfo
    latency: float

    def json(self) -> Any:
        """The answer as JSON (``data``); a ``WorkerError`` if the body is not JSON."""
        if self.data is None:
            return _parse_json(self.content, self.route.worker_url)
        return self.data


@dataclass(frozen=True, slots=True)
class Event:
    """One server-sent event, as the worker sent it (nothing is interpreted)."""

    data: str
    event: str = "message"
    id: str = ""
    retry: int | None = None

    def json(self) -> Any:
        """``data`` parsed as JSON (``ValueError`` if it is not, e.g. OpenAI's ``[DONE]``)."""
        return json.loads(self.data)


@dataclass(frozen=True, slots=True)
class RawCall:
    """One call to a worker route: what to send, under which settings, at which cost."""

    path: str
    payload: Any
    stream: bool
    headers: Mapping[str, str] | None
    settings: Settings
    cost: float
    session: Pin | None = None  # a worker session's call: sent there, no route (_session)


def _check_path(path: Any) -> str:
    # The worker's address is verified; the path is appended to it. "//host" or "@host" would
    # send the request (and the signed assignment) somewhere else.
    if not isinstance(path, str) or not path.startswith("/") or path.startswith("//"):
        raise ConfigError(
            f"path must be a route on the worker such as '/v1/embeddings', got {path!r}"
        )
    if any(c in path for c in "@\\#") or any(ord(c) < 0x21 for c in path):
        raise ConfigError(
            f"path {path!r} has a character a route does not: '@', '\\', '#' or space"
        )
    return path


def default_cost(path: str, payload: Any) -> float:
    """The load estimate for ``/route/`` when the ``cost`` setting says nothing: what Vast's
    OpenAI worker counts for the embeddings, rerank and score routes (``_embed``), else the
    request's max tokens, else 256."""
    from ._embed import route_workload  # the pure cost model of the pooling routes

    known = route_workload(path, payload)
    if known is not None:
        return known
    tokens = max_tokens_of(payload) if isinstance(payload, Mapping) else None
    return float(tokens if tokens is not None else DEFAULT_MAX_TOKENS)


def raw_call(
    settings: Settings,
    path: str,
    payload: Any,
    *,
    stream: bool = False,
    headers: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> RawCall:
    """Check and resolve one call (path, per-call settings, cost)."""
    _check_path(path)
    s = settings.for_call({k: v for k, v in (overrides or {}).items() if v is not None})
    given = s.cost
    if given is None:
        cost = default_cost(path, payload)
    else:
        value = given(payload if isinstance(payload, Mapping) else {}) if callable(given) else given
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ConfigError(f"cost must be a number >= 0, got {value!r}")
        if math.isinf(value):
            raise ConfigError("cost must be finite")
        cost = float(value)
    return RawCall(path, payload, stream, headers, s, cost, current_pin())


def _flow(client: VastClient | AsyncVastClient, call: RawCall) -> Any:
    if call.session is not None:  # made inside a session view's call (vast_llm._session)
        return call_flow(
            call.session,
            call.settings,
            client._ctx,
            path=call.path,
            payload=call.payload,
            stream=call.stream,
            headers=call.headers,
            observed=listening(call.settings.on_progress),
        )
    return request_flow(
        call.settings,
        client._ctx,
        path=call.path,
        payload=call.payload,
        cost=call.cost,
        stream=call.stream,
        headers=call.headers,
        observed=listening(call.settings.on_progress),
    )


def _max_events(call: RawCall) -> int:
    # A route with a token budget streams about one event per token; one without (image
    # progress, audio) is bounded by the size cap only.
    tokens = max_tokens_of(call.payload) if isinstance(call.payload, Mapping) else None
    return sys.maxsize if tokens is None else 4 * tokens + 64


def _parse_json(content: bytes, url: str) -> Any:
    try:
        return json.loads(content)
    except (ValueError, RecursionError):
        raise WorkerError(
            f"worker {url} answered with something that is not JSON: {excerpt(content)!r}",
            status_code=200,
            body=excerpt(content),
            worker_url=url,
        ) from None


def _is_json(headers: Mapping[str, str], content: bytes) -> bool:
    kind = headers.get("content-type", "").lower()
    if "json" in kind:
        return True
    return not kind and content.lstrip()[:1] in (b"{", b"[")


@dataclass(frozen=True, slots=True)
class Fetched:
    """A worker's whole answer, unparsed (the embeddings parse their own)."""

    content: bytes
    status_code: int
    headers: Mapping[str, str]
    route: RouteInfo
    latency: float

    def answer(self) -> WorkerAnswer:
        data = (
            _parse_json(self.content, self.route.worker_url)
            if _is_json(self.headers, self.content)
            else None
        )
        return WorkerAnswer(
            data, self.content, self.status_code, self.headers, self.route, self.latency
        )


def fetch_sync(client: VastClient, call: RawCall) -> Fetched:
    """Route, verify, call and read the whole answer (within the client's concurrency gate)."""
    clock = client._ctx.clock
    client._gate.acquire(call.settings.deadline)
    try:
        started = clock()
        response, route = client._run(_flow(client, call))
        s = call.settings
        try:
            content = read_body(response, s.max_answer_bytes, s.timeout.read or float("inf"))
        except httpx.TransportError as exc:
            raise cut(exc, route.worker_url, started=False) from exc
        except DecodeError as exc:
            raise unreadable(exc, route.worker_url, stream=False) from None
    finally:
        client._gate.release()
    return Fetched(content, response.status_code, response.headers, route, clock() - started)


async def fetch_async(client: AsyncVastClient, call: RawCall) -> Fetched:
    """The async twin of :func:`fetch_sync`."""
    clock = client._ctx.clock
    state = await client._state()
    await acquire_async(state.gate, client._settings.max_concurrency, call.settings.deadline)
    try:
        started = clock()
        response, route = await client._run(_flow(client, call), state)
        s = call.settings
        try:
            content = await aread_body(response, s.max_answer_bytes, s.timeout.read or float("inf"))
        except httpx.TransportError as exc:
            raise cut(exc, route.worker_url, started=False) from exc
        except DecodeError as exc:
            raise unreadable(exc, route.worker_url, stream=False) from None
    finally:
        state.gate.release()
    return Fetched(content, response.status_code, response.headers, route, clock() - started)


def _event(sse: _SSEEvent) -> Event:
    return Event(sse.data, sse.event, sse.id, sse.retry)


class _Streaming:
    _route: RouteInfo | None = None

    @property
    def route(self) -> RouteInfo | None:
        """How the request was routed (None until the stream has started)."""
        return self._route


class EventStream(_Streaming, Iterator[Event]):
    """A worker's answer as server-sent events, for ``for`` (use it in a ``with`` block).

    The request starts on the first ``next()``; the events are handed out as they arrive,
    without interpretation (an OpenAI stream's ``[DONE]`` included). A connection cut after
    the answer started is a ``WorkerStreamError`` (never retried).
    """

    def __init__(self, client: VastClient, call: RawCall) -> None:
        self._client = client
        self._call = call
        self._events = self._run()

    def _run(self) -> Generator[Event, None, None]:
        client = self._client
        client._gate.acquire(self._call.settings.deadline)
        try:
            response, self._route = client._run(_flow(client, self._call))
            url = self._route.worker_url
            reader = event_reader(
                self._call.settings, response, _max_events(self._call), client._ctx.clock
            )
            events = read_events(response, reader)
            handed_out = False
            try:
                check_event_stream(response, url)
                for sse in events:
                    handed_out = True
                    yield _event(sse)
            except httpx.TransportError as exc:
                raise cut(exc, url, handed_out) from exc
            except (DecodeError, StreamError, StreamTooLong) as exc:
                raise unreadable(exc, url, stream=True) from None
            finally:
                events.close()
                response.close()
        finally:
            client._gate.release()

    def __next__(self) -> Event:
        return next(self._events)

    def __iter__(self) -> EventStream:
        return self

    def close(self) -> None:
        """Stop reading and release the worker connection at once."""
        self._events.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncEventStream(_Streaming, AsyncIterator[Event]):
    """The async twin of :class:`EventStream` (``async for``; ``async with`` closes it)."""

    def __init__(self, client: AsyncVastClient, call: RawCall) -> None:
        self._client = client
        self._call = call
        self._events = self._run()

    async def _run(self) -> AsyncGenerator[Event, None]:
        client = self._client
        state = await client._state()
        await acquire_async(
            state.gate, client._settings.max_concurrency, self._call.settings.deadline
        )
        try:
            response, self._route = await client._run(_flow(client, self._call), state)
            url = self._route.worker_url
            reader = event_reader(
                self._call.settings, response, _max_events(self._call), client._ctx.clock
            )
            events = aread_events(response, reader)
            handed_out = False
            try:
                check_event_stream(response, url)
                async for sse in events:
                    handed_out = True
                    yield _event(sse)
            except httpx.TransportError as exc:
                raise cut(exc, url, handed_out) from exc
            except (DecodeError, StreamError, StreamTooLong) as exc:
                raise unreadable(exc, url, stream=True) from None
            finally:
                await events.aclose()
                await response.aclose()
        finally:
            state.gate.release()

    async def __anext__(self) -> Event:
        return await self._events.__anext__()

    def __aiter__(self) -> AsyncEventStream:
        return self

    async def aclose(self) -> None:
        """Stop reading and release the worker connection at once."""
        await self._events.aclose()

    async def __aenter__(self) -> AsyncEventStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
