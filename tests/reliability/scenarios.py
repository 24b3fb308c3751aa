"""Reliability scenarios shared by the tests and by tools/reliability_report.py.

- The fault matrix: every fault the emulator can inject, once ("strikes once") and, for the
  ones the client retries, for good ("persistent"), × sync and async × TGI and OpenAI ×
  streaming and not, with the outcome each must have within the deadline.
- The load scenario: many concurrent requests with a share of random faults.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

from tests.conftest import FAST, Driver
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
ERRORS = {cls.__name__: cls for cls in (RouteError, EndpointStopped, NoWorkerReady,
          SignatureError, WorkerError, WorkerStreamError, VastConnectionError)}  # fmt: skip

# foreign_ca needs HTTPS workers (Emulator(tls=True)) and a client that trusts their CA
# (worker_ca): it joins the matrix with the client's TLS wiring (issue 12).
NEEDS_TLS = {"foreign_ca"}
assert set(ONCE) == set(FAULTS) - NEEDS_TLS, "every fault the emulator knows is in the matrix"


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
    return Outcome(kind, time.monotonic() - started, len(emu.worker_requests) - before,
                   len([c for c in got if c.text]), error)  # fmt: skip


def expected(name: str, stream: bool, persistent: bool) -> str:
    return PERSISTENT[name] if persistent else ONCE[name][1 if stream else 0]


def cases() -> list[tuple[str, bool]]:
    """(fault name, persistent) pairs of the matrix."""
    return [(name, False) for name in ONCE] + [(name, True) for name in PERSISTENT]


# -- load with faults -----------------------------------------------------------------------

LOAD_FAULTS = [
    "route_429", "route_500", "worker_500", "worker_429", "worker_refuse", "not_ready",
    "stream_cut", "stream_error", "malformed_sse", "stream_truncated", "slow_first_token",
    "worker_422",
]  # fmt: skip


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


def emulator_ports(emu: Emulator) -> set[int]:
    """The router's and every worker's port."""
    return {int(emu.base_url.rsplit(":", 1)[1])} | {
        int(url.rsplit(":", 1)[1]) for url in emu.worker_urls()
    }


def _client_sockets(ports: set[int]) -> int:
    import psutil

    return sum(
        1 for c in psutil.Process(os.getpid()).net_connections("tcp")
        if c.raddr and c.raddr.port in ports and c.status == "ESTABLISHED"
    )  # fmt: skip


async def run_load(
    emu: Emulator, n: int = 1000, fault_rate: float = 0.1, seed: int = 7, http_client: Any = None
) -> LoadResult:
    """``n`` concurrent async requests (half streamed), ``fault_rate`` of them meeting a fault;
    ``http_client`` (e.g. an ``aiohttp.ClientSession``) is used as it is and left open."""
    rng = random.Random(seed)
    ports = emulator_ports(emu)
    result = LoadResult(requests=n, elapsed=0.0)
    result.tasks_before = len(asyncio.all_tasks())
    result.client_sockets_before = _client_sockets(ports)
    faults = [
        Fault(rng.choice(LOAD_FAULTS), delay=0.2, after=2) for _ in range(int(n * fault_rate))
    ]
    for fault in faults:
        emu.inject(fault)
    result.faults_injected = len(faults)
    settings = dict(SETTINGS, deadline=30.0, timeout=10.0, route_timeout=10.0)
    if http_client is not None:
        settings["http_client"] = http_client
    client = AsyncVastClient(emu.endpoint, api_key=emu.api_key, base_url=emu.base_url,
                             **settings)  # fmt: skip

    async def one(i: int) -> tuple[str, float]:
        started = time.monotonic()
        await asyncio.sleep(0)
        try:
            if i % 2:
                async with client.stream(f"load {i}", max_tokens=4) as stream:
                    async for _ in stream:
                        pass
            else:
                await client.generate(f"load {i}", max_tokens=4)
            kind = OK
        except VastError as exc:
            kind = type(exc).__name__
            result.examples.setdefault(kind, str(exc)[:200])
        return kind, time.monotonic() - started

    started = time.monotonic()
    try:
        done = await asyncio.gather(*(one(i) for i in range(n)))
        result.client_sockets_idle = _client_sockets(ports)
    finally:
        await client.aclose()
        emu.clear_faults()
    result.elapsed = time.monotonic() - started
    for kind, seconds in done:
        result.outcomes[kind] += 1
        result.slowest = max(result.slowest, seconds)
        result.over_deadline += seconds > settings["deadline"] + settings["timeout"]
    # A logical request keeps its request_idx across re-routes: at most one of its worker
    # calls may have been answered (200) — anything else means work was sent twice.
    answered = collections.Counter(
        json.loads(r.text)["auth_data"]["request_idx"]
        for r in emu.worker_requests if r.status == 200
    )  # fmt: skip
    result.sent_twice_after_first_byte = sum(1 for count in answered.values() if count > 1)
    await asyncio.sleep(0.2)  # let the closed connections settle
    result.client_sockets_after = _client_sockets(ports)
    result.tasks_after = len(asyncio.all_tasks())
    return result
