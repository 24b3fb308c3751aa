"""A scripted driver for the sans-I/O flow (``vast_llm._flow``): no sockets, no waiting.

The flow yields actions; :class:`Net` answers each one the way a test scripted it, as the real
drivers would: a ``Send`` to the autoscaler or a worker takes the next scripted :class:`Reply`
(or throws the scripted :class:`Fail`, in httpx's exception vocabulary, into the flow), a
``Sleep`` advances a :class:`FakeClock`, a ``GetKey`` goes through the real ``KeyStore`` (whose
key fetch is itself a flow, answered from the ``/pubkey/`` script), and a ``Notify`` is recorded.
The flow's :class:`~vast_llm._flow.Context` gets the fake clock, a fake wall clock and a seeded
(or deliberately extreme) random source, so every run is exact and takes microseconds.

Real signatures come from the shared vectors (``tests/data/signatures.json``).
"""

from __future__ import annotations

import functools
import itertools
import json
import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import load_vectors
from vast_llm import Backoff
from vast_llm._config import Settings
from vast_llm._flow import (
    Context,
    Flow,
    GetKey,
    Notify,
    ReadBody,
    Send,
    Sleep,
    request_flow,
    route_flow,
)
from vast_llm._keys import KeyStore
from vast_llm._progress import Progress
from vast_llm._signing import load_public_key, public_key_pem
from vast_llm._wire import Fetched, Req

VECTORS = load_vectors("signatures.json")
CASES: dict[str, dict[str, Any]] = {case["name"]: case for case in VECTORS["cases"]}
KEY_PEM: str = VECTORS["public_key_spki_pem"]
KEY = load_public_key(KEY_PEM)  # the key the vectors' valid cases are signed with
WORKER_URL = json.loads(CASES["g3-valid"]["route_answer"])["url"]
ROUTER = "https://router.test"
API_KEY = "flow-test-key-0123456789abcdef"
# The endpoint the shared signature vectors were made for (an assignment names it).
ENDPOINT = "Llama-2-70b-chat"
START = 1000.0  # the fake monotonic clock's reading when a test starts
WALL = 1_445_412_480.0  # the fake wall clock: Wed, 21 Oct 2015 07:28:00 GMT


@functools.cache
def other_key() -> rsa.RSAPublicKey:
    """A key that signed none of the vectors (an old key, or an impostor's)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()


def other_pem() -> str:
    return public_key_pem(other_key())


def answer(case: str = "g3-valid", **changes: Any) -> dict[str, Any]:
    """A route answer from the vectors, parsed; ``changes`` replace fields (g3 signs only the
    url, so a g3 answer with another ``reqnum`` or ``request_idx`` still verifies)."""
    body: dict[str, Any] = json.loads(CASES[case]["route_answer"])
    body.update(changes)
    return body


def settings(**changes: Any) -> Settings:
    """Settings as a client would resolve them, on the production defaults unless changed."""
    base = Settings(endpoint=ENDPOINT, api_key=API_KEY, base_url=ROUTER, backoff=Backoff())
    return replace(base, **changes)


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, start: float = START) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        assert seconds >= 0, f"time runs forward only (asked for {seconds})"
        self.now += seconds


class Extreme(random.Random):
    """A random source that always draws the low (``high=False``) or high end of a range, so
    the backoff schedule shows its bounds exactly."""

    def __init__(self, high: bool) -> None:
        super().__init__(0)
        self.high = high
        self.draws = 0

    def uniform(self, a: float, b: float) -> float:
        self.draws += 1
        return b if self.high else a


@dataclass
class Reply:
    """A scripted HTTP answer; ``after`` is how long it takes (the fake clock moves)."""

    status_code: int = 200
    content: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    after: float = 0.0
    read: list[int] = field(default_factory=list)  # the limits the flow read the body with

    def __post_init__(self) -> None:
        self.headers = httpx.Headers(self.headers)  # case-insensitive, as every stack's are

    def body(self, limit: int) -> bytes:
        self.read.append(limit)
        return self.content[:limit]


@dataclass
class Fail:
    """A scripted transport failure, thrown into the flow after ``after`` seconds."""

    error: Exception
    after: float = 0.0


Script = Reply | Fail


def ready(body: Mapping[str, Any] | None = None, *, after: float = 0.0) -> Reply:
    """``/route/`` assigned a worker (by default the vectors' signed g3 answer)."""
    return Reply(200, json.dumps(body if body is not None else answer()).encode(), after=after)


def waiting(status: Any = "1 Creating", request_idx: int | None = None) -> Reply:
    """``/route/`` has no ready worker yet."""
    body: dict[str, Any] = {"status": status}
    if request_idx is not None:
        body["request_idx"] = request_idx
    return Reply(200, json.dumps(body).encode())


def status(code: int, body: bytes | str = b"", **headers: str) -> Reply:
    """Any answer with status ``code`` (header names with ``_`` for ``-``)."""
    content = body.encode() if isinstance(body, str) else body
    return Reply(code, content, {k.replace("_", "-"): v for k, v in headers.items()})


def ok(body: bytes = b'{"generated_text": "hi"}') -> Reply:
    """A worker's answer that has started (2xx): the flow's last word."""
    return Reply(200, body)


def forever(item: Script) -> Iterator[Script]:
    return itertools.repeat(item)


@dataclass
class Sent:
    at: float  # the fake clock when it was sent
    request: Req

    @property
    def json(self) -> Any:
        return json.loads(self.request.content)


class ScriptExhausted(AssertionError):
    pass


class Net:
    """The autoscaler, its key and the workers, as scripts; the flow's driver.

    ``routes``, ``workers`` and ``pubkeys`` are consumed in order (``forever(x)`` repeats).
    Everything the flow did is recorded: ``trace`` (one word per action, in order), ``sent``,
    ``sleeps``, ``events`` and ``key_asks``.
    """

    def __init__(
        self,
        s: Settings | None = None,
        *,
        routes: Iterable[Script] = (),
        workers: Iterable[Script] = (),
        pubkeys: Iterable[Script] | None = None,
        rng: random.Random | None = None,
        seed: int = 7,
    ) -> None:
        self.settings = s or settings()
        self.clock = FakeClock()
        self.ctx = Context(clock=self.clock, rng=rng or random.Random(seed), wall=lambda: WALL)
        self.keys = KeyStore(self.settings, self.ctx)
        self._routes = iter(routes)
        self._workers = iter(workers)
        self._pubkeys = iter(
            pubkeys if pubkeys is not None else forever(Reply(200, KEY_PEM.encode()))
        )
        self.trace: list[str] = []
        self.sent: list[Sent] = []
        self.sleeps: list[float] = []
        self.events: list[Progress] = []
        self.key_asks: list[rsa.RSAPublicKey | None] = []

    # -- what happened ---------------------------------------------------------------------

    def _sent_to(self, kind: str) -> list[Sent]:
        return [sent for sent in self.sent if _kind(sent.request) == kind]

    @property
    def routes(self) -> list[Sent]:
        return self._sent_to("route")

    @property
    def workers(self) -> list[Sent]:
        return self._sent_to("worker")

    @property
    def pubkeys(self) -> list[Sent]:
        return self._sent_to("pubkey")

    @property
    def elapsed(self) -> float:
        return self.clock.now - START

    # -- driving ---------------------------------------------------------------------------

    def run(self, flow: Flow[Any]) -> Any:
        """Drive ``flow`` to its end, as ``_drive.run_sync`` does; returns what it returns."""
        value: Any = None
        error: Exception | None = None
        try:
            while True:
                try:
                    action = flow.throw(error) if error is not None else flow.send(value)
                except StopIteration as stop:
                    return stop.value
                value, error = None, None
                try:
                    value = self.answer(action)
                except ScriptExhausted:
                    raise
                except Exception as exc:
                    error = exc
        finally:
            flow.close()

    def answer(self, action: Any) -> Any:
        if isinstance(action, Send):
            return self._send(action)
        if isinstance(action, ReadBody):
            self.trace.append("read")
            return action.response.body(action.limit)
        if isinstance(action, Sleep):
            self.trace.append("sleep")
            self.sleeps.append(action.seconds)
            self.clock.advance(action.seconds)
            return None
        if isinstance(action, Notify):
            self.trace.append(action.event.kind)
            self.events.append(action.event)
            return None
        assert isinstance(action, GetKey), action
        self.trace.append("getkey" if action.stale is None else "getkey(stale)")
        self.key_asks.append(action.stale)
        return self.keys.get(self.run, action.stale)

    def _send(self, action: Send) -> Any:
        request = action.request
        kind = _kind(request)
        self.trace.append(kind)
        self.sent.append(Sent(self.clock.now, request))
        queue = {"route": self._routes, "worker": self._workers, "pubkey": self._pubkeys}[kind]
        item = next(queue, None)
        if item is None:
            raise ScriptExhausted(f"the flow sent one {kind} request more than scripted")
        self.clock.advance(item.after)
        if isinstance(item, Fail):
            raise item.error
        if action.read_limit is None:
            return item  # opened: status and headers; the body is read on request
        return Fetched(item.status_code, item.headers, item.body(action.read_limit))

    # -- the flows -------------------------------------------------------------------------

    def request(
        self,
        s: Settings | None = None,
        *,
        path: str = "/generate",
        payload: Any = None,
        cost: float = 256.0,
        stream: bool = False,
        headers: Mapping[str, str] | None = None,
        observed: bool = False,
    ) -> Any:
        """One ``request_flow`` to its end: (the opened worker answer, RouteInfo)."""
        return self.run(
            request_flow(
                s or self.settings,
                self.ctx,
                path=path,
                payload={"inputs": "hi"} if payload is None else payload,
                cost=cost,
                stream=stream,
                headers=headers,
                observed=observed,
            )
        )

    def route(self, cost: float = 256.0, *, observed: bool = False) -> Any:
        """One ``route_flow`` to its end: an Assignment."""
        return self.run(route_flow(self.settings, self.ctx, cost, observed=observed))


def _kind(request: Req) -> str:
    if request.worker:
        return "worker"
    if request.url.endswith("/pubkey/"):
        return "pubkey"
    assert request.url.endswith("/route/"), request.url
    return "route"
