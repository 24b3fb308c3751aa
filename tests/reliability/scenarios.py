"""Reliability scenarios shared by the tests and by tools/reliability_report.py.

- The fault matrix: every fault the emulator can inject, once ("strikes once") and, for the
  ones the client retries, for good ("persistent"), × sync and async × TGI and OpenAI ×
  streaming and not, with the outcome each must have within the deadline.
- The load scenario: many concurrent requests with a share of random faults.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import os
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.conftest import FAST, Driver
from tests.reliability import hostile as h
from vast_llm import (
    AsyncVastClient,
    EndpointStopped,
    NoWorkerReady,
    RouteError,
    SignatureError,
    VastConnectionError,
    VastError,
    WorkerError,
    WorkerStreamError,
)
from vast_llm._signing import sign
from vast_llm.emulator import FAULTS, Emulator, Fault

OK = "recovered"
DEADLINE = 5.0
SETTINGS: dict[str, Any] = {
    "deadline": DEADLINE,
    "route_timeout": 0.3,
    "timeout": 2.0,
    "max_retries": 3,
    "backoff": FAST,
}

# fault -> (outcome of a whole answer, outcome of a streamed answer) when it strikes once.
ONCE: dict[str, tuple[str, str]] = {
    "route_429": (OK, OK),
    "route_500": (OK, OK),
    "route_503": (OK, OK),
    "route_timeout": (OK, OK),
    "route_error_msg": ("RouteError", "RouteError"),
    "route_garbage": (OK, OK),
    "not_ready": (OK, OK),
    "stopped": ("EndpointStopped", "EndpointStopped"),
    "bad_signature": ("SignatureError", "SignatureError"),
    "missing_signature": ("SignatureError", "SignatureError"),
    "foreign_key": ("SignatureError", "SignatureError"),
    "tampered_url": ("SignatureError", "SignatureError"),
    "tampered_reqnum": (OK, OK),  # g3 signs the url only: nothing at stake, the worker agrees
    "tampered_cost": (OK, OK),
    "pubkey_down": (OK, OK),  # the key fetch is retried
    "pubkey_garbage": ("SignatureError", "SignatureError"),
    "worker_refuse": (OK, OK),
    "worker_401": ("WorkerError", "WorkerError"),
    "worker_422": ("WorkerError", "WorkerError"),
    "worker_429": (OK, OK),
    "worker_500": (OK, OK),
    "slow_first_token": (OK, OK),
    "stream_cut": ("WorkerStreamError", "WorkerStreamError"),
    "stream_truncated": ("WorkerError", "WorkerStreamError"),
    "malformed_sse": ("WorkerError", "WorkerStreamError"),
    "stream_error": (OK, "WorkerStreamError"),  # a whole answer gets a 500 before any output
    "session_lost": (OK, OK),  # strikes only calls made in a session: these are not
}
# Faults the client retries, made permanent: the typed error it must end with.
PERSISTENT: dict[str, str] = {
    "route_429": "RouteError",
    "route_500": "RouteError",
    "route_503": "RouteError",
    "route_timeout": "RouteError",
    "route_garbage": "RouteError",
    "not_ready": "NoWorkerReady",
    "pubkey_down": "SignatureError",
    "worker_refuse": "VastConnectionError",
    "worker_429": "WorkerError",
    "worker_500": "WorkerError",
}
ERRORS = {
    cls.__name__: cls
    for cls in (
        RouteError,
        EndpointStopped,
        NoWorkerReady,
        SignatureError,
        WorkerError,
        WorkerStreamError,
        VastConnectionError,
    )
}

# foreign_ca needs HTTPS workers (Emulator(tls=True)) and a client that trusts their CA
# (worker_ca): it joins the matrix with the client's TLS wiring (issue 12).
NEEDS_TLS = {"foreign_ca"}
assert set(ONCE) == set(FAULTS) - NEEDS_TLS, "every fault the emulator knows is in the matrix"
# Their outcomes, on HTTPS workers with a client trusting the emulator's CA (the reliability
# report runs them so; tests/reliability/test_production.py on every driver).
TLS_ONCE: dict[str, tuple[str, str]] = {
    "foreign_ca": ("WorkerCertificateError", "WorkerCertificateError"),
}
assert set(TLS_ONCE) == NEEDS_TLS


@dataclass
class Outcome:
    kind: str  # "recovered" or the error class name
    elapsed: float
    worker_requests: int
    chunks: int = 0
    error: VastError | None = None


def fault_for(name: str, persistent: bool) -> Fault:
    delay = {"route_timeout": 1.0, "slow_first_token": 0.3}.get(name, 2.0)
    return Fault(name, times=None if persistent else 1, delay=delay, after=2)


async def run_case(
    emu: Emulator, flavor: str, api: str, stream: bool, fault: Fault, http_client: Any = None
) -> Outcome:
    """One request with one fault active; returns what happened."""
    settings = dict(SETTINGS, api=api)
    if http_client is not None:
        settings["http_client"] = http_client
    if fault.times is None and fault.name == "not_ready":
        settings["deadline"] = 1.0
    driver = Driver(flavor, emu, **settings)
    emu.inject(fault)
    before = len(emu.worker_requests)
    got: list[Any] = []
    started = time.monotonic()
    kind, error = OK, None
    try:
        if stream:
            await driver.stream_into("reliability", got, max_tokens=6)
        elif api == "tgi":
            await driver.generate("reliability", max_tokens=6)
        else:
            await driver.chat([{"role": "user", "content": "reliability"}], max_tokens=6)
    except VastError as exc:
        kind, error = type(exc).__name__, exc
    finally:
        if http_client is None:
            await driver.aclose()
        emu.clear_faults()
    return Outcome(
        kind,
        time.monotonic() - started,
        len(emu.worker_requests) - before,
        len([c for c in got if c.text]),
        error,
    )


def expected(name: str, stream: bool, persistent: bool) -> str:
    return PERSISTENT[name] if persistent else ONCE[name][1 if stream else 0]


def cases() -> list[tuple[str, bool]]:
    """(fault name, persistent) pairs of the matrix."""
    return [(name, False) for name in ONCE] + [(name, True) for name in PERSISTENT]


# -- load with faults -----------------------------------------------------------------------

LOAD_FAULTS = [
    "route_429",
    "route_500",
    "worker_500",
    "worker_429",
    "worker_refuse",
    "not_ready",
    "stream_cut",
    "stream_error",
    "malformed_sse",
    "stream_truncated",
    "slow_first_token",
    "worker_422",
]


@dataclass
class LoadResult:
    requests: int
    elapsed: float
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    slowest: float = 0.0
    over_deadline: int = 0
    faults_injected: int = 0
    sent_twice_after_first_byte: int = 0
    client_sockets_before: int = 0
    client_sockets_idle: int = 0  # after the load, client still open: its keep-alive pool
    client_sockets_after: int = 0
    tasks_before: int = 0
    tasks_after: int = 0
    examples: dict[str, str] = field(default_factory=dict)
    # The share of the load sent to the hostile endpoint (see HostileEndpoint), when there is one.
    hostile: HostileResult | None = None
    # Peak growth of this process's resident memory while the load ran (MiB; emulator,
    # hostile servers and clients alike, all in this process), sampled every few ms.
    peak_rss_growth_mib: float = 0.0


@dataclass
class HostileResult:
    requests: int
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    met: collections.Counter[str] = field(default_factory=collections.Counter)  # worker kinds
    slowest: float = 0.0
    over_deadline: int = 0
    sent_again_after_an_answer: int = 0
    examples: dict[str, str] = field(default_factory=dict)


def emulator_ports(emu: Emulator) -> set[int]:
    """The router's and every worker's port."""
    return {int(emu.base_url.rsplit(":", 1)[1])} | {
        int(url.rsplit(":", 1)[1]) for url in emu.worker_urls()
    }


def _client_sockets(ports: set[int]) -> int:
    import psutil

    return sum(
        1
        for c in psutil.Process(os.getpid()).net_connections("tcp")
        if c.raddr and c.raddr.port in ports and c.status == "ESTABLISHED"
    )


# -- hostile workers under load (issue 14) ---------------------------------------------------

# Each route answer of the hostile endpoint assigns the next of these workers in turn. What
# each does to a whole answer / a stream, and what the client must end with:
HOSTILE_KINDS: dict[str, str] = {
    "healthy": "answers correctly (3 tokens)",
    "bomb_500": "500 with a gzip-in-gzip body of 64 MiB decoded (re-routed; the error is cut)",
    "bomb_200": "200 with a zstd body of 64 MiB decoded (gzip-in-gzip without zstandard), as "
    "JSON / as an event stream",
    "trickle_headers": "a status line, then a byte every 50 ms, never ending its headers",
    "trickle_body": "headers, then a byte of body every 50 ms / keep-alive comments only",
    "silent": "accepts, reads the request, sends nothing",
    "endless": "a 32 MiB answer sent as fast as it is read / tokens every 5 ms, forever",
    "nul_header": "a 200 with a NUL byte in a header (malformed HTTP)",
    "not_http": "'SSH-2.0-OpenSSH_9.6' instead of HTTP, then closes",
    "unbounded": "JSON nested 100,000 deep / one 64 MiB event-stream line",
}
# Kinds the client may re-route away from (a 5xx before any output); meeting any other, the
# worker has the request and has answered something: nothing may be sent after it.
HOSTILE_RETRYABLE = {"bomb_500"}
# Short bounds, so the load with hostile workers takes seconds; the small caps of the hostile
# suite, so memory tells a bomb from the load (every in-flight bomb holds up to its cap).
HOSTILE_SETTINGS: dict[str, Any] = {
    "deadline": 8.0,
    "timeout": 2.0,
    "route_timeout": 4.0,
    "max_retries": 2,
    "backoff": FAST,
    "max_answer_bytes": 1 << 20,
    "max_event_bytes": 256 << 10,
}
HOSTILE_OUTCOMES = {OK, "VastTimeout", "WorkerError", "WorkerStreamError"}


def _hostile_worker(kind: str, record: list[tuple[int, str]]) -> h.Handler:
    """A worker doing ``kind`` to every request (see HOSTILE_KINDS); records (request_idx, kind)
    for each request that reaches it."""
    bomb_200 = "zstd" if _has_zstd() else "gzip, gzip"

    async def handle(conn: h.Conn) -> None:
        while True:
            request = await conn.request()
            if request is None:
                return
            try:
                idx = int(request.json()["auth_data"]["request_idx"])
            except (ValueError, KeyError, TypeError):
                idx = -1
            record.append((idx, kind))
            stream = request.path.endswith("_stream")
            sse = "text/event-stream"
            if kind == "healthy":
                body = h.token(1) + h.token(2) + h.token(3, final=True)
                await conn.send(
                    h.sse_head(b"Content-Length: %d\r\n" % len(body)) + body
                    if stream
                    else h.response(200, h.TGI_ANSWER)
                )
                continue
            if kind in ("bomb_500", "bomb_200"):
                coding = "gzip, gzip" if kind == "bomb_500" else bomb_200
                status = 500 if kind == "bomb_500" else 200
                kind_of = sse if stream and status == 200 else "application/json"
                extra = f"Content-Encoding: {coding}\r\n".encode()
                await conn.send(h.response(status, h.bomb(coding, 64 * h.MiB), kind_of, extra))
                continue
            if kind == "trickle_headers":
                await conn.send(b"HTTP/1.1 200 OK\r\n")
                await h.forever(b"x", 0.05)(conn)
            elif kind == "trickle_body":
                if stream:
                    await conn.send(h.sse_head())
                    await h.forever(b": ping\n", 0.05)(conn)
                else:
                    await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                    await h.forever(b"x", 0.05)(conn)
            elif kind == "silent":
                await h.silent(conn)
            elif kind == "endless":
                if stream:
                    await conn.send(h.sse_head())
                    await h.forever(h.token, 0.005)(conn)
                else:
                    size = 32 * h.MiB
                    await conn.send(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n[" % (size + 2)
                    )
                    await h.flood(b" " * (64 << 10), size)(conn)
            elif kind == "nul_header":
                await conn.send(b"HTTP/1.1 200 OK\r\nX-Bad: a\0b\r\nContent-Length: 2\r\n\r\n{}")
                continue
            elif kind == "not_http":
                await conn.send(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
            elif kind == "unbounded":
                if stream:
                    await conn.send(h.sse_head() + b"data: ")
                    await h.flood(b"x" * (64 << 10), 64 * h.MiB)(conn)
                else:
                    await conn.send(h.response(200, b"[" * 100_000 + b"]" * 100_000))
                    continue
            return  # the kinds that do not end their answer close the connection after

    return handle


def _has_zstd() -> bool:
    from vast_llm._decode import supported

    return "zstd" in supported()


class HostileEndpoint:
    """A second endpoint, whose router (signing with the hostile suite's key) assigns each route
    call the next worker of :data:`HOSTILE_KINDS`, and keeps ``request_idx`` as Vast's does: a
    new one for a new request, the one given for a request that comes back (a re-route)."""

    def __init__(self, net: h.Net) -> None:
        self.net = net
        net.record = False  # the workers keep what the checks need: (request_idx, kind)
        self.record: list[tuple[int, str]] = []
        self.workers = {
            kind: net.worker(_hostile_worker(kind, self.record)) for kind in HOSTILE_KINDS
        }
        self._turn = itertools.count()
        self._idx = itertools.count(1)
        # g3 signs the worker's URL only: one signature per worker, made once (an RSA signature
        # per route call would be this router's own load on the process under test).
        self._signed = {kind: sign(h.KEY, "g3", {"url": w.url}) for kind, w in self.workers.items()}
        self.router = net.server(self._route)

    async def _route(self, conn: h.Conn) -> None:
        kinds = list(self.workers)
        while True:
            request = await conn.request()
            if request is None:
                return
            if request.path == "/pubkey/":
                await conn.send(h.response(200, h.PEM.encode(), "text/plain"))
                continue
            asked = request.json().get("request_idx") or 0
            turn = next(self._turn)
            kind = kinds[turn % len(kinds)]
            body: dict[str, Any] = {
                "url": self.workers[kind].url,
                "endpoint": h.ENDPOINT,
                "reqnum": turn + 1,
                "request_idx": asked or next(self._idx),
                "cost": 4.0,
                "signature": self._signed[kind],
            }
            await conn.send(h.response(200, json.dumps(body).encode()))

    def ports(self) -> set[int]:
        return {self.router.port} | {w.port for w in self.workers.values()}

    def client(self, http_client: Any = None) -> AsyncVastClient:
        extra = {"http_client": http_client} if http_client is not None else {}
        return AsyncVastClient(
            h.ENDPOINT,
            api_key=h.API_KEY,
            base_url=self.router.url,
            public_key=h.PEM,
            **HOSTILE_SETTINGS,
            **extra,
        )

    def sent_after_an_answer(self) -> int:
        """Logical requests (by request_idx) sent to a worker again after a worker had the
        request and answered something other than a retryable status."""
        by_idx: dict[int, list[str]] = collections.defaultdict(list)
        for idx, kind in self.record:
            by_idx[idx].append(kind)
        return sum(
            1 for kinds in by_idx.values() if any(k not in HOSTILE_RETRYABLE for k in kinds[:-1])
        )


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def rss_peak(every: float = 0.005) -> Iterator[list[int]]:
    """Yields [peak growth] (bytes) of this process's RSS over the block, sampled in a thread.

    In a fresh process this is the load's memory. In a long one (a test worker) it can
    understate: memory freed by earlier work is reused without RSS growing. It cannot
    overstate, so a bound checked on it holds. (tracemalloc would be exact for what Python
    allocates, but slows a 1,000-request load about threefold.)
    """
    base = _rss()
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(every):
            peak[0] = max(peak[0], _rss() - base)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()
        peak[0] = max(peak[0], _rss() - base)


async def run_load(
    emu: Emulator,
    n: int = 1000,
    fault_rate: float = 0.1,
    seed: int = 7,
    http_client: Any = None,
    hostile: HostileEndpoint | None = None,
    hostile_share: float = 0.1,
) -> LoadResult:
    """``n`` concurrent async requests (half streamed), ``fault_rate`` of them meeting a fault;
    ``http_client`` (e.g. an ``aiohttp.ClientSession``) is used as it is and left open.

    With ``hostile``, ``hostile_share`` of the ``n`` requests go, at the same time, to that
    :class:`HostileEndpoint` (raw-socket workers: bombs, tricklers, malformed answers) through a
    second client with :data:`HOSTILE_SETTINGS`, on the same ``http_client``; the emulator's
    faults strike ``fault_rate`` of the rest."""
    rng = random.Random(seed)
    ports = emulator_ports(emu)
    n_hostile = int(n * hostile_share) if hostile is not None else 0
    result = LoadResult(requests=n, elapsed=0.0)
    if n_hostile:
        result.hostile = HostileResult(requests=n_hostile)
    result.tasks_before = len(asyncio.all_tasks())
    result.client_sockets_before = _client_sockets(ports)
    faults = [
        Fault(rng.choice(LOAD_FAULTS), delay=0.2, after=2)
        for _ in range(int((n - n_hostile) * fault_rate))
    ]
    for fault in faults:
        emu.inject(fault)
    result.faults_injected = len(faults)
    settings = dict(SETTINGS, deadline=30.0, timeout=10.0, route_timeout=10.0)
    if http_client is not None:
        settings["http_client"] = http_client
    client = AsyncVastClient(emu.endpoint, api_key=emu.api_key, base_url=emu.base_url, **settings)
    hostile_at = set(rng.sample(range(n), n_hostile))

    bad = hostile.client(http_client) if hostile is not None else None

    async def one(i: int) -> tuple[bool, str, float]:
        to_hostile = i in hostile_at
        target = bad if to_hostile and bad is not None else client
        examples = result.hostile.examples if to_hostile and result.hostile else result.examples
        started = time.monotonic()
        await asyncio.sleep(0)
        try:
            if i % 2:
                async with target.stream(f"load {i}", max_tokens=4) as stream:
                    async for _ in stream:
                        pass
            else:
                await target.generate(f"load {i}", max_tokens=4)
            kind = OK
        except VastError as exc:
            kind = type(exc).__name__
            examples.setdefault(kind, str(exc)[:200])
        return to_hostile, kind, time.monotonic() - started

    started = time.monotonic()
    with rss_peak() as peak:
        try:
            done = await asyncio.gather(*(one(i) for i in range(n)))
            result.client_sockets_idle = _client_sockets(ports)
        finally:
            await client.aclose()
            if bad is not None:
                await bad.aclose()
            emu.clear_faults()
    result.peak_rss_growth_mib = peak[0] / (1 << 20)
    result.elapsed = time.monotonic() - started
    for to_hostile, kind, seconds in done:
        if to_hostile and result.hostile is not None:
            result.hostile.outcomes[kind] += 1
            result.hostile.slowest = max(result.hostile.slowest, seconds)
            bound = HOSTILE_SETTINGS["deadline"] + HOSTILE_SETTINGS["timeout"]
            result.hostile.over_deadline += seconds > bound
            continue
        result.outcomes[kind] += 1
        result.slowest = max(result.slowest, seconds)
        result.over_deadline += seconds > settings["deadline"] + settings["timeout"]
    if hostile is not None and result.hostile is not None:
        result.hostile.met.update(kind for _, kind in hostile.record)
        result.hostile.sent_again_after_an_answer = hostile.sent_after_an_answer()
    # A logical request keeps its request_idx across re-routes: at most one of its worker
    # calls may have been answered (200) — anything else means work was sent twice.
    answered = collections.Counter(
        json.loads(r.text)["auth_data"]["request_idx"]
        for r in emu.worker_requests
        if r.status == 200
    )
    result.sent_twice_after_first_byte = sum(1 for count in answered.values() if count > 1)
    await asyncio.sleep(0.2)  # let the closed connections settle
    if hostile is not None:
        ports |= hostile.ports()
    result.client_sockets_after = _client_sockets(ports)
    result.tasks_after = len(asyncio.all_tasks())
    return result
