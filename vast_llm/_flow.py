"""One routed request, written once: route → wait → verify → call the worker → retry.

The logic is a sans-I/O generator, the way httpx writes its auth flows: it *yields* what it
needs done (:class:`Send` a :class:`Req`, :class:`ReadBody` of a response, :class:`Sleep`,
:class:`GetKey`) and receives the result, or has the failure thrown into it (transport failures
in httpx's exception vocabulary, whichever HTTP stack raised them). The drivers in ``_drive``
(httpx, sync and async) and ``_aiohttp`` carry the actions out; none makes a decision of its own.

Rules the flow keeps (docs/protocol.md §3–§5):

- the route answer is verified before any worker is contacted; a failed check is never retried;
- every worker attempt gets a fresh route (a route answer is never used twice), with the
  same ``request_idx`` so the request keeps its place;
- connection failures, 408, 429 and 5xx are retried with backoff, within ``max_retries`` and
  the deadline; other 4xx fail at once, quoting the body;
- once the worker's answer has started (status 2xx) the flow is over: nothing after that is
  ever retried, so nothing reaches a worker twice after its first byte;
- the API key goes to the router only, never to a worker.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from ._config import Settings
from ._decode import DecodeError, accept_encoding
from ._errors import (
    EndpointStopped,
    NoWorkerReady,
    RouteError,
    SignatureError,
    VastConnectionError,
    VastError,
    VastTimeout,
    WorkerCertificateError,
    WorkerError,
    abbreviate,
    excerpt,
)
from ._progress import Progress
from ._retry import parse_retry_after, retryable_status
from ._route import USER_AGENT, Ready, Rejected, Waiting, build_route_request, parse_route_answer
from ._signing import Memo, load_public_key, verify
from ._tls import certificate_error
from ._types import Assignment, RouteInfo
from ._wire import Fetched, Opened, Req

__all__ = [
    "Context",
    "Fetched",
    "GetKey",
    "Notify",
    "Opened",
    "ReadBody",
    "Req",
    "Send",
    "Sleep",
    "fetch_key_flow",
    "request_flow",
    "route_flow",
]

logger = logging.getLogger("vast_llm")
# What the client can decode under its size limits (see _decode); sent to workers.
ACCEPT_ENCODING = accept_encoding()

T = TypeVar("T")

ROUTE_READ_LIMIT = 1 << 20  # a route answer is a few hundred bytes; refuse to buffer more
ERROR_READ_LIMIT = 64 << 10  # enough of an error body to quote
ERROR_READ_SECONDS = 10.0  # an error body comes at once; a slower one is cut, not waited for


# -- actions: what the flow asks its driver to do -------------------------------------------


@dataclass(slots=True)
class Send:
    """Send a request. With ``read_limit`` the driver reads the body and answers a
    :class:`Fetched`; without, it answers the open response (headers only)."""

    request: Req
    read_limit: int | None = None


@dataclass(slots=True)
class ReadBody:
    """Read up to ``limit`` decoded bytes of an open response within ``seconds``, then close it;
    answers ``bytes`` (what came, cut at the limit)."""

    response: Any  # what this driver's Send answered
    limit: int = ERROR_READ_LIMIT
    seconds: float = 10.0


@dataclass(slots=True)
class Sleep:
    """Wait; answers None."""

    seconds: float


@dataclass(slots=True)
class GetKey:
    """The autoscaler's public key; with ``stale``, replace that key by a fresh fetch."""

    stale: rsa.RSAPublicKey | None = None


@dataclass(slots=True)
class Notify:
    """Tell the listeners how the request is going (yielded only when someone listens);
    answers None."""

    event: Progress


Action = Send | ReadBody | Sleep | GetKey | Notify
Flow = Generator[Action, Any, T]


class Context:
    """Per-client state the flow needs: its clocks, its jitter source, warn-once memory.

    Every source of time and randomness the flow uses comes from here, so a test can drive it
    with fakes: ``clock`` (monotonic seconds: deadlines, elapsed times), ``wall`` (epoch
    seconds: HTTP dates in ``Retry-After``) and ``rng`` (backoff jitter).
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self.wall = wall
        self.rng = rng or random.Random()
        self.memo = Memo()  # signature checks already made (see _signing.verify)
        self._warned = False

    def warn_once(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            logger.warning(message)


# -- the public key -------------------------------------------------------------------------


def fetch_key_flow(s: Settings, ctx: Context) -> Flow[rsa.RSAPublicKey]:
    """Fetch the autoscaler's public key from ``/pubkey/`` (three tries)."""
    url = s.base_url + "/pubkey/"
    hint = (
        " Pin the key with public_key= (or VAST_PUBLIC_KEY), or see signature_policy "
        "('strict' | 'warn' | 'off')."
    )
    tries = 3
    for attempt in range(tries):
        request = Req(
            "GET",
            url,
            {"Accept": "text/plain, */*", "User-Agent": USER_AGENT},
            b"",
            httpx.Timeout(s.route_timeout).as_dict(),
            budget=s.route_timeout,
        )
        try:
            got: Fetched = yield Send(request, read_limit=64 << 10)
        except DecodeError as exc:
            if attempt + 1 < tries:
                yield Sleep(s.backoff.retry_delay(attempt, ctx.rng))
                continue
            raise SignatureError(
                f"{url} answered with a body that could not be read ({exc}), so no worker "
                "assignment can be verified." + hint
            ) from None
        except httpx.TransportError as exc:
            if attempt + 1 < tries:
                yield Sleep(s.backoff.retry_delay(attempt, ctx.rng))
                continue
            raise _transport_error(f"the autoscaler's public key at {url}", exc) from exc
        if got.status_code == 200:
            try:
                return load_public_key(got.content.strip())
            except VastError as exc:
                raise SignatureError(
                    f"{url} did not serve a usable public key ({exc.message}; got "
                    f"{excerpt(got.content, secret=s.api_key)!r}), "
                    "so no worker assignment can be verified." + hint
                ) from None
        if retryable_status(got.status_code) and attempt + 1 < tries:
            yield Sleep(s.backoff.retry_delay(attempt, ctx.rng))
            continue
        raise SignatureError(
            f"could not fetch the autoscaler's public key: HTTP {got.status_code} from {url} "
            f"({excerpt(got.content)!r}), so no worker assignment can be verified." + hint
        )
    raise AssertionError("unreachable")  # pragma: no cover


# -- the flow -------------------------------------------------------------------------------


def _transport_error(what: str, exc: httpx.TransportError) -> VastConnectionError:
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return VastTimeout(f"{what} did not answer in time ({type(exc).__name__}: {detail})")
    return VastConnectionError(f"cannot reach {what} ({type(exc).__name__}: {detail})")


@dataclass
class _RouteState:
    started: float
    deadline_at: float
    observed: bool = False  # someone listens: yield Notify events
    request_idx: int | None = None
    route_calls: int = 0
    last_status: Any = None
    seen: list[str] = field(default_factory=list)  # distinct statuses, oldest first (a few)

    def saw(self, status: Any) -> None:
        text = excerpt(str(status), limit=80)
        if text not in self.seen:
            self.seen = [*self.seen, text][-_SEEN_MAX:]

    def progress(self, ctx: Context, s: Settings, kind: str, **fields: Any) -> Notify:
        return Notify(Progress(kind, s.endpoint, ctx.clock() - self.started, **fields))  # type: ignore[arg-type]


_SEEN_MAX = 5


def _signature_flow(s: Settings, ctx: Context, body: Mapping[str, Any]) -> Flow[str]:
    if s.signature_policy == "off":
        return "unchecked"
    try:
        key: rsa.RSAPublicKey = yield GetKey()
        recipe = verify(key, body, s.recipes, ctx.memo)
        if recipe is None and not s.public_key:
            # Maybe the autoscaler rotated its key: fetch it once more before giving up.
            key = yield GetKey(stale=key)
            recipe = verify(key, body, s.recipes, ctx.memo)
    except (SignatureError, VastConnectionError) as exc:
        if s.signature_policy == "strict":
            raise
        problem = str(exc)
    else:
        if recipe is not None:
            return recipe
        missing = not body.get("signature")
        problem = (
            f"the route answer for worker {abbreviate(str(body.get('url')))!r} "
            + ("carries no signature" if missing else "has a signature that does not verify")
            + f" under the autoscaler's key (recipes tried: {', '.join(s.recipes)})"
        )
        if s.signature_policy == "strict":
            raise SignatureError(
                problem + "; the worker was not contacted. If every assignment fails like this, "
                "the autoscaler may have changed how it signs (a 2026 report against the "
                "official tools, vast-cli issue 493, says production signatures matched no "
                "known recipe for a while): signature_policy='warn' (or "
                "VAST_SIGNATURE_POLICY=warn) then goes on with a logged warning, at the cost of "
                "trusting the worker address the route answer names. See the README's "
                "troubleshooting section."
            )
    ctx.warn_once(f"{problem}; going on because signature_policy='warn'")
    return "unverified"


def _assign_flow(
    s: Settings, ctx: Context, cost: float, state: _RouteState, attempt: int = 1
) -> Flow[tuple[Ready, str]]:
    polls = 0
    failures = 0
    last_error: VastError | None = None
    while True:
        remaining = state.deadline_at - ctx.clock()
        if remaining <= 0:
            if last_error is not None:
                raise _annotate(last_error, f"gave up at the {s.deadline:g}s deadline")
            seen = "; ".join(state.seen) or "none given"
            raise NoWorkerReady(
                f"no worker of endpoint {s.endpoint!r} became ready within the {s.deadline:g}s "
                f"deadline (statuses seen: {seen}). A cold start can take minutes: raise "
                "deadline=, or check the endpoint's workers in the Vast.ai console",
                status=state.last_status,
            )
        request = build_route_request(
            s.base_url,
            s.endpoint,
            s.api_key,
            cost,
            state.request_idx,
            min(s.route_timeout, remaining),
        )
        state.route_calls += 1
        outcome: Ready | Waiting | Rejected
        try:
            got: Fetched = yield Send(request, read_limit=ROUTE_READ_LIMIT)
        except DecodeError as exc:
            outcome = Rejected(
                RouteError(
                    f"the autoscaler at {s.base_url} sent an answer that could not be read ({exc})"
                ),
                retryable=True,
            )
        except httpx.TransportError as exc:
            if isinstance(exc, httpx.TimeoutException) and remaining < s.route_timeout:
                # The call ran out of the deadline, not of its own time: the deadline
                # (with the last status or error seen) is the story to tell.
                continue
            outcome = Rejected(_route_transport_error(s, exc), retryable=True)
        else:
            outcome = parse_route_answer(
                got.status_code,
                got.headers,
                got.content,
                endpoint=s.endpoint,
                base_url=s.base_url,
                api_key=s.api_key,
                now=ctx.wall,
            )
        if isinstance(outcome, Ready):
            if outcome.request_idx is not None:
                state.request_idx = outcome.request_idx
            if state.observed:
                yield state.progress(ctx, s, "routed", worker_url=outcome.url, attempt=attempt)
            recipe = yield from _signature_flow(s, ctx, outcome.body)
            if state.observed:
                yield state.progress(
                    ctx, s, "verified", worker_url=outcome.url, signature=recipe, attempt=attempt
                )
            return outcome, recipe
        if isinstance(outcome, Waiting):
            failures, last_error = 0, None
            if outcome.request_idx is not None:
                state.request_idx = outcome.request_idx
            status = _mask(outcome.status, s.api_key)  # a router's text may echo the request
            state.last_status = status
            state.saw(status)
            if outcome.stopped:
                raise EndpointStopped(
                    f"endpoint {s.endpoint!r} is stopped (router status: "
                    f"{excerpt(str(status))!r}): it manages no workers until it is "
                    "started again in the Vast.ai console",
                    status=status,
                )
            delay = s.backoff.poll_delay(polls, ctx.rng)
            polls += 1
            logger.debug(
                "waiting for a worker of %r: %s (re-poll in %.1fs)",
                s.endpoint,
                excerpt(str(status)),
                delay,
            )
            if state.observed:
                yield state.progress(
                    ctx, s, "waiting", status=status, retry_in=delay, attempt=attempt
                )
        else:
            if not outcome.retryable:
                raise outcome.error
            failures += 1
            last_error = outcome.error
            if failures > s.max_retries:
                raise _annotate(outcome.error, f"after {failures} attempts")
            delay = s.backoff.retry_delay(failures - 1, ctx.rng, outcome.retry_after)
            logger.info("route call failed (%s); retrying in %.2fs", outcome.error, delay)
            if state.observed:
                yield state.progress(
                    ctx,
                    s,
                    "retrying",
                    error=outcome.error.message,
                    retry_in=delay,
                    attempt=attempt,
                )
        yield Sleep(max(0.0, min(delay, state.deadline_at - ctx.clock())))


def _mask(value: Any, secret: str) -> Any:
    """``value`` (a router's status: text, or JSON data) with ``secret`` masked out."""
    if isinstance(value, str):
        return value.replace(secret, "***") if secret in value else value
    if isinstance(value, dict):
        return {_mask(k, secret): _mask(v, secret) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, secret) for v in value]
    return value


def _route_transport_error(s: Settings, exc: httpx.TransportError) -> RouteError:
    cause = _transport_error(f"the autoscaler at {s.base_url}", exc)
    error = RouteError(cause.message)
    error.__cause__ = cause
    return error


def _annotate(error: VastError, note: str) -> VastError:
    error.message = f"{error.message} ({note})"
    error.args = (error.message,)
    return error


def route_flow(
    s: Settings, ctx: Context, cost: float, *, observed: bool = False
) -> Flow[Assignment]:
    """Obtain one verified assignment (waiting while no worker is ready)."""
    started = ctx.clock()
    state = _RouteState(started=started, deadline_at=started + s.deadline, observed=observed)
    ready, recipe = yield from _assign_flow(s, ctx, cost, state)
    return Assignment(body=ready.body, route=_route_info(s, ready, recipe, state, 0, ctx))


def _route_info(
    s: Settings, ready: Ready, recipe: str, state: _RouteState, attempts: int, ctx: Context
) -> RouteInfo:
    reqnum = ready.body.get("reqnum")
    return RouteInfo(
        endpoint=s.endpoint,
        worker_url=ready.url,
        reqnum=reqnum if isinstance(reqnum, int) else None,
        request_idx=state.request_idx,
        attempts=attempts,
        route_calls=state.route_calls,
        route_latency=ctx.clock() - state.started,
        signature=recipe,
    )


def worker_body(
    s: Settings, route_body: Mapping[str, Any], payload: Any, session_id: str | None = None
) -> bytes:
    """The worker request body: the signed assignment forwarded verbatim, plus the payload
    (and the worker session it belongs to, if any: ``vast_llm._session``)."""
    if s.payload_format == "flat":
        if not isinstance(payload, Mapping):
            raise TypeError("the flat (legacy) format needs a JSON object payload")
        return json.dumps({**route_body, **payload}).encode()
    body = {"auth_data": route_body, "session_id": session_id, "payload": payload}
    return json.dumps(body).encode()


def _worker_request(
    s: Settings,
    ready: Ready,
    path: str,
    payload: Any,
    stream: bool,
    headers: Mapping[str, str] | None,
    remaining: float,
    session_id: str | None = None,
) -> Req:
    request_headers = {
        "Content-Type": "application/json",
        "Accept": "text/event-stream" if stream else "application/json",
        "Accept-Encoding": ACCEPT_ENCODING,
        "User-Agent": USER_AGENT,
    }
    for name, value in (headers or {}).items():
        if worker_header_allowed(name):
            request_headers[name] = value
    timeout = s.timeout.as_dict()
    # Connecting and the wait for the answer's first byte count against the deadline (the
    # driver sets "read" back to the idle timeout once the answer has started).
    idle = timeout.get("read")
    for phase in ("connect", "pool", "read"):
        limit = timeout.get(phase)
        timeout[phase] = max(0.001, remaining if limit is None else min(limit, remaining))
    return Req(
        "POST",
        ready.url + path,
        request_headers,
        worker_body(s, ready.body, payload, session_id),
        timeout,
        worker=True,
        read_after_start=idle,
        budget=max(0.001, remaining),  # until the answer starts: the deadline's rest
    )


# Failures where the request cannot have started work on the worker: safe to send again.
_SAFE_TO_RETRY = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.WriteError,
    httpx.WriteTimeout,
    httpx.ReadError,
)
# httpcore's words when a server closes the connection without a single byte of an answer
# (the aiohttp driver says the same): the request did not run, so it may be sent again. Any
# other protocol error means the worker answered something malformed: it got the request.
NO_ANSWER = "without sending a response"


def _no_answer(exc: httpx.RemoteProtocolError) -> bool:
    return NO_ANSWER in str(exc)


# Headers a worker may receive. What an SDK sends through VastTransport passes only if it is on
# the allow-list (what describes the request and the client); headers a user names for workers
# (per call, or a model's default_headers) pass unless they are connection-level or name a
# credential. Nothing that can carry a credential ever reaches a rented machine.
_WORKER_HEADERS = frozenset({"accept", "content-type", "user-agent", "accept-language"})
_WORKER_HEADER_PREFIXES = ("x-vast-", "x-request-id", "openai-beta", "x-stainless-")
_CREDENTIAL_WORDS = (
    "auth",
    "cookie",
    "key",
    "token",
    "secret",
    "password",
    "session",
    "signature",
    "organization",
)
_HOP_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "accept-encoding",
        "te",
        "upgrade",
        "keep-alive",
        "proxy-connection",
    }
)


def worker_header_allowed(name: str, *, named_by_user: bool = True) -> bool:
    """True for a header a worker may see (see above)."""
    lowered = name.lower()
    if any(word in lowered for word in _CREDENTIAL_WORDS) or lowered in _HOP_HEADERS:
        return False
    listed = lowered in _WORKER_HEADERS or lowered.startswith(_WORKER_HEADER_PREFIXES)
    return named_by_user or listed


class _Where:
    """'worker <url>' for a message, the URL shortened only when a message needs it."""

    __slots__ = ("url",)

    def __init__(self, url: str) -> None:
        self.url = url

    def __str__(self) -> str:
        return f"worker {abbreviate(self.url)}"

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def _certificate_error(url: str, cause: Any) -> WorkerCertificateError:
    detail = getattr(cause, "verify_message", None) or str(cause)
    return WorkerCertificateError(
        f"worker {url} presented a TLS certificate that does not verify against the worker CA "
        f"({detail}); no request was sent to it. Vast's workers use Vast's own root, which "
        "vast-llm bundles; for a private deployment or the emulator, pass worker_ca= (or set "
        "VAST_WORKER_CA). With your own http_client, give it verify=vast_llm.ssl_context().",
        worker_url=url,
    )


def _worker_error(
    s: Settings, status_code: int, body: bytes, url: str, attempts: int
) -> WorkerError:
    quoted = excerpt(body, secret=s.api_key)
    hints = {
        401: "the worker refused the assignment's signature (or a replayed one)",
        404: "the worker has no such route: check api= ('tgi' or 'openai') for this template",
        410: "the worker does not know the session",
        413: "the request is too large for the worker",
        422: "the worker could not read the request (see body)",
        429: "the worker is overloaded",
    }
    hint = hints.get(status_code, "the worker failed" if status_code >= 500 else "refused")
    error = WorkerError(
        f"HTTP {status_code} from worker {abbreviate(url)}: {hint}"
        + (f": {quoted}" if quoted else ""),
        status_code=status_code,
        body=quoted,
        worker_url=url,
    )
    # The unabridged body, for VastTransport to hand back to an SDK as the response.
    error.content = body
    return error


def request_flow(
    s: Settings,
    ctx: Context,
    *,
    path: str,
    payload: Any,
    cost: float,
    stream: bool,
    headers: Mapping[str, str] | None = None,
    observed: bool = False,
) -> Flow[tuple[Any, RouteInfo]]:
    """Route, verify and call the worker until it starts answering (2xx); retry before that.

    Returns the open worker response, as the driver's HTTP stack made it (the caller reads and
    closes it), and the route facts. With ``observed``, yields :class:`Notify` events.
    """
    started = ctx.clock()
    state = _RouteState(started=started, deadline_at=started + s.deadline, observed=observed)
    attempts = 0
    while True:
        ready, recipe = yield from _assign_flow(s, ctx, cost, state, attempts + 1)
        attempts += 1
        info = _route_info(s, ready, recipe, state, attempts, ctx)
        request = _worker_request(
            s, ready, path, payload, stream, headers, state.deadline_at - ctx.clock()
        )
        retry_after: float | None = None
        error: VastError
        where = _Where(ready.url)
        try:
            response: Opened = yield Send(request)
        except _SAFE_TO_RETRY as exc:
            refused = certificate_error(exc)
            if refused is not None:
                # Not retried: the handshake failed before any byte of the request was sent,
                # and a certificate outside the worker CA is a setting to fix or an attack.
                raise _certificate_error(abbreviate(ready.url), refused) from exc
            error = _transport_error(str(where), exc)
        except httpx.RemoteProtocolError as exc:
            if not _no_answer(exc):
                # The worker got the request and answered with something that is not HTTP:
                # sending it again could run it twice.
                raise WorkerError(
                    f"{where} answered with a malformed response ({exc}); it is not retried "
                    "because the worker may already have done the work",
                    worker_url=ready.url,
                ) from exc
            error = _transport_error(str(where), exc)
        except httpx.TransportError as exc:
            # A read timeout: the worker may still be working on it. Sending it again could
            # run it twice, so this one is not retried.
            raise _transport_error(str(where), exc) from exc
        else:
            if 200 <= response.status_code < 300:
                if state.observed:
                    yield state.progress(
                        ctx, s, "answering", worker_url=ready.url, attempt=attempts
                    )
                return response, info
            try:
                body: bytes = yield ReadBody(
                    response,
                    ERROR_READ_LIMIT,
                    min(s.timeout.read or ERROR_READ_SECONDS, ERROR_READ_SECONDS),
                )
            except DecodeError as exc:
                body = f"(an error body that could not be decoded: {exc})".encode()
            except httpx.TransportError:
                body = b"(the error body did not arrive in time)"
            error = _worker_error(s, response.status_code, body, ready.url, attempts)
            if not retryable_status(response.status_code):
                raise error
            retry_after = parse_retry_after(response.headers, now=ctx.wall)
        yield from back_off(
            ctx,
            s,
            state,
            error,
            retry_after,
            attempts,
            ready.url,
            state.observed,
            f"worker attempt {attempts}",
        )


def back_off(
    ctx: Context,
    s: Settings,
    state: _RouteState,
    error: VastError,
    retry_after: float | None,
    attempts: int,
    url: str,
    observed: bool,
    what: str,
) -> Flow[None]:
    """After a failed attempt at ``url`` that may be tried again on a fresh route: give up past
    ``max_retries`` or when the backoff would pass the deadline, else say so and wait."""
    if attempts > s.max_retries:
        raise _annotate(error, f"after {attempts} attempts")
    delay = s.backoff.retry_delay(attempts - 1, ctx.rng, retry_after)
    if ctx.clock() + delay >= state.deadline_at:
        raise _annotate(error, f"no time left before the {s.deadline:g}s deadline")
    logger.info("%s failed (%s); re-routing in %.2fs", what, error, delay)
    if observed:
        yield state.progress(
            ctx,
            s,
            "retrying",
            worker_url=url,
            error=error.message,
            retry_in=delay,
            attempt=attempts,
        )
    yield Sleep(delay)
