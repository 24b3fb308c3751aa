"""Worker sessions, kept as Vast's worker framework keeps them (vastai 1.9.1; docs/sessions.md).

A session pins requests to one worker. ``POST /session/create`` is an ordinary routed worker call
(wrapped body, payload ``{lifetime, on_close_route, on_close_payload}``) and answers 201
``{session_id, expiration}``, or 429 once the worker holds ``max_sessions``. A model call whose
body carries the ``session_id`` is looked up before its signature is checked: an unknown id
answers 410; a known one adds ``lifetime`` to the session's expiration and the call goes on as
usual. ``/session/end``, ``/session/get`` and ``/session/health`` take the bare body
``{session_id, session_auth}``, where ``session_auth`` must equal the route answer the session
was created with. A sweep every ``gc_interval`` seconds ends the sessions whose expiration has
passed; ending a session drops its calls still in flight and posts ``on_close_payload`` to
``on_close_route``. Error answers copy the real worker's, down to its 500 page for bodies it
chokes on, so that the fidelity test can compare the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import string
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from ._faults import SESSION_FAULTS

if TYPE_CHECKING:
    from ._apps import State, WorkerState

__all__ = [
    "DEFAULT_LIFETIME",
    "DEFAULT_MAX_SESSIONS",
    "SESSION_GC_INTERVAL",
    "Session",
    "SessionTable",
    "serve_in_session",
    "session_routes",
]

log = logging.getLogger("vast_llm.emulator")

DEFAULT_MAX_SESSIONS = 10  # the worker framework's WorkerConfig default
DEFAULT_LIFETIME = 60.0  # seconds, when /session/create names none
SESSION_GC_INTERVAL = 5.0  # seconds between the worker's sweeps for expired sessions
ON_CLOSE_TIMEOUT = 10.0  # the worker's bound on its on_close_route call
_ID_CHARS = string.ascii_letters + string.digits
_ID_LENGTH = 13


@dataclass
class Session:
    """One open session on a worker (what ``/session/get`` reports, and where it lives)."""

    session_id: str
    lifetime: Any  # as the client sent it (a number, or the call would have failed)
    expiration: float  # epoch seconds; every call in the session adds ``lifetime``
    auth_data: dict[str, Any]  # the route answer it was created with: the session's password
    on_close_route: Any = None
    on_close_payload: Any = None
    created_at: float = field(default_factory=time.time)
    worker: int = 0
    endpoint: str = ""
    calls: int = 0  # model calls made in the session
    load: float = 0.0  # what the session adds to its worker's load while it is open
    _inflight: set[_Call] = field(default_factory=set, repr=False, compare=False)


@dataclass(eq=False)
class _Call:
    """A model call in flight in a session: ending the session drops it."""

    peer: tuple[str, int] | None
    dropped: bool = False


class SessionTable:
    """One worker's sessions. Guarded by the emulator's state lock (every access is short)."""

    def __init__(
        self,
        max_sessions: int | None = DEFAULT_MAX_SESSIONS,
        gc_interval: float = SESSION_GC_INTERVAL,
    ) -> None:
        self.max_sessions = max_sessions
        self.gc_interval = gc_interval
        self.sessions: dict[str, Session] = {}
        self.sweeper: asyncio.Task[None] | None = None
        # Closes the connection a call came in on (set when the worker is served on a socket).
        self.drop_connection: Callable[[tuple[str, int]], bool] | None = None

    def full(self) -> bool:
        # The framework's test: None and 0 mean no limit; a negative limit refuses every session.
        limit = self.max_sessions
        return not (limit is None or limit == 0) and len(self.sessions) >= limit

    def new_id(self) -> str:
        while True:
            session_id = "".join(secrets.choice(_ID_CHARS) for _ in range(_ID_LENGTH))
            if session_id not in self.sessions:
                return session_id

    def snapshot(self) -> list[Session]:
        return [replace(s, _inflight=set()) for s in self.sessions.values()]


# -- answers, as the worker's aiohttp handlers write them -------------------------------------


def _json(data: Any, status: int = 200) -> Response:
    # aiohttp's json_response: json.dumps with its default separators, charset in the type.
    return Response(json.dumps(data), status, media_type="application/json; charset=utf-8")


def _crashed() -> Response:
    """What aiohttp answers when a handler raises (the real worker's handlers do on odd input)."""
    return PlainTextResponse(
        "500 Internal Server Error\n\nServer got itself in trouble",
        status_code=500,
        headers={"connection": "close"},
    )


_INVALID_SESSION = {"error": "invalid session"}


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _parse(raw: bytes) -> tuple[Any, Response | None]:
    """The body as the worker's ``await request.json()`` sees it, or the answer to give."""
    try:
        return json.loads(raw.decode("utf-8")), None
    except json.JSONDecodeError:
        return None, _json({"error": "invalid JSON"}, 422)
    except Exception:  # undecodable bytes, absurd numbers: uncaught in the worker, hence a 500
        return None, _crashed()


def _peer(request: Request) -> tuple[str, int] | None:
    return (request.client.host, request.client.port) if request.client else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float))


# -- the four routes --------------------------------------------------------------------------


def session_routes(state: State, worker: WorkerState) -> list[Route]:
    """``/session/create``, ``/session/end``, ``/session/get`` and ``/session/health``."""
    from ._apps import Recorded  # _apps imports this module

    table: SessionTable | None = worker.sessions
    if table is None:
        return []

    def recorded(handler: Callable[[bytes], Awaitable[Response]]) -> Callable[..., Any]:
        async def run(request: Request) -> Response:
            raw = await request.body()
            headers = {k.lower(): v for k, v in request.headers.items()}
            entry = Recorded(
                "worker",
                "POST",
                request.url.path,
                headers,
                raw,
                worker=worker.index,
                endpoint=worker.endpoint,
                client=_peer(request),
            )
            state.record(entry)
            response = await handler(raw)
            state.update(entry, status=response.status_code)
            return response

        return run

    async def create(raw: bytes) -> Response:
        assert table is not None
        data, problem = _parse(raw)
        if problem is not None:
            return problem
        if not isinstance(data, dict) or not isinstance(data.get("auth_data"), dict):
            return _crashed()
        auth_data: dict[str, Any] = data["auth_data"]
        payload = data.get("payload")
        # The worker enters the session in its load figures under the route answer's reqnum and
        # cost: a cost that is not a number, or a reqnum that cannot be a key, makes that fail,
        # and so the call (even after the session is made).
        cost: Any = auth_data.get("cost")
        reqnum: Any = auth_data.get("reqnum")
        counted = _is_number(cost) and _hashable(reqnum)
        now = time.time()
        with state.lock:
            if table.full():
                return Response(status_code=429) if counted else _crashed()
            if not isinstance(payload, dict):
                return _crashed()
            lifetime = payload.get("lifetime", DEFAULT_LIFETIME)
            try:
                expiration = float(now + lifetime)
            except Exception:  # not a number: the worker's own arithmetic fails
                return _crashed()
            on_close_route = payload.get("on_close_route")
            on_close_payload = None if on_close_route is None else payload.get("on_close_payload")
            load = float(cost) if isinstance(cost, (int, float)) else 0.0
            session = Session(
                session_id=table.new_id(),
                lifetime=lifetime,
                expiration=expiration,
                auth_data=auth_data,
                on_close_route=on_close_route,
                on_close_payload=on_close_payload,
                worker=worker.index,
                endpoint=worker.endpoint,
                load=load,
            )
            table.sessions[session.session_id] = session
            # The assignment is used up, and the open session counts as load on its worker
            # until it ends (the router steers other work elsewhere meanwhile).
            if counted:
                worker.pending.pop(reqnum, None)
            worker.active_cost += load
        _ensure_sweeper(state, worker, table)
        if not counted:
            return _crashed()
        return _json({"session_id": session.session_id, "expiration": session.expiration}, 201)

    def lookup(raw: bytes) -> tuple[Any, Any, Session | None, Response | None]:
        assert table is not None
        data, problem = _parse(raw)
        if problem is not None:
            return None, None, None, problem
        if not isinstance(data, dict):
            return None, None, None, _crashed()
        session_id, session_auth = data.get("session_id"), data.get("session_auth")
        if not session_id:
            return None, None, None, _json({"error": "missing session_id"}, 422)
        if not _hashable(session_id):
            return None, None, None, _crashed()
        with state.lock:
            session = table.sessions.get(session_id)
        return session_id, session_auth, session, None

    def denied(session: Session, session_auth: Any) -> bool:
        return session_auth is None or session.auth_data != session_auth

    async def end(raw: bytes) -> Response:
        session_id, session_auth, session, problem = lookup(raw)
        if problem is not None:
            return problem
        if session is None:
            return _json({"error": f"session with id {session_id} not found"}, 400)
        if denied(session, session_auth):
            return _json({"error": "session_auth is not valid"}, 401)
        if not await close_session(state, worker, session_id):
            return _json({"error": "session already closed"}, 410)
        return _json({"ended": True, "removed_session": session_id})

    async def get(raw: bytes) -> Response:
        session_id, session_auth, session, problem = lookup(raw)
        if problem is not None:
            return problem
        if session is None:
            return _json({"error": "session does not exist"}, 400)
        if denied(session, session_auth):
            return _json({"error": "session_auth is not valid"}, 401)
        return _json(
            {
                "session_id": session_id,
                "auth_data": session.auth_data,
                "lifetime": session.lifetime,
                "expiration": session.expiration,
                "created_at": session.created_at,
                "on_close_route": session.on_close_route,
                "on_close_payload": session.on_close_payload,
            }
        )

    async def health(raw: bytes) -> Response:
        _, session_auth, session, problem = lookup(raw)
        if problem is not None:
            return problem
        if session is None:
            return _json({"ok": False})
        if denied(session, session_auth):
            return _json({"error": "session_auth is not valid"}, 401)
        return _json({"ok": True})

    return [
        Route("/session/create", recorded(create), methods=["POST"]),
        Route("/session/end", recorded(end), methods=["POST"]),
        Route("/session/get", recorded(get), methods=["POST"]),
        Route("/session/health", recorded(health), methods=["POST"]),
    ]


# -- model calls in a session -----------------------------------------------------------------


async def serve_in_session(
    state: State,
    worker: WorkerState,
    request: Request,
    session_id: Any,
    respond: Callable[[], Awaitable[Response]],
) -> Response:
    """A model call carrying ``session_id``: 410 unless the session is open; otherwise extend
    it, run the call (``respond``: signature, overload and the model, as for any call) and let
    an ending of the session drop it."""
    from ._apps import StreamCut

    table: SessionTable | None = worker.sessions
    if table is None:
        return _json(_INVALID_SESSION, 410)
    if not _hashable(session_id):
        return _crashed()
    fault = state.faults.take(SESSION_FAULTS, endpoint=worker.endpoint, worker=worker.index)
    if fault is not None:
        forget_session(state, worker, session_id)
    call = _Call(_peer(request))
    with state.lock:
        session = table.sessions.get(session_id)
        if session is None:
            return _json(_INVALID_SESSION, 410)
        # Each call adds a whole lifetime to the expiration (it does not restart the clock).
        session.expiration += session.lifetime
        session.calls += 1
        session._inflight.add(call)
    try:
        response = await respond()
    except BaseException:
        _leave(state, session, call)
        raise
    if not isinstance(response, StreamingResponse):
        _leave(state, session, call)
        if call.dropped:
            raise StreamCut("the session ended while this call was in flight")
        return response
    inner = response.body_iterator

    async def guarded() -> AsyncIterator[Any]:
        try:
            async for chunk in inner:
                if call.dropped:
                    raise StreamCut("the session ended while this call was in flight")
                yield chunk
        finally:
            _leave(state, session, call)
            aclose = getattr(inner, "aclose", None)
            if aclose is not None:
                await aclose()

    response.body_iterator = guarded()
    return response


def _leave(state: State, session: Session, call: _Call) -> None:
    with state.lock:
        session._inflight.discard(call)


# -- ending sessions --------------------------------------------------------------------------


async def close_session(state: State, worker: WorkerState, session_id: Any) -> bool:
    """End a session as the worker does: drop its calls in flight, release its load, then call
    its ``on_close_route``. False if it was not open."""
    table = worker.sessions
    if table is None:
        return False
    with state.lock:
        session = table.sessions.pop(session_id, None)
        if session is None:
            return False
        calls = list(session._inflight)
        session._inflight.clear()
        worker.active_cost -= session.load
    for call in calls:
        call.dropped = True
        if call.peer is not None and table.drop_connection is not None:
            table.drop_connection(call.peer)
    await _on_close(state, worker, session)
    return True


def forget_session(state: State, worker: WorkerState, session_id: Any) -> None:
    """The worker loses a session without ending it (the session_lost fault: as after a
    restart of the worker framework, no on_close call)."""
    table = worker.sessions
    if table is None:
        return
    with state.lock:
        session = table.sessions.pop(session_id, None)
        if session is not None:
            worker.active_cost -= session.load


async def _on_close(state: State, worker: WorkerState, session: Session) -> None:
    """POST ``on_close_payload`` (plus the session id) to ``on_close_route``: a path on the
    model server (recorded; the emulated model serves no such route) or an absolute URL
    (called). Best effort and bounded, like the worker's."""
    from ._apps import Recorded

    route = session.on_close_route
    if not route or not isinstance(route, str):
        return
    extra = session.on_close_payload
    body: dict[str, Any] = (
        dict(extra) if isinstance(extra, dict) else {} if extra is None else {"payload": extra}
    )
    body.setdefault("session_id", session.session_id)
    raw = json.dumps(body).encode()
    entry = Recorded(
        "on_close",
        "POST",
        route,
        {"content-type": "application/json"},
        raw,
        worker=worker.index,
        endpoint=worker.endpoint,
    )
    state.record(entry)
    if not route.startswith(("http://", "https://")):
        return
    import httpx

    try:
        async with httpx.AsyncClient(timeout=ON_CLOSE_TIMEOUT, trust_env=False) as client:
            response = await client.post(route, content=raw, headers=entry.headers)
        state.update(entry, status=response.status_code)
    except Exception as exc:  # never fatal, as on the worker
        log.debug("on_close_route %s failed: %r", route, exc)


def _ensure_sweeper(state: State, worker: WorkerState, table: SessionTable) -> None:
    loop = asyncio.get_running_loop()
    task = table.sweeper
    if task is None or task.done() or task.get_loop() is not loop:
        table.sweeper = loop.create_task(_sweep(state, worker, table))


async def _sweep(state: State, worker: WorkerState, table: SessionTable) -> None:
    """The worker's garbage collection: every ``gc_interval`` seconds, end the sessions whose
    expiration has passed. Until a sweep, an expired session still serves calls. (Runs while
    sessions are open; the next session starts it again.)"""
    while True:
        await asyncio.sleep(table.gc_interval)
        now = time.time()
        with state.lock:
            expired = [sid for sid, s in table.sessions.items() if s.expiration <= now]
        for session_id in expired:
            with contextlib.suppress(Exception):
                await close_session(state, worker, session_id)
        with state.lock:
            if not table.sessions:
                table.sweeper = None
                return
