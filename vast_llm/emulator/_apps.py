"""The emulated autoscaler (router) and workers, as Starlette applications.

The router serves ``POST /route/``, ``GET /pubkey/`` and a console stub
``GET /api/v0/endptjobs/``; each worker serves the routes of its model API on its own port and
checks requests in the order a current Vast worker does (docs/protocol.md §5): JSON → fields →
session → signature → overload → the model.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import json
import logging
import random
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._signing import Memo, Recipe, public_key_pem, sign, signed_message, verify
from ._embeddings import POOLING_KINDS, POOLING_ROUTES, Pooling, pooling_answer
from ._faults import (
    PUBKEY_FAULTS,
    ROUTE_FAULTS,
    SIGNATURE_FAULTS,
    STREAM_FAULTS,
    WORKER_STATUS_FAULTS,
    Fault,
    FaultBook,
)
from ._models import (
    FakeModel,
    GenRequest,
    GenResult,
    Model,
    Thought,
    resolve_reply,
)
from ._prefix import PrefixCache
from ._script import Fail, Script, ScriptError
from ._sessions import SessionTable, serve_in_session, session_routes

__all__ = [
    "VAST_STATE_NAMES",
    "EndpointState",
    "Recorded",
    "State",
    "WorkerState",
    "delayed",
    "impostor_app",
    "router_app",
    "worker_app",
]

log = logging.getLogger("vast_llm.emulator")

AUTH_FIELDS = ("cost", "endpoint", "reqnum", "signature", "url")
REPLAY_WINDOW = 100
PENDING_EXPIRY = 60.0  # an assignment nobody used stops counting as load (replay_timeout)
_COMPACT = (",", ":")


class StreamCut(Exception):
    """Raised inside a streaming body to drop the connection mid-answer (the stream_cut fault)."""


class Headers(dict[str, str]):
    """A request's headers (lower-case names), read-only; still a dict, so ``json.dumps`` and
    comparisons with dicts work."""

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("recorded headers are read-only")

    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __reduce__(self) -> tuple[Any, ...]:
        return (Headers, (dict(self),))


@dataclass(frozen=True)
class Recorded:
    """One request the emulator received (a read-only record).

    The emulator fills ``response``, ``status`` and ``turn`` in once it has answered, by
    replacing the record in its log: read the log again (``emu.requests``) to see them.
    """

    target: str  # "route", "pubkey", "console", "worker", "impostor" (the foreign_ca fault)
    # or "on_close" (a session's callback)
    method: str
    path: str
    headers: Mapping[str, str] = field(hash=False)  # lower-case names, read-only (Headers)
    body: bytes
    worker: int | None = None
    endpoint: str | None = None
    time: float = field(default_factory=time.time)
    client: tuple[str, int] | None = None  # the peer address (connection reuse shows here)
    response: bytes | None = None  # the route answer's body, for route calls that got one
    status: int | None = None  # the status a worker answered with
    turn: int | None = None  # the scripted turn (1-based) that answered a worker request

    def __post_init__(self) -> None:
        if not isinstance(self.headers, Headers):
            object.__setattr__(self, "headers", Headers(self.headers))

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None


@dataclass
class WorkerState:
    """One emulated worker."""

    index: int
    endpoint: str
    api: str
    recipe: Recipe
    payload_format: str
    model: Model
    cold_start: float = 0.0
    max_concurrency: int | None = None
    url: str = ""
    ready_at: float = 0.0
    # Scale-to-zero: a cold worker sits "stopped" (model loaded, instance stopped) until a route
    # call finds no worker ready and wakes it; it is ready activation_delay seconds later.
    cold: bool = False
    activation_delay: float = 0.0
    woken_at: float | None = None
    forced_state: str | None = None  # "error" or "destroying" (Emulator.set_worker_state)
    reqnum: int = 0
    inflight: int = 0
    peak_inflight: int = 0  # most requests this worker ran at once (proves concurrency in tests)
    served: int = 0
    pending: dict[int, tuple[float, float]] = field(default_factory=dict)
    active_cost: float = 0.0
    max_reqnum_seen: int = 0
    recent_messages: collections.deque[bytes] = field(
        default_factory=lambda: collections.deque(maxlen=REPLAY_WINDOW)
    )
    sessions: SessionTable | None = None  # None: a worker without sessions (legacy format)
    prefix: PrefixCache | None = None  # the prompt it has cached (with prefill_delay set)
    gone: bool = False  # stopped for good (Emulator.stop_worker): nothing listens any more
    script: Script | None = None  # the endpoint's scripted turns
    reasoning: str | None = None  # the endpoint's reasoning option (REASONING_OPTIONS)
    # Prompts this worker has seen (hashes, bounded): a repeated one is served from the
    # prefix cache, as vLLM reports in usage.prompt_tokens_details.cached_tokens.
    seen_prompts: collections.OrderedDict[int, None] = field(
        default_factory=collections.OrderedDict
    )

    def cached_tokens(self, prompt: Any, tokens: int) -> int:
        """How many of a request's prompt tokens the prefix cache holds (all, if seen)."""
        key = hash(json.dumps(prompt, sort_keys=True, default=str))
        seen = key in self.seen_prompts
        self.seen_prompts[key] = None
        self.seen_prompts.move_to_end(key)
        while len(self.seen_prompts) > 1024:
            self.seen_prompts.popitem(last=False)
        return tokens if seen else 0

    pooling: Pooling | None = None  # /v1/embeddings, /v1/rerank, /v1/score (_embeddings.py)

    def state(self, now: float) -> str:
        """This worker's state now: one of :data:`VAST_STATE_NAMES` (ready: idle, running)."""
        if self.gone:
            return "offline"
        if self.forced_state is not None:
            return self.forced_state
        if now < self.ready_at and self.cold_start > 0:
            elapsed = self.cold_start - (self.ready_at - now)
            return ("creating", "loading", "model_loading")[
                min(2, int(3 * elapsed / self.cold_start))
            ]
        if self.cold:
            if self.woken_at is None:
                return "stopped"
            elapsed = now - self.woken_at
            if elapsed < self.activation_delay:
                return "starting" if elapsed < self.activation_delay / 2 else "model_loading"
        return "running" if self.inflight else "idle"

    def ready(self, now: float) -> bool:
        return self.state(now) in ("idle", "running")

    def load(self, now: float) -> float:
        expired = [n for n, (_, t) in self.pending.items() if now - t > PENDING_EXPIRY]
        for n in expired:
            del self.pending[n]
        return self.active_cost + sum(cost for cost, _ in self.pending.values())


@dataclass
class EndpointState:
    """One endpoint (worker group) of the account."""

    name: str
    api: str
    workers: list[WorkerState]
    stopped: bool = False
    id: int = 0
    request_idx: itertools.count[int] = field(default_factory=lambda: itertools.count(2400))
    known_idx: set[int] = field(default_factory=set)


@functools.lru_cache(maxsize=1)
def _foreign_key() -> rsa.RSAPrivateKey:
    # A key that is not the router's (the foreign_key fault); one per process is plenty.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class State:
    """Everything the router and workers share (guarded by one lock where it mutates)."""

    def __init__(
        self, api_key: str, key: rsa.RSAPrivateKey, faults: FaultBook, log_limit: int | None = None
    ) -> None:
        self.api_key = api_key
        self.key = key
        self.foreign_key = _foreign_key()
        self.faults = faults
        self.endpoints: dict[str, EndpointState] = {}
        # The most recent requests; a long-running emulator (load tests, benchmarks) must not grow
        # without bound, nor slow its own garbage collector with millions of records.
        self.requests: collections.deque[Recorded] = collections.deque(maxlen=log_limit)
        self.lock = threading.Lock()
        self.dead_url = ""
        self.impostor_url = ""  # an HTTPS server with a foreign CA's certificate (foreign_ca)
        # (key, recipe, message) -> signature. PKCS#1 v1.5 signing is deterministic, and g3
        # signs only the worker URL, so the router's answers repeat their signature; an RSA
        # signature per answer made the router the bottleneck of load benchmarks.
        self._signatures: dict[tuple[int, str, bytes], tuple[rsa.RSAPrivateKey, str]] = {}
        self._public: tuple[rsa.RSAPrivateKey, rsa.RSAPublicKey] | None = None
        self.verified = Memo()  # the workers' signature checks (see _signing.verify)

    def public_key(self) -> rsa.RSAPublicKey:
        """The current key's public half (one object per key, so checks can be remembered)."""
        if self._public is None or self._public[0] is not self.key:
            self._public = (self.key, self.key.public_key())
        return self._public[1]

    def sign(self, recipe: Recipe, answer: dict[str, Any]) -> str:
        """The router's signature of ``answer`` under its current key (remembered)."""
        key = self.key
        message = signed_message(recipe, answer)
        if message is None:
            return sign(key, recipe, answer)  # raises: the answer lacks a signed field
        slot = (id(key), recipe, message)
        known = self._signatures.get(slot)
        if known is not None and known[0] is key:
            return known[1]
        signature = sign(key, recipe, answer)
        if len(self._signatures) >= 4096:
            self._signatures.clear()
        self._signatures[slot] = (key, signature)
        return signature

    def record(self, entry: Recorded) -> Recorded:
        with self.lock:
            self.requests.append(entry)
        return entry

    def update(self, entry: Recorded, **changes: Any) -> Recorded:
        """Replace ``entry`` in the log with a copy carrying ``changes`` (records are frozen)."""
        new = replace(entry, **changes)
        with self.lock:
            log = self.requests
            # Answers come soon after their request: look from the newest end.
            for back, old in enumerate(reversed(log), 1):
                if old is entry:
                    log[-back] = new
                    break
                if back >= 4096:
                    break
        return new

    def workers(self) -> list[WorkerState]:
        return [w for ep in self.endpoints.values() for w in ep.workers]


def _headers(request: Request) -> dict[str, str]:
    return {k.lower(): v for k, v in request.headers.items()}


def _peer(request: Request) -> tuple[str, int] | None:
    return (request.client.host, request.client.port) if request.client else None


def _given_key(request: Request, body: Any) -> str | None:
    if isinstance(body, dict):
        given = body.get("api_key")
        if isinstance(given, str):
            return given
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.query_params.get("api_key")


# Worker states as Vast shows them (protocol.md §9). "Stopped" is a cold worker, model loaded,
# that a request wakes: not the endpoint being stopped, which says "endpoint stopped".
VAST_STATE_NAMES: dict[str, str] = {
    "creating": "Creating",
    "loading": "Loading",
    "model_loading": "Model Loading",
    "stopped": "Stopped",
    "starting": "Starting",
    "idle": "Ready",
    "running": "Ready",
    "error": "Error",
    "destroying": "Destroying",
}
ENDPOINT_STOPPED = "endpoint stopped"


def _status_summary(workers: list[WorkerState], now: float) -> str:
    # A worker whose instance is gone is no longer the endpoint's: it is not counted.
    counts = collections.Counter(VAST_STATE_NAMES[w.state(now)] for w in workers if not w.gone)
    detail = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return f"no worker ready ({detail or 'no workers'})"


def _wake_one(workers: list[WorkerState], now: float) -> None:
    """Scale from zero: wake one stopped worker, unless one is already on its way."""
    if any(w.cold and w.state(now) in ("starting", "model_loading") for w in workers):
        return
    for worker in workers:
        if worker.state(now) == "stopped":
            worker.woken_at = now
            return


_FAULT_RESPONSES: dict[str, Callable[[], Response]] = {
    "route_429": lambda: JSONResponse(
        {"error": "too many requests"}, status_code=429, headers={"Retry-After": "0"}
    ),
    "route_500": lambda: JSONResponse({"error": "internal error"}, status_code=500),
    "route_503": lambda: Response(
        "<html><body><h1>503 Service Unavailable</h1></body></html>",
        status_code=503,
        media_type="text/html",
    ),
    "route_error_msg": lambda: JSONResponse({"error_msg": "endpoint group is unavailable"}),
    "route_garbage": lambda: Response(
        "<html><body>Bad gateway</body></html>", status_code=200, media_type="text/html"
    ),
}


def router_app(state: State) -> Starlette:
    """The autoscaler: /route/, /pubkey/ and the console's endpoint list."""

    async def route(request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        name = body.get("endpoint") if isinstance(body, dict) else None
        entry = Recorded(
            "route", "POST", "/route/", _headers(request), raw, endpoint=name, client=_peer(request)
        )
        state.record(entry)
        response = await _route_answer(request, body, name)
        if isinstance(response, JSONResponse):
            state.update(entry, response=bytes(response.body))
        return response

    async def _route_answer(request: Request, body: Any, name: Any) -> Response:
        if not isinstance(body, dict):
            return JSONResponse({"error": "invalid JSON"}, status_code=400)
        if _given_key(request, body) != state.api_key:
            return JSONResponse({"error": "Authentication failed"}, status_code=401)
        if not isinstance(name, str) or not name:
            return JSONResponse({"error": "missing endpoint"}, status_code=400)
        cost = body.get("cost", 0)
        if isinstance(cost, bool) or not isinstance(cost, (int, float)) or cost < 0:
            return JSONResponse({"error": "cost must be a number >= 0"}, status_code=400)
        endpoint = state.endpoints.get(name)
        if endpoint is None:
            return JSONResponse({"error_msg": f"no endpoint group named {name!r}"}, status_code=400)

        fault = state.faults.take(ROUTE_FAULTS, endpoint=name)
        if fault is not None and fault.name in _FAULT_RESPONSES:
            return _FAULT_RESPONSES[fault.name]()
        if fault is not None and fault.name == "route_timeout":
            await asyncio.sleep(fault.delay)
            if await request.is_disconnected():
                # The client gave up on this call: touch nothing (no reqnum, and no fault
                # meant for a later request is used up by this one).
                return Response(status_code=499)

        now = time.monotonic()
        with state.lock:
            given_idx = body.get("request_idx")
            if isinstance(given_idx, int) and given_idx in endpoint.known_idx:
                request_idx = given_idx
            else:
                request_idx = next(endpoint.request_idx)
                endpoint.known_idx.add(request_idx)
            request_id = str(uuid.uuid4())
            stopped = endpoint.stopped or (fault is not None and fault.name == "stopped")
            if stopped or (fault is not None and fault.name == "not_ready"):
                status = ENDPOINT_STOPPED if stopped else _status_summary(endpoint.workers, now)
                return JSONResponse(
                    {
                        "endpoint": name,
                        "status": status,
                        "request_idx": request_idx,
                        "__request_id": request_id,
                    }
                )
            ready = [w for w in endpoint.workers if w.ready(now)]
            if not ready:
                # The answer shows the states this call found; the wake-up it causes shows
                # from the next poll on (the autoscaler acts after answering).
                status = _status_summary(endpoint.workers, now)
                _wake_one(endpoint.workers, now)
                return JSONResponse(
                    {
                        "endpoint": name,
                        "status": status,
                        "request_idx": request_idx,
                        "__request_id": request_id,
                    }
                )
            worker = min(ready, key=lambda w: (w.load(now), w.served, w.index))
            worker.reqnum += 1
            worker.served += 1
            worker.pending[worker.reqnum] = (float(cost), now)
            answer: dict[str, Any] = {
                "endpoint": name,
                "url": worker.url,
                "cost": float(cost),  # the router re-types cost as a float, as production does
                "reqnum": worker.reqnum,
                "request_idx": request_idx,
                "__request_id": request_id,
            }
        answer = _sign_answer(state, worker, answer)
        return JSONResponse(answer)

    async def pubkey(request: Request) -> Response:
        state.record(Recorded("pubkey", "GET", "/pubkey/", _headers(request), b""))
        fault = state.faults.take(PUBKEY_FAULTS)
        if fault is not None and fault.name == "pubkey_down":
            return PlainTextResponse("service unavailable", status_code=503)
        if fault is not None:
            return PlainTextResponse("this is not a public key")
        return PlainTextResponse(public_key_pem(state.key.public_key()))

    async def endpoints(request: Request) -> Response:
        state.record(Recorded("console", "GET", request.url.path, _headers(request), b""))
        if _given_key(request, None) != state.api_key:
            return JSONResponse({"success": False, "error": "Authentication failed"}, 401)
        results = [
            {
                "id": ep.id,
                "endpoint_name": ep.name,
                "api_key": state.api_key,
                "user_id": 1,
                "created_at": 1_700_000_000.0,
                "cold_workers": sum(1 for w in ep.workers if w.cold),
                "max_workers": len(ep.workers),
                "min_load": 0.0,
                "min_cold_load": 0.0,
                "target_util": 0.9,
                "cold_mult": 2.0,
                "max_queue_time": 30.0,
                "target_queue_time": 10.0,
                "endpoint_state": "stopped" if ep.stopped else "active",
                "inactivity_timeout": None,
            }
            for ep in state.endpoints.values()
        ]
        return JSONResponse({"success": True, "results": results})

    return Starlette(
        routes=[
            Route("/route/", route, methods=["POST"]),
            Route("/pubkey/", pubkey, methods=["GET"]),
            Route("/api/v0/endptjobs/", endpoints, methods=["GET"]),
        ]
    )


def _sign_answer(state: State, worker: WorkerState, answer: dict[str, Any]) -> dict[str, Any]:
    fault = state.faults.take(SIGNATURE_FAULTS, endpoint=worker.endpoint, worker=worker.index)
    name = fault.name if fault is not None else None
    if name == "worker_refuse":
        answer["url"] = state.dead_url
    elif name == "foreign_ca":
        answer["url"] = state.impostor_url
    if name == "bad_signature":
        answer["signature"] = sign(
            state.key, worker.recipe, {**answer, "url": answer["url"] + "/x"}
        )
    elif name == "foreign_key":
        answer["signature"] = sign(state.foreign_key, worker.recipe, answer)
    elif name != "missing_signature":
        answer["signature"] = state.sign(worker.recipe, answer)
    if name == "tampered_url":
        answer["url"] = answer["url"].replace("127.0.0.1", "localhost")
    elif name == "tampered_reqnum":
        answer["reqnum"] += 1000
    elif name == "tampered_cost":
        answer["cost"] = answer["cost"] * 10 + 1.0
    return answer


# -- workers --------------------------------------------------------------------------------

_PAYLOAD_FIELD = {"tgi": "inputs", "completions": "prompt", "chat": "messages"}


def _check_payload(kind: str, payload: Any) -> Any:
    if not isinstance(payload, dict):
        return "field missing"
    if kind in POOLING_KINDS:
        return None  # the engine checks its own fields (a 400 in vLLM's shape)
    required = _PAYLOAD_FIELD[kind]
    value = payload.get(required)
    expected = list if kind == "chat" else str
    if not isinstance(value, expected):
        return {required: "missing parameter"}
    return None


def _split_request(worker: WorkerState, kind: str, data: Any) -> tuple[Any, Any, Any, Any]:
    """(auth_data, payload, session_id, 422 errors or None) from a request body."""
    if not isinstance(data, dict):
        return None, None, None, {"error": "invalid JSON"}
    errors: dict[str, Any] = {}
    if worker.payload_format == "flat":
        flat_auth = {k: data[k] for k in (*AUTH_FIELDS, "request_idx") if k in data}
        flat_payload = {k: v for k, v in data.items() if k not in flat_auth and k != "__request_id"}
        flat_missing = {k: "missing parameter" for k in AUTH_FIELDS if k not in flat_auth}
        if flat_missing:
            errors["auth_data"] = flat_missing
        problem = _check_payload(kind, flat_payload)
        if problem is not None:
            errors["payload"] = problem
        return flat_auth, flat_payload, None, errors or None
    auth: Any = data.get("auth_data")
    if not isinstance(auth, dict):
        errors["auth_data"] = "field missing"
    else:
        needed = AUTH_FIELDS + (("request_idx",) if worker.recipe in ("g2", "g3") else ())
        missing = {k: "missing parameter" for k in needed if k not in auth}
        if missing:
            errors["auth_data"] = missing
    payload = data.get("payload")
    problem = _check_payload(kind, payload) if "payload" in data else "field missing"
    if problem is not None:
        errors["payload"] = problem
    return auth, payload, data.get("session_id"), errors or None


def _signature_ok(state: State, worker: WorkerState, auth: dict[str, Any]) -> bool:
    if verify(state.public_key(), auth, (worker.recipe,), state.verified) is None:
        return False
    if worker.recipe == "g1" or worker.payload_format == "flat":
        # Older workers refuse replays: a reqnum far below the highest seen, or a repeat.
        reqnum = auth.get("reqnum")
        message = (signed_message(worker.recipe, auth) or b"") + f"#{reqnum}".encode()
        if not isinstance(reqnum, int) or reqnum < worker.max_reqnum_seen - REPLAY_WINDOW:
            return False
        if message in worker.recent_messages:
            return False
        worker.recent_messages.append(message)
        worker.max_reqnum_seen = max(worker.max_reqnum_seen, reqnum)
    return True


def _gen_request(worker: WorkerState, kind: str, payload: dict[str, Any]) -> GenRequest:
    if kind == "tgi":
        params = payload.get("parameters") or {}
        if worker.recipe == "g1":
            # G1-era TGI workers forwarded only inputs and max_new_tokens.
            params = {"max_new_tokens": params.get("max_new_tokens")}
        stop = params.get("stop") or []
        return GenRequest(
            prompt=payload["inputs"],
            max_tokens=int(params.get("max_new_tokens") or 256),
            stop=[stop] if isinstance(stop, str) else list(stop),
            temperature=params.get("temperature"),
            seed=params.get("seed"),
            repetition_penalty=params.get("repetition_penalty"),
            include_stop=True,
            kind="tgi",
            # TGI has no reasoning field: a thinking model's output carries <think>...</think>.
            reasoning="think" if worker.reasoning else None,
        )
    stop = payload.get("stop") or []
    return GenRequest(
        prompt=payload.get("prompt") if kind == "completions" else None,
        messages=payload.get("messages") if kind == "chat" else None,
        max_tokens=int(
            payload.get("max_tokens")
            or payload.get("max_completion_tokens")
            or (16 if kind == "completions" else 256)
        ),
        stop=[stop] if isinstance(stop, str) else list(stop),
        temperature=payload.get("temperature"),
        seed=payload.get("seed"),
        repetition_penalty=payload.get("repetition_penalty"),  # a vLLM extension
        tools=payload.get("tools"),
        tool_choice=payload.get("tool_choice"),
        response_format=payload.get("response_format"),
        kind=kind,
        # vLLM's reasoning parsers work on chat answers; completions carry the text as written.
        reasoning=worker.reasoning if kind == "chat" or not worker.reasoning else "think",
    )


def _tgi_validate(payload: dict[str, Any]) -> str | None:
    params = payload.get("parameters") or {}
    temperature = params.get("temperature")
    if temperature is not None and temperature <= 0:
        return "Input validation error: `temperature` must be strictly positive"
    top_p = params.get("top_p")
    if top_p is not None and not 0 < top_p < 1:
        return "Input validation error: `top_p` must be > 0.0 and < 1.0"
    top_k = params.get("top_k")
    if top_k is not None and top_k <= 0:
        return "Input validation error: `top_k` must be strictly positive"
    if len(params.get("stop") or []) > 4:
        return "Input validation error: `stop` supports up to 4 stop sequences"
    return None


class _Faulty:
    """Applies a stream fault to a stream of SSE frames (or lets them through)."""

    def __init__(self, fault: Fault | None, kind: str) -> None:
        self.fault = fault
        self.kind = kind
        self.tokens = 0

    def error_frame(self) -> str:
        if self.kind == "tgi":
            return (
                "data:"
                + json.dumps({"error": "emulated generation failure", "error_type": "generation"})
                + "\n\n"
            )
        return (
            "data: "
            + json.dumps(
                {
                    "error": {
                        "message": "emulated generation failure",
                        "type": "InternalServerError",
                        "code": 500,
                    }
                }
            )
            + "\n\n"
        )

    async def wrap(self, frames: AsyncIterator[tuple[str, bool]]) -> AsyncIterator[str]:
        """``frames`` yields (frame, is_token); the fault strikes after ``after`` tokens."""
        fault = self.fault
        name = fault.name if fault is not None else None
        if fault is not None and name == "slow_first_token":
            await asyncio.sleep(fault.delay)
        async for frame, is_token in frames:
            if fault is not None and name != "slow_first_token" and self.tokens >= fault.after:
                if name == "stream_cut":
                    raise StreamCut("emulated connection drop")
                if name == "malformed_sse":
                    yield "data:{this is not json\n\n"
                elif name == "stream_error":
                    yield self.error_frame()
                return  # stream_truncated, and the end of the other two
            yield frame
            self.tokens += is_token


def _tgi_frames(
    model: Model, req: GenRequest, result: GenResult, details: bool
) -> AsyncIterator[tuple[str, bool]]:
    async def frames() -> AsyncIterator[tuple[str, bool]]:
        held: str | None = None
        text = ""
        index = 0

        def frame(token: str, special: bool, final: bool) -> str:
            event: dict[str, Any] = {
                "index": index,
                "token": {"id": 1000 + index, "text": token, "logprob": -0.25, "special": special},
                "generated_text": text if final else None,
                "details": None,
            }
            if final and details:
                event["details"] = {
                    "finish_reason": _TGI_FINISH.get(result.finish_reason, result.finish_reason),
                    "generated_tokens": result.completion_tokens + (1 if special else 0),
                    "seed": req.seed,
                    "input_length": result.prompt_tokens,
                }
            return "data:" + json.dumps(event, separators=_COMPACT) + "\n\n"

        async for token in model.generate(req, result):
            if held is not None:
                index += 1
                yield frame(held, False, False), True
            held = token
            text += token
        if result.finish_reason == "eos" or held is None:
            if held is not None:
                index += 1
                yield frame(held, False, False), True
            index += 1
            yield frame("</s>", True, True), False
        else:
            index += 1
            yield frame(held, False, True), True

    return frames()


_TGI_FINISH = {"eos": "eos_token", "stop": "stop_sequence", "length": "length"}
_LOGPROB = -0.25  # every emulated token's log probability


def _logprobs(kind: str, payload: dict[str, Any], tokens: list[str]) -> dict[str, Any] | None:
    """vLLM's ``logprobs`` of a choice for ``tokens``, when the request asked for them."""
    asked = payload.get("logprobs")
    if not asked or not tokens:
        return None
    if kind == "chat":
        top = int(payload.get("top_logprobs") or 0)

        def entry(token: str) -> dict[str, Any]:
            alternatives = [{"token": token, "logprob": _LOGPROB, "bytes": list(token.encode())}]
            return {**alternatives[0], "top_logprobs": alternatives * min(top, 1)}

        return {"content": [entry(t) for t in tokens]}
    offsets, at = [], 0
    for token in tokens:
        offsets.append(at)
        at += len(token)
    return {
        "tokens": tokens,
        "token_logprobs": [_LOGPROB] * len(tokens),
        "top_logprobs": [{t: _LOGPROB} for t in tokens],
        "text_offset": offsets,
    }


def _usage(worker: WorkerState, payload: dict[str, Any], result: GenResult) -> dict[str, Any]:
    prompt = payload.get("messages") or payload.get("prompt")
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
        "prompt_tokens_details": {
            "cached_tokens": worker.cached_tokens(prompt, result.prompt_tokens)
        },
    }


_OPENAI_FINISH = {"eos": "stop", "stop": "stop", "length": "length", "tool_calls": "tool_calls"}


def _openai_frames(
    model: Model,
    req: GenRequest,
    result: GenResult,
    kind: str,
    payload: dict[str, Any],
    rid: str,
    worker: WorkerState,
) -> AsyncIterator[tuple[str, bool]]:
    created = int(time.time())
    include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
    model_name = payload.get("model") or model.name

    def chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> str:
        body: dict[str, Any] = {
            "id": rid,
            "object": obj,
            "created": created,
            "model": model_name,
            "choices": choices,
        }
        if usage is not None:
            body["usage"] = usage
        return "data: " + json.dumps(body, separators=_COMPACT) + "\n\n"

    def choice(content: dict[str, Any], finish: str | None, logprobs: Any = None) -> dict[str, Any]:
        if kind == "chat":
            return {"index": 0, "delta": content, "logprobs": logprobs, "finish_reason": finish}
        return {
            "index": 0,
            "text": content.get("content", ""),
            "logprobs": logprobs,
            "finish_reason": finish,
        }

    think_key = req.reasoning or "reasoning_content"

    async def frames() -> AsyncIterator[tuple[str, bool]]:
        if kind == "chat":
            yield chunk([choice({"role": "assistant", "content": ""}, None)]), False
        async for token in model.generate(req, result):
            thought = isinstance(token, Thought)
            key = think_key if thought else "content"
            logprobs = None if thought else _logprobs(kind, payload, [str(token)])
            yield chunk([choice({key: str(token)}, None, logprobs)]), True
        for index, call in enumerate(result.tool_calls):
            head = {
                "index": index,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["name"], "arguments": ""},
            }
            yield chunk([choice({"tool_calls": [head]}, None)]), True
            arguments = call["arguments"]
            step = max(1, len(arguments) // 3)
            for at in range(0, len(arguments), step):
                piece = {"index": index, "function": {"arguments": arguments[at : at + step]}}
                yield chunk([choice({"tool_calls": [piece]}, None)]), True
        finish = _OPENAI_FINISH.get(result.finish_reason, result.finish_reason)
        yield chunk([choice({}, finish)]), False
        if include_usage:
            yield chunk([], _usage(worker, payload, result)), False
        yield "data: [DONE]\n\n", False

    return frames()


async def _whole_answer(
    model: Model,
    req: GenRequest,
    result: GenResult,
    kind: str,
    payload: dict[str, Any],
    rid: str,
    worker: WorkerState,
) -> dict[str, Any]:
    tokens = [token async for token in model.generate(req, result)]
    text = "".join(t for t in tokens if not isinstance(t, Thought))
    logprobs = _logprobs(kind, payload, [str(t) for t in tokens if not isinstance(t, Thought)])
    if kind == "tgi":
        params = payload.get("parameters") or {}
        answer: dict[str, Any] = {"generated_text": text}
        if params.get("details"):
            answer["details"] = {
                "finish_reason": _TGI_FINISH.get(result.finish_reason, result.finish_reason),
                "generated_tokens": result.completion_tokens,
                "seed": req.seed,
                "prefill": [],
                "tokens": [],
            }
        return answer
    usage = _usage(worker, payload, result)
    finish = _OPENAI_FINISH.get(result.finish_reason, result.finish_reason)
    if kind == "completions":
        choice: dict[str, Any] = {
            "index": 0,
            "text": text,
            "logprobs": logprobs,
            "finish_reason": finish,
        }
        obj = "text_completion"
    else:
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if req.reasoning in ("reasoning_content", "reasoning"):
            thought = "".join(t for t in tokens if isinstance(t, Thought))
            message[req.reasoning] = thought or None
        if result.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
                for call in result.tool_calls
            ]
        else:
            message["content"] = text
        choice = {"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish}
        obj = "chat.completion"
    # n > 1: the deterministic fake gives the same answer n times (vLLM would sample n).
    count = max(1, int(payload.get("n") or 1))
    choices = [{**choice, "index": index} for index in range(count)]
    return {
        "id": rid,
        "object": obj,
        "created": int(time.time()),
        "model": payload.get("model") or model.name,
        "choices": choices,
        "usage": usage,
    }


_STATUS_FAULT_RESPONSES: dict[str, Callable[[], Response]] = {
    "worker_401": lambda: Response(status_code=401),
    "worker_422": lambda: JSONResponse({"error": "emulated validation failure"}, status_code=422),
    "worker_429": lambda: Response(status_code=429),
    "worker_500": lambda: Response(status_code=500),
}


def worker_app(state: State, worker: WorkerState) -> Starlette:
    """One worker: the routes of its model API behind a Vast worker's checks."""

    async def handle(request: Request, kind: str) -> Response:
        raw = await request.body()
        entry = Recorded(
            "worker",
            "POST",
            request.url.path,
            _headers(request),
            raw,
            worker=worker.index,
            endpoint=worker.endpoint,
            client=_peer(request),
        )
        state.record(entry)
        note: dict[str, Any] = {}
        response = await respond(request, kind, raw, note)
        state.update(entry, status=response.status_code, turn=note.get("turn"))
        return response

    async def respond(request: Request, kind: str, raw: bytes, note: dict[str, Any]) -> Response:
        try:
            data = json.loads(raw)
        except ValueError:
            return JSONResponse({"error": "invalid JSON"}, status_code=422)
        auth, payload, session_id, errors = _split_request(worker, kind, data)
        if errors:
            return JSONResponse(errors, status_code=422)
        if session_id is not None:  # looked up before the signature, as the worker does
            return await serve_in_session(
                state,
                worker,
                request,
                session_id,
                lambda: checked(request, kind, auth, payload, note),
            )
        return await checked(request, kind, auth, payload, note)

    async def checked(
        request: Request, kind: str, auth: Any, payload: Any, note: dict[str, Any]
    ) -> Response:
        with state.lock:
            accepted = _signature_ok(state, worker, auth)
        if not accepted:
            return Response(status_code=401)
        fault = state.faults.take(
            WORKER_STATUS_FAULTS, endpoint=worker.endpoint, worker=worker.index
        )
        if fault is not None:
            return _STATUS_FAULT_RESPONSES[fault.name]()
        if worker.max_concurrency is not None and worker.inflight >= worker.max_concurrency:
            return Response(status_code=429)
        if kind in POOLING_KINDS and worker.pooling is not None:
            return await _pooled(state, worker, worker.pooling, kind, auth, payload)
        if kind == "tgi":
            problem = _tgi_validate(payload)
            if problem is not None:
                return JSONResponse({"error": problem, "error_type": "validation"}, 422)
        req = _gen_request(worker, kind, payload)
        scripted_fault: Fault | None = None
        if worker.script is not None:
            refusal, note["turn"], scripted_fault = _play(worker, worker.script, req)
            if refusal is not None:
                return refusal
        cost = float(auth.get("cost") or 0.0)
        with state.lock:
            if worker.prefix is not None:
                req.prefill = worker.prefix.admit(req.text)
            worker.pending.pop(auth.get("reqnum"), None)
            worker.inflight += 1
            worker.peak_inflight = max(worker.peak_inflight, worker.inflight)
            worker.active_cost += cost
        done = False

        def finish() -> None:
            nonlocal done
            if not done:
                done = True
                with state.lock:
                    worker.inflight -= 1
                    worker.active_cost -= cost

        stream_fault = scripted_fault or state.faults.take(
            STREAM_FAULTS, endpoint=worker.endpoint, worker=worker.index
        )
        # Scripted turns are the fake model's to say, whichever model the endpoint runs.
        scripted = req.reply is not None and not isinstance(worker.model, FakeModel)
        model = _SCRIPT_VOICE if scripted else worker.model
        result = GenResult()
        rid = ("cmpl-" if kind != "chat" else "chatcmpl-") + secrets.token_hex(8)
        streaming = (
            request.url.path.endswith("_stream") if kind == "tgi" else bool(payload.get("stream"))
        )
        try:
            if not streaming:
                return await _whole_response(
                    model, req, result, kind, payload, rid, stream_fault, worker
                )
        except BaseException:
            finish()
            raise
        finally:
            if not streaming:
                finish()
        frames = (
            _tgi_frames(
                model, req, result, details=bool((payload.get("parameters") or {}).get("details"))
            )
            if kind == "tgi"
            else _openai_frames(model, req, result, kind, payload, rid, worker)
        )

        async def body() -> AsyncIterator[str]:
            try:
                async for frame in _Faulty(stream_fault, kind).wrap(frames):
                    yield frame
            finally:
                await frames.aclose()  # type: ignore[attr-defined]
                finish()

        return StreamingResponse(body(), media_type="text/event-stream")

    def endpoint(kind: str) -> Callable[[Request], Any]:
        async def run(request: Request) -> Response:
            return await handle(request, kind)

        return run

    routes = []
    if worker.api in ("tgi", "both"):
        routes += [
            Route("/generate", endpoint("tgi"), methods=["POST"]),
            Route("/generate_stream", endpoint("tgi"), methods=["POST"]),
        ]
    if worker.api in ("openai", "both"):
        routes += [
            Route("/v1/completions", endpoint("completions"), methods=["POST"]),
            Route("/v1/chat/completions", endpoint("chat"), methods=["POST"]),
        ]
        if worker.pooling is not None:  # off: 404, as on a worker without OPENAI_ROUTES
            routes += [
                Route(path, endpoint(kind), methods=["POST"]) for path, kind in POOLING_ROUTES
            ]
    return Starlette(routes=routes + session_routes(state, worker))


async def _pooled(
    state: State, worker: WorkerState, pooling: Pooling, kind: str, auth: Any, payload: Any
) -> Response:
    """Embeddings, rerank, score: counted as load while they run, as generation is."""
    cost = float(auth.get("cost") or 0.0)
    with state.lock:
        worker.pending.pop(auth.get("reqnum"), None)
        worker.inflight += 1
        worker.peak_inflight = max(worker.peak_inflight, worker.inflight)
        worker.active_cost += cost
    try:
        status, body = await pooling_answer(pooling, kind, payload)
    finally:
        with state.lock:
            worker.inflight -= 1
            worker.active_cost -= cost
    # json.dumps, not JSONResponse: a tampered answer may carry NaN, as a broken server's would.
    return Response(json.dumps(body, separators=_COMPACT), status, media_type="application/json")


# Says scripted turns on endpoints whose model is not the fake (SmolLM2).
_SCRIPT_VOICE = FakeModel()


def _play(
    worker: WorkerState, script: Script, req: GenRequest
) -> tuple[Response | None, int | None, Fault | None]:
    """Let the endpoint's script take ``req``: (an answer that replaces the model's, the turn's
    number, a stream fault the turn asks for). A turn's reply is put on ``req``."""
    try:
        taken = script.take(req)
    except ScriptError as exc:
        error = f"vast emulator script: {exc}"
        return JSONResponse({"error": error}, status_code=422), None, None
    if taken.error is not None:
        return JSONResponse({"error": taken.error}, status_code=422), None, None
    reply = taken.reply
    if isinstance(reply, Fail):
        if reply.status_only:
            return _STATUS_FAULT_RESPONSES[reply.fault](), taken.number, None
        return None, taken.number, reply.as_fault(worker.endpoint)
    if reply is not None:
        try:
            req.reply = resolve_reply(reply, req)
        except ScriptError as exc:
            error = f"vast emulator script, turn {taken.number}: {exc}"
            return JSONResponse({"error": error}, status_code=422), taken.number, None
    return None, taken.number, None


async def _whole_response(
    model: Model,
    req: GenRequest,
    result: GenResult,
    kind: str,
    payload: dict[str, Any],
    rid: str,
    fault: Fault | None,
    worker: WorkerState,
) -> Response:
    if fault is not None and fault.name == "slow_first_token":
        await asyncio.sleep(fault.delay)
    answer = await _whole_answer(model, req, result, kind, payload, rid, worker)
    body = json.dumps(answer).encode()
    if fault is None or fault.name == "slow_first_token":
        return Response(body, media_type="application/json")
    if fault.name == "stream_error":
        error = {"error": "emulated generation failure", "error_type": "generation"}
        return JSONResponse(error, status_code=500)
    if fault.name == "stream_cut":

        async def cut() -> AsyncIterator[bytes]:
            yield body[: len(body) // 2]
            raise StreamCut("emulated connection drop")

        return StreamingResponse(
            cut(), media_type="application/json", headers={"content-length": str(len(body))}
        )
    # stream_truncated / malformed_sse on a whole answer: a cut-off JSON document.
    return Response(body[: len(body) // 2], media_type="application/json")


# -- the impostor and the network ---------------------------------------------------------------


def impostor_app(state: State) -> ASGIApp:
    """An HTTPS server posing as a worker with a certificate from a foreign CA (foreign_ca).

    A client that verifies worker certificates never gets past the TLS handshake, so nothing is
    recorded; anything that does arrive is recorded (target ``"impostor"``) and refused loudly.
    """

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        request = Request(scope)
        state.record(
            Recorded(
                "impostor",
                scope["method"],
                scope["path"],
                _headers(request),
                body,
                client=_peer(request),
                status=500,
            )
        )
        response = JSONResponse(
            {
                "error": "impostor worker: the client sent a request to a server whose certificate "
                "it should have refused"
            },
            status_code=500,
        )
        await response(scope, receive, send)

    return app


def delayed(
    app: ASGIApp, delay: float, jitter: float = 0.0, rng: random.Random | None = None
) -> ASGIApp:
    """``app`` with ``delay`` seconds (± ``jitter`` × delay) added before each answer's headers.

    A stand-in for network latency between the client and a distant router or worker: the
    request is handled at once and its answer leaves late, so a stream's first byte is late and
    its tokens keep their spacing. Connection setup (TCP, TLS) is not delayed.
    """
    if delay <= 0:
        return app
    draw = (rng or random.Random()).uniform

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def late_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                await asyncio.sleep(max(0.0, delay * (1.0 + draw(-jitter, jitter))))
            await send(message)

        await app(scope, receive, late_send)

    return wrapped
