"""Worker sessions: a conversation pinned to one worker, with no route call per request.

Vast's worker framework keeps *sessions* (docs/sessions.md): ``POST /session/create`` on a
routed worker answers a session id; a request whose wrapped body carries that id is served by
that worker with no ``/route/`` call, each one extending the session by its lifetime; the
session ends with ``/session/end`` or when the worker's sweep finds it expired, and from then
on its id answers 410. Pinning saves the route round trip on every call and keeps the
conversation on the worker that holds its prefix in cache.

The logic is written as flows, like ``_flow`` (sans-I/O generators the drivers run):

- :func:`create_flow`: route and verify as for any request (the assignment's signature is
  checked before the worker is contacted), then ``/session/create`` on that worker, retried
  on a fresh route like any worker attempt that did not start;
- :func:`call_flow`: a request in the session, sent to its worker with the session's route
  answer as ``auth_data`` (the worker checks its signature on every call). A worker that is
  gone, answers 410, or fails the request before its first byte (408, 429, 5xx) costs the
  session, not the request: a new session is made on a fresh route (a ``session`` progress
  event says so) and the request is sent there. Once the answer has started nothing is sent
  again, as everywhere;
- :func:`end_flow`: ``/session/end`` (bare body: the id and the route answer as
  ``session_auth``); never raises.

:class:`Pin` is one session's state, shared by whatever views run calls in it (a sync and an
async client for a framework model). :class:`VastSession` and :class:`AsyncVastSession` are
those views (``VastClient.session()``); :class:`SessionPair` and :class:`ModelSession` serve the
framework wrappers.

The API key never reaches a worker: session calls carry the route answer, as routed calls do,
and the management calls carry only the id and the route answer.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
import logging
import math
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import httpx

from ._apis import DEFAULT_MAX_TOKENS, WorkerCall
from ._config import Settings
from ._decode import DecodeError
from ._errors import ConfigError, VastError, WorkerError, abbreviate, excerpt
from ._flow import (
    _SAFE_TO_RETRY,
    ERROR_READ_LIMIT,
    ERROR_READ_SECONDS,
    Context,
    Flow,
    Notify,
    ReadBody,
    Send,
    Sleep,
    _annotate,
    _assign_flow,
    _certificate_error,
    _no_answer,
    _route_info,
    _RouteState,
    _transport_error,
    _Where,
    _worker_error,
    _worker_request,
    back_off,
    worker_body,
)
from ._progress import Progress, listening
from ._retry import parse_retry_after, retryable_status
from ._route import USER_AGENT, Ready
from ._tls import certificate_error
from ._types import Completion, RouteInfo
from ._wire import Fetched, Req

if TYPE_CHECKING:
    from ._client import AsyncStream, AsyncVastClient, Stream, VastClient
    from ._embed import EmbeddingBatch, Embeddings, Reranking, Scores
    from ._raw import AsyncEventStream, EventStream, WorkerAnswer
    from .integration import ClientPair

__all__ = [
    "DEFAULT_LIFETIME",
    "AsyncVastSession",
    "ModelSession",
    "Pin",
    "Pinned",
    "SessionPair",
    "VastSession",
    "call_flow",
    "create_flow",
    "end_flow",
]

logger = logging.getLogger("vast_llm")

M = TypeVar("M")
T = TypeVar("T")
Message = Mapping[str, Any]

DEFAULT_LIFETIME = 300.0
"""Seconds a session lives on the worker past its last call's start (see :class:`Pin`)."""
_READ_LIMIT = 64 << 10  # a management answer is a few dozen bytes


@dataclass(slots=True)
class Pinned:
    """One session on one worker: what its calls send, and when it may expire.

    ``expires_at`` is this client's conservative reckoning on its own clock: the worker sets the
    expiration when the create call arrives (after it was sent) and adds one lifetime when each
    call arrives, so the real expiration is never earlier than this.
    """

    session_id: str
    auth: dict[str, Any]  # the route answer the session was made with: its credential
    url: str
    route: RouteInfo  # how that assignment was obtained
    expires_at: float

    def __repr__(self) -> str:
        # The id with the route answer lets anyone end the session: neither is shown.
        return f"<Pinned session on {self.url}>"


class Pin:
    """A worker session's state, shared by the views that run calls in it (thread-safe).

    Args:
        lifetime: seconds. The worker ends the session once it has gone ``lifetime`` seconds
            past its expiration without a call starting; every call that starts adds one
            ``lifetime`` to the expiration (the worker adds, it does not restart the clock).
            A call longer than the time left is cut by the worker's sweep, so ``lifetime``
            must exceed the longest call (every call has at least one lifetime from its
            start). A session left open by a process that died holds its worker until it
            expires: up to (calls + 1) × ``lifetime`` after it was made.
        cost: the load the session reserves on its worker while it is open (the ``/route/``
            cost of its assignment).
        recreate: make a new session on a fresh route when the worker loses this one (gone,
            410, a failure before the answer starts); False raises instead.
    """

    def __init__(
        self,
        lifetime: float = DEFAULT_LIFETIME,
        cost: float = DEFAULT_MAX_TOKENS,
        recreate: bool = True,
    ) -> None:
        if isinstance(lifetime, bool) or not isinstance(lifetime, (int, float)):
            raise ConfigError(f"lifetime must be a number of seconds, got {lifetime!r}")
        if not (lifetime > 0 and math.isfinite(lifetime)):
            raise ConfigError(f"lifetime must be a finite number of seconds > 0, got {lifetime!r}")
        if isinstance(cost, bool) or not isinstance(cost, (int, float)) or not cost >= 0:
            raise ConfigError(f"cost must be a number >= 0, got {cost!r}")
        if not math.isfinite(cost):
            raise ConfigError("cost must be finite")
        self.lifetime = float(lifetime)
        self.cost = float(cost)
        self.recreate = recreate
        self.current: Pinned | None = None
        self.closed = False
        self.created = 0  # sessions made (the first and every replacement)
        self.lost = 0  # sessions the worker lost while in use
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        where = self.current.url if self.current is not None else None
        state = "ended" if self.closed else "open" if where else "not open"
        return f"<Pin {state} worker={where!r} lifetime={self.lifetime:g}>"

    def usable(self) -> Pinned | None:
        """The current session (None until one is made); raises once the session ended."""
        if self.closed:
            raise _ended()
        return self.current

    def drop(self, stale: Pinned | None) -> Pinned | None:
        """Forget ``stale``; the session to use instead if another call already made one."""
        with self._lock:
            if self.closed:
                raise _ended()
            if stale is not None and self.current is stale:
                self.current = None
            return self.current

    def install(self, made: Pinned) -> tuple[Pinned | None, Pinned | None]:
        """(the session to use, a spare to end): the first session installed wins."""
        with self._lock:
            self.created += 1
            if self.closed:
                return None, made
            if self.current is None:
                self.current = made
                return made, None
            return self.current, made

    def extend(self, pinned: Pinned) -> None:
        """A call is on its way: when it arrives the worker adds one lifetime."""
        with self._lock:
            pinned.expires_at += self.lifetime

    def close(self) -> Pinned | None:
        """Mark the session ended (calls now raise); the session to end on its worker."""
        with self._lock:
            self.closed = True
            current, self.current = self.current, None
            return current


def _ended() -> ConfigError:
    return ConfigError(
        "this worker session has ended (its with block exited, or close() was called): make "
        "calls inside the block, or open a new session"
    )


def _progress(
    s: Settings, ctx: Context, started: float, status: str, url: str, error: str | None = None
) -> Notify:
    return Notify(
        Progress(
            "session", s.endpoint, ctx.clock() - started, status=status, worker_url=url, error=error
        )
    )


def _manage_request(url: str, body: bytes, timeout: float) -> Req:
    """A session management call to a worker: JSON in and out, bounded like a route call."""
    bound = max(0.001, timeout)
    return Req(
        "POST",
        url,
        {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        },
        body,
        {"connect": bound, "read": bound, "write": bound, "pool": bound},
        worker=True,
        budget=bound,  # one bound for the whole exchange, however the worker drips it
    )


def _session_id(content: bytes) -> str | None:
    try:
        answer = json.loads(content)
    except (ValueError, RecursionError):
        return None
    session_id = answer.get("session_id") if isinstance(answer, dict) else None
    return session_id if isinstance(session_id, str) and session_id else None


def _no_sessions(url: str, body: bytes) -> WorkerError:
    quoted = excerpt(body)
    error = WorkerError(
        f"HTTP 404 from worker {abbreviate(url)}: it has no /session/create route, so it "
        "cannot keep sessions (a worker framework from before sessions, or a legacy "
        "template); call the client directly instead" + (f": {quoted}" if quoted else ""),
        status_code=404,
        body=quoted,
        worker_url=url,
    )
    error.content = body
    return error


def create_flow(
    s: Settings,
    ctx: Context,
    lifetime: float,
    cost: float,
    *,
    deadline_at: float | None = None,
    observed: bool = False,
) -> Flow[Pinned]:
    """Make a session: a verified assignment, then ``/session/create`` on its worker.

    Retried like a worker attempt that did not start (connection failures, 408, 429 — a worker
    holding its most sessions —, 5xx), each time on a fresh route, within ``max_retries`` and
    the deadline. Raises :class:`WorkerError` for a worker without session routes (404).
    """
    if s.payload_format != "wrapped":
        raise ConfigError(
            "worker sessions need the wrapped payload format (legacy flat-format "
            "workers have no session routes)"
        )
    started = ctx.clock()
    state = _RouteState(
        started=started,
        deadline_at=started + s.deadline if deadline_at is None else deadline_at,
        observed=observed,
    )
    payload = {"lifetime": lifetime}
    attempts = 0
    while True:
        ready, recipe = yield from _assign_flow(s, ctx, cost, state, attempts + 1)
        attempts += 1
        remaining = state.deadline_at - ctx.clock()
        request = _manage_request(
            ready.url + "/session/create",
            worker_body(s, ready.body, payload),
            min(s.route_timeout, remaining),
        )
        sent = ctx.clock()
        retry_after: float | None = None
        error: VastError
        where = _Where(ready.url)
        try:
            got: Fetched = yield Send(request, read_limit=_READ_LIMIT)
        except DecodeError as exc:
            error = WorkerError(
                f"{where} answered /session/create with a body that could not be read ({exc})",
                worker_url=ready.url,
            )
        except httpx.TransportError as exc:
            refused = certificate_error(exc)
            if refused is not None:
                raise _certificate_error(abbreviate(ready.url), refused) from exc
            # Even a timed-out or garbled create is safe to make again: at worst the first one
            # made a session nobody uses, which its worker ends when its lifetime runs out.
            error = _transport_error(str(where), exc)
        else:
            status = got.status_code
            if 200 <= status < 300:
                session_id = _session_id(got.content)
                if session_id is None:
                    raise WorkerError(
                        f"{where} answered /session/create with "
                        f"{excerpt(got.content, secret=s.api_key)!r}, which names no session",
                        status_code=status,
                        body=excerpt(got.content, secret=s.api_key),
                        worker_url=ready.url,
                    )
                info = _route_info(s, ready, recipe, state, attempts, ctx)
                pinned = Pinned(
                    session_id,
                    ready.body,
                    ready.url,
                    dataclasses.replace(info, session_id=session_id),
                    sent + lifetime,
                )
                if observed:
                    yield _progress(s, ctx, started, "created", ready.url)
                return pinned
            if status == 404:
                raise _no_sessions(ready.url, got.content)
            error = _worker_error(s, status, got.content, ready.url, attempts)
            if not retryable_status(status):
                raise error
            retry_after = parse_retry_after(got.headers, now=ctx.wall)
        yield from back_off(
            ctx, s, state, error, retry_after, attempts, ready.url, observed, "session create"
        )


def end_flow(s: Settings, ctx: Context, pinned: Pinned, *, observed: bool = False) -> Flow[bool]:
    """End a session on its worker (one attempt, bounded by ``route_timeout``). True if the
    worker ended it; False if it did not know it any more, or could not be told (logged: the
    worker ends it when it expires). Never raises a request failure."""
    started = ctx.clock()
    body = json.dumps({"session_id": pinned.session_id, "session_auth": pinned.auth}).encode()
    request = _manage_request(pinned.url + "/session/end", body, s.route_timeout)
    where = _Where(pinned.url)
    try:
        got: Fetched = yield Send(request, read_limit=_READ_LIMIT)
    except (httpx.TransportError, DecodeError) as exc:
        cause = _transport_error(str(where), exc) if isinstance(exc, httpx.TransportError) else exc
        logger.warning(
            "could not end the session on %s (%s); its worker ends it once it expires",
            abbreviate(pinned.url),
            cause,
        )
        return False
    if got.status_code == 200:
        if observed:
            yield _progress(s, ctx, started, "ended", pinned.url)
        return True
    if got.status_code in (400, 410):  # not found: expired and swept, or ended already
        logger.debug("session on %s was already gone", abbreviate(pinned.url))
        return False
    logger.warning(
        "could not end the session on %s (HTTP %d: %s); its worker ends it once it expires",
        abbreviate(pinned.url),
        got.status_code,
        excerpt(got.content, secret=s.api_key),
    )
    return False


def _replace(
    pin: Pin,
    s: Settings,
    ctx: Context,
    stale: Pinned | None,
    deadline_at: float,
    observed: bool,
) -> Flow[tuple[Pinned, bool]]:
    """A session to use instead of ``stale``: one another call made meanwhile, or a new one.
    Returns it and whether this flow made it."""
    current = pin.drop(stale)
    if current is not None:
        return current, False
    made = yield from create_flow(
        s, ctx, pin.lifetime, pin.cost, deadline_at=deadline_at, observed=observed
    )
    keep, spare = pin.install(made)
    if spare is not None:  # another call made one first (or the block exited meanwhile)
        yield from end_flow(s, ctx, spare)
    if keep is None:
        raise _ended()
    return keep, keep is made


def open_flow(pin: Pin, s: Settings, ctx: Context, *, observed: bool = False) -> Flow[Pinned]:
    """Make the pin's session unless it has one."""
    current = pin.usable()
    if current is not None:
        return current
    pinned, _ = yield from _replace(pin, s, ctx, None, ctx.clock() + s.deadline, observed)
    return pinned


def close_flow(pin: Pin, s: Settings, ctx: Context, *, observed: bool = False) -> Flow[bool]:
    """End the pin's session: calls raise from now on; the worker is told (never raises)."""
    pinned = pin.close()
    if pinned is None:
        return False
    ended = yield from end_flow(s, ctx, pinned, observed=observed)
    return ended


# Failures that leave no doubt the request never reached the worker.
_UNSENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def _outlived(lifetime: float) -> str:
    return (
        f"the call ran past the session's lifetime of {lifetime:g}s, and Vast's worker ends a "
        "session that long without a new call, dropping the calls in it; it was not sent "
        "again. Give the session a lifetime above your longest call (session(lifetime=...))"
    )


def call_flow(
    pin: Pin,
    s: Settings,
    ctx: Context,
    *,
    path: str,
    payload: Any,
    stream: bool,
    headers: Mapping[str, str] | None = None,
    observed: bool = False,
) -> Flow[tuple[Any, RouteInfo]]:
    """A request in the session: sent to its worker with no route call, until the worker starts
    answering. Returns the open response and the route facts, as ``request_flow`` does.

    The session is replaced on a fresh route (once its worker answered, or failed to) when:
    by this client's reckoning it has expired; its worker is gone (connection refused or
    dropped before any answer); the worker answers 410 (it does not know the session); or it
    fails the request before answering (408, 429, 5xx: that session is ended and left). The
    first 410 of a request is routine (a session expired while idle); the other replacements
    count as attempts against ``max_retries``. A read timeout is not retried (the worker may
    be working on it), nor is anything after the answer started, nor a call dropped without
    an answer after it ran a whole lifetime (the worker's sweep cuts such calls: raise the
    lifetime).
    """
    started = ctx.clock()
    deadline_at = started + s.deadline
    attempts = 0
    route_calls = 0
    route_latency = 0.0
    forgiven = False
    pinned = pin.usable()
    while True:
        if pinned is None or pinned.expires_at <= ctx.clock():
            # Not made yet, or (by our reckoning) already swept or about to be: a call now
            # would meet a 410, or be cut at the worker's next sweep.
            took = ctx.clock()
            pinned, made = yield from _replace(pin, s, ctx, pinned, deadline_at, observed)
            if made:
                route_calls += pinned.route.route_calls
                route_latency += ctx.clock() - took
        attempts += 1
        ready = Ready(pinned.auth, pinned.url, pinned.route.request_idx)
        request = _worker_request(
            s,
            ready,
            path,
            payload,
            stream,
            headers,
            deadline_at - ctx.clock(),
            session_id=pinned.session_id,
        )
        pin.extend(pinned)
        retry_after: float | None = None
        failing = False  # the worker still holds the session: end it when leaving it
        error: VastError
        sent = ctx.clock()
        where = f"session {_Where(pinned.url)}"
        try:
            response: Any = yield Send(request)
        except (*_SAFE_TO_RETRY, httpx.RemoteProtocolError) as exc:
            if isinstance(exc, httpx.RemoteProtocolError) and not _no_answer(exc):
                # The worker got the request and answered with something that is not HTTP:
                # sending it again could run it twice.
                raise WorkerError(
                    f"{where} answered with a malformed response ({exc}); it is not retried "
                    "because the worker may already have done the work",
                    worker_url=pinned.url,
                ) from exc
            refused = certificate_error(exc)
            if refused is not None:
                raise _certificate_error(abbreviate(pinned.url), refused) from exc
            error = _transport_error(where, exc)
            if not isinstance(exc, _UNSENT) and ctx.clock() - sent >= pin.lifetime:
                # Dropped without an answer after running a whole lifetime: most likely the
                # worker's sweep ended the session under it (docs/sessions.md). The same call
                # in a new session would be cut again, and the worker did the work: not sent
                # again.
                raise _annotate(error, _outlived(pin.lifetime)) from exc
            status = 0
        except httpx.TransportError as exc:
            # A read timeout: the worker may still be working on it; not sent again.
            raise _transport_error(where, exc) from exc
        else:
            status = response.status_code
            if 200 <= status < 300:
                if observed:
                    yield Notify(
                        Progress(
                            "answering",
                            s.endpoint,
                            ctx.clock() - started,
                            attempt=attempts,
                            worker_url=pinned.url,
                        )
                    )
                return response, RouteInfo(
                    endpoint=s.endpoint,
                    worker_url=pinned.url,
                    reqnum=pinned.route.reqnum,
                    request_idx=pinned.route.request_idx,
                    attempts=attempts,
                    route_calls=route_calls,
                    route_latency=route_latency,
                    signature=pinned.route.signature,
                    session_id=pinned.session_id,
                )
            try:
                content: bytes = yield ReadBody(
                    response,
                    ERROR_READ_LIMIT,
                    min(s.timeout.read or ERROR_READ_SECONDS, ERROR_READ_SECONDS),
                )
            except DecodeError as exc:
                content = f"(an error body that could not be decoded: {exc})".encode()
            except httpx.TransportError:
                content = b"(the error body did not arrive in time)"
            error = _worker_error(s, status, content, pinned.url, attempts)
            if status != 410 and not retryable_status(status):
                raise error
            failing = status != 410
            retry_after = parse_retry_after(response.headers) if failing else None
        if not pin.recreate:
            raise error
        free = status == 410 and not forgiven
        forgiven = forgiven or status == 410
        if not free and attempts > s.max_retries:
            raise _annotate(error, f"after {attempts} attempts")
        delay = s.backoff.retry_delay(attempts - 1, ctx.rng, retry_after) if failing else 0.0
        if ctx.clock() + delay >= deadline_at:
            raise _annotate(error, f"no time left before the {s.deadline:g}s deadline")
        with pin._lock:
            pin.lost += 1
        logger.info("session on %s lost (%s); making a new one", abbreviate(pinned.url), error)
        if observed:
            yield _progress(s, ctx, started, "lost", pinned.url, error.message)
        if failing:
            yield from end_flow(s, ctx, pinned)
        if delay:
            yield Sleep(delay)
        took = ctx.clock()
        pinned, made = yield from _replace(pin, s, ctx, pinned, deadline_at, observed)
        if made:
            route_calls += pinned.route.route_calls
            route_latency += ctx.clock() - took


# -- the views: a client's calls, in a session ----------------------------------------------


class _SessionView:
    """What both session kinds expose."""

    _pin: Pin

    @property
    def id(self) -> str | None:
        """The current session's id (None before it is made and after it ended). Together
        with the route answer it lets anyone end the session: keep it to yourself."""
        current = self._pin.current
        return current.session_id if current is not None else None

    @property
    def worker_url(self) -> str | None:
        """The worker the calls go to (None before the session is made and after it ended)."""
        current = self._pin.current
        return current.url if current is not None else None

    @property
    def route(self) -> RouteInfo | None:
        """How the current session's worker was assigned (None before and after)."""
        current = self._pin.current
        return current.route if current is not None else None

    @property
    def lifetime(self) -> float:
        return self._pin.lifetime

    @property
    def closed(self) -> bool:
        """True once the session has ended (calls raise :class:`ConfigError`)."""
        return self._pin.closed

    @property
    def sessions_made(self) -> int:
        """Sessions made so far: 1, plus one for each the workers lost and were replaced."""
        return self._pin.created

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._pin!r}>"


def _pinned(call: Any, pin: Pin) -> Any:
    return dataclasses.replace(call, session=pin)


_PINNED: contextvars.ContextVar[Pin | None] = contextvars.ContextVar(
    "vast_llm_pinned", default=None
)


def current_pin() -> Pin | None:
    """The session the calls being built now belong to (``_raw.raw_call`` reads it)."""
    return _PINNED.get()


@contextlib.contextmanager
def pinned(pin: Pin) -> Iterator[None]:
    """Calls built inside this block (the generic request, embeddings, rerank, score) go to
    ``pin``'s session. Set only around the session views' own calls into the client."""
    token = _PINNED.set(pin)
    try:
        yield
    finally:
        _PINNED.reset(token)


def _pinned_iter(pin: Pin, items: Iterator[T]) -> Iterator[T]:
    # A lazy iterator builds its calls when advanced: each step runs in the session.
    while True:
        with pinned(pin):
            try:
                item = next(items)
            except StopIteration:
                return
        yield item


async def _pinned_aiter(pin: Pin, items: AsyncIterator[T]) -> AsyncIterator[T]:
    while True:
        with pinned(pin):
            try:
                item = await items.__anext__()
            except StopAsyncIteration:
                return
        yield item


class VastSession(_SessionView):
    """A worker session of a :class:`~vast_llm.VastClient` (``client.session()``): the client's
    calls, each sent to one worker with no route call.

    The session is made when the ``with`` block starts (a verified assignment, then
    ``/session/create`` on its worker) and ended when it exits. Calls are those of the client,
    with the same parameters: ``generate``, ``chat``, ``stream``, ``stream_chat``, the generic
    ``request``, and ``embed``, ``iter_embed``, ``rerank``, ``score`` (for a session on an
    embedding endpoint). A worker that loses the session (gone, 410, a failure before the
    answer starts) costs only the worker's cache: a new session is made on a fresh route and
    the call is sent there (a ``session`` progress event says so). Thread-safe, like the
    client.

    Example:
        .. code-block:: python

            with client.session(lifetime=300) as session:
                first = session.chat(messages)             # no route call
                for chunk in session.stream_chat(messages + more):
                    print(chunk.text, end="")
    """

    def __init__(self, client: VastClient, pin: Pin) -> None:
        self._client = client
        self._pin = pin

    def _observed(self) -> bool:
        return listening(self._client.settings.on_progress)

    def open(self) -> VastSession:
        """Make the session now (the ``with`` block does); no-op if it exists."""
        client = self._client
        client._run(open_flow(self._pin, client.settings, client._ctx, observed=self._observed()))
        return self

    def close(self) -> None:
        """End the session on its worker (a failure is logged, never raised: the worker then
        ends it when it expires). Calls still running in it are cut by the worker."""
        client = self._client
        try:
            client._run(
                close_flow(self._pin, client.settings, client._ctx, observed=self._observed())
            )
        except ConfigError as exc:  # the client was closed first: it cannot reach the worker
            self._pin.close()
            logger.warning(
                "could not end the session (%s); its worker ends it once it expires", exc
            )

    def __enter__(self) -> VastSession:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def generate(
        self, prompt: str, *, headers: Mapping[str, str] | None = None, **params: Any
    ) -> Completion:
        """:meth:`VastClient.generate <vast_llm.VastClient.generate>`, in the session."""
        self._pin.usable()
        client = self._client
        call = client._completion(prompt, params, stream=False, headers=headers)
        return client._whole(_pinned(call, self._pin))

    def chat(
        self,
        messages: Sequence[Message],
        *,
        headers: Mapping[str, str] | None = None,
        **params: Any,
    ) -> Completion:
        """:meth:`VastClient.chat <vast_llm.VastClient.chat>`, in the session."""
        self._pin.usable()
        client = self._client
        call = client._chat(messages, params, stream=False, headers=headers)
        return client._whole(_pinned(call, self._pin))

    def stream(
        self, prompt: str, *, headers: Mapping[str, str] | None = None, **params: Any
    ) -> Stream:
        """:meth:`VastClient.stream <vast_llm.VastClient.stream>`, in the session."""
        from ._client import Stream

        self._pin.usable()
        client = self._client
        call = client._completion(prompt, params, stream=True, headers=headers)
        return Stream(client, _pinned(call, self._pin))

    def stream_chat(
        self,
        messages: Sequence[Message],
        *,
        headers: Mapping[str, str] | None = None,
        **params: Any,
    ) -> Stream:
        """:meth:`VastClient.stream_chat <vast_llm.VastClient.stream_chat>`, in the session."""
        from ._client import Stream

        self._pin.usable()
        client = self._client
        call = client._chat(messages, params, stream=True, headers=headers)
        return Stream(client, _pinned(call, self._pin))

    def request(
        self,
        path: str,
        payload: Any,
        *,
        stream: bool = False,
        headers: Mapping[str, str] | None = None,
        **settings: Any,
    ) -> WorkerAnswer | EventStream:
        """:meth:`VastClient.request <vast_llm.VastClient.request>`, in the session."""
        self._pin.usable()
        with pinned(self._pin):
            return self._client.request(  # type: ignore[call-overload,no-any-return]
                path, payload, stream=stream, headers=headers, **settings
            )

    def embed(self, texts: Sequence[str], **params: Any) -> Embeddings:
        """:meth:`VastClient.embed <vast_llm.VastClient.embed>`, in the session."""
        self._pin.usable()
        with pinned(self._pin):
            return self._client.embed(texts, **params)

    def iter_embed(self, texts: Iterable[str], **params: Any) -> Iterator[EmbeddingBatch]:
        """:meth:`VastClient.iter_embed <vast_llm.VastClient.iter_embed>`, in the session."""
        self._pin.usable()
        return _pinned_iter(self._pin, iter(self._client.iter_embed(texts, **params)))

    def rerank(
        self, query: str, documents: Sequence[str], *, top_n: int | None = None, **params: Any
    ) -> Reranking:
        """:meth:`VastClient.rerank <vast_llm.VastClient.rerank>`, in the session."""
        self._pin.usable()
        with pinned(self._pin):
            return self._client.rerank(query, documents, top_n=top_n, **params)

    def score(self, query: str, documents: Sequence[str], **params: Any) -> Scores:
        """:meth:`VastClient.score <vast_llm.VastClient.score>`, in the session."""
        self._pin.usable()
        with pinned(self._pin):
            return self._client.score(query, documents, **params)


class AsyncVastSession(_SessionView):
    """A worker session of an :class:`~vast_llm.AsyncVastClient` (``client.session()``, in an
    ``async with`` block): :class:`VastSession`'s twin, with the async client's calls."""

    def __init__(self, client: AsyncVastClient, pin: Pin) -> None:
        self._client = client
        self._pin = pin

    def _observed(self) -> bool:
        return listening(self._client.settings.on_progress)

    async def open(self) -> AsyncVastSession:
        """Make the session now (the ``async with`` block does); no-op if it exists."""
        client = self._client
        state = await client._state()
        flow = open_flow(self._pin, client.settings, client._ctx, observed=self._observed())
        await client._run(flow, state)
        return self

    async def close(self) -> None:
        """End the session on its worker (failures are logged, never raised)."""
        client = self._client
        try:
            state = await client._state()
        except ConfigError as exc:
            self._pin.close()
            logger.warning(
                "could not end the session (%s); its worker ends it once it expires", exc
            )
            return
        flow = close_flow(self._pin, client.settings, client._ctx, observed=self._observed())
        await client._run(flow, state)

    async def __aenter__(self) -> AsyncVastSession:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def generate(
        self, prompt: str, *, headers: Mapping[str, str] | None = None, **params: Any
    ) -> Completion:
        """:meth:`AsyncVastClient.generate <vast_llm.AsyncVastClient.generate>`, in the
        session."""
        self._pin.usable()
        client = self._client
        call = client._completion(prompt, params, stream=False, headers=headers)
        return await client._whole(_pinned(call, self._pin))

    async def chat(
        self,
        messages: Sequence[Message],
        *,
        headers: Mapping[str, str] | None = None,
        **params: Any,
    ) -> Completion:
        """:meth:`AsyncVastClient.chat <vast_llm.AsyncVastClient.chat>`, in the session."""
        self._pin.usable()
        client = self._client
        call = client._chat(messages, params, stream=False, headers=headers)
        return await client._whole(_pinned(call, self._pin))

    def stream(
        self, prompt: str, *, headers: Mapping[str, str] | None = None, **params: Any
    ) -> AsyncStream:
        """:meth:`AsyncVastClient.stream <vast_llm.AsyncVastClient.stream>`, in the session."""
        from ._client import AsyncStream

        self._pin.usable()
        client = self._client
        call = client._completion(prompt, params, stream=True, headers=headers)
        return AsyncStream(client, _pinned(call, self._pin))

    def stream_chat(
        self,
        messages: Sequence[Message],
        *,
        headers: Mapping[str, str] | None = None,
        **params: Any,
    ) -> AsyncStream:
        """:meth:`AsyncVastClient.stream_chat <vast_llm.AsyncVastClient.stream_chat>`, in the
        session."""
        from ._client import AsyncStream

        self._pin.usable()
        client = self._client
        call = client._chat(messages, params, stream=True, headers=headers)
        return AsyncStream(client, _pinned(call, self._pin))

    async def request(
        self,
        path: str,
        payload: Any,
        *,
        stream: bool = False,
        headers: Mapping[str, str] | None = None,
        **settings: Any,
    ) -> WorkerAnswer | AsyncEventStream:
        """:meth:`AsyncVastClient.request <vast_llm.AsyncVastClient.request>`, in the
        session."""
        self._pin.usable()
        with pinned(self._pin):
            return await self._client.request(  # type: ignore[call-overload,no-any-return]
                path, payload, stream=stream, headers=headers, **settings
            )

    async def embed(
        self, texts: Sequence[str], *, concurrency: int | None = None, **params: Any
    ) -> Embeddings:
        """:meth:`AsyncVastClient.embed <vast_llm.AsyncVastClient.embed>`, in the session."""
        self._pin.usable()
        with pinned(self._pin):
            return await self._client.embed(texts, concurrency=concurrency, **params)

    def iter_embed(
        self, texts: Iterable[str], *, concurrency: int | None = None, **params: Any
    ) -> AsyncIterator[EmbeddingBatch]:
        """:meth:`AsyncVastClient.iter_embed <vast_llm.AsyncVastClient.iter_embed>`, in the
        session."""
        self._pin.usable()
        batches = self._client.iter_embed(texts, concurrency=concurrency, **params)
        return _pinned_aiter(self._pin, batches.__aiter__())

    async def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        concurrency: int | None = None,
        **params: Any,
    ) -> Reranking:
        """:meth:`AsyncVastClient.rerank <vast_llm.AsyncVastClient.rerank>`, in the session."""
        self._pin.usable()
        with pinned(self._pin):
            return await self._client.rerank(
                query, documents, top_n=top_n, concurrency=concurrency, **params
            )

    async def score(
        self,
        query: str,
        documents: Sequence[str],
        *,
        concurrency: int | None = None,
        **params: Any,
    ) -> Scores:
        """:meth:`AsyncVastClient.score <vast_llm.AsyncVastClient.score>`, in the session."""
        self._pin.usable()
        with pinned(self._pin):
            return await self._client.score(query, documents, concurrency=concurrency, **params)


def session_flow(
    pin: Pin,
    call: WorkerCall,
    s: Settings,
    ctx: Context,
    observed: bool,
    headers: Mapping[str, str] | None = None,
) -> Any:
    """The flow of one client call made in ``pin``'s session (the clients' dispatch)."""
    return call_flow(
        pin,
        s,
        ctx,
        path=call.path,
        payload=call.payload,
        stream=call.stream,
        headers=headers,
        observed=observed,
    )


def pin_for(settings: Settings, lifetime: float, cost: float | None, recreate: bool) -> Pin:
    """A :class:`Pin` with the client's defaults: the ``cost`` setting when it is a number,
    else 256 (the default request's max tokens)."""
    if cost is None:
        cost = settings.cost if isinstance(settings.cost, (int, float)) else DEFAULT_MAX_TOKENS
    if settings.payload_format != "wrapped":
        raise ConfigError(
            "worker sessions need payload_format='wrapped' (legacy flat-format "
            "workers have no session routes)"
        )
    return Pin(lifetime, cost, recreate)


# -- framework models ---------------------------------------------------------------------------


class SessionPair:
    """One worker session seen from both clients of a :class:`~vast_llm.integration.ClientPair`:
    ``sync`` and ``async_`` run their calls in the same session, so a framework model bound to
    it pins its sync and async calls alike. Open and close it from either world."""

    def __init__(
        self,
        pair: ClientPair,
        *,
        lifetime: float = DEFAULT_LIFETIME,
        cost: float | None = None,
        recreate: bool = True,
    ) -> None:
        self._pair = pair
        self._pin = pin_for(pair.sync.settings, lifetime, cost, recreate)
        self._sync: VastSession | None = None
        self._async: AsyncVastSession | None = None

    @property
    def sync(self) -> VastSession:
        if self._sync is None:
            self._sync = VastSession(self._pair.sync, self._pin)
        return self._sync

    @property
    def async_(self) -> AsyncVastSession:
        if self._async is None:
            self._async = AsyncVastSession(self._pair.async_, self._pin)
        return self._async

    @property
    def pin(self) -> Pin:
        return self._pin

    def open(self) -> None:
        self.sync.open()

    async def aopen(self) -> None:
        await self.async_.open()

    def close(self) -> None:
        self.sync.close()

    async def aclose(self) -> None:
        await self.async_.close()

    def __repr__(self) -> str:
        return f"<SessionPair {self._pin!r}>"

    # A model bound to a session is copied with it (the copy shares the session); a pickle
    # cannot carry a live session: it comes back as None (the model then routes each call).
    def __copy__(self) -> SessionPair:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> SessionPair:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (_none, ())


def _none() -> None:
    return None


class ModelSession(Generic[M]):
    """``with model.session() as pinned:`` (or ``async with``) for a framework model: makes the
    worker session, hands out ``bind(session)`` (a copy of the model whose calls go to the
    session), and ends the session when the block exits."""

    def __init__(
        self,
        pair: ClientPair,
        bind: Callable[[SessionPair], M],
        *,
        lifetime: float = DEFAULT_LIFETIME,
        cost: float | None = None,
        recreate: bool = True,
    ) -> None:
        self.session = SessionPair(pair, lifetime=lifetime, cost=cost, recreate=recreate)
        self._bind = bind

    def __enter__(self) -> M:
        self.session.open()
        return self._bind(self.session)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.session.close()

    async def __aenter__(self) -> M:
        await self.session.aopen()
        return self._bind(self.session)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.session.aclose()
