"""The fault matrix over real sockets: every fault the emulator injects, once and (for those the
client retries) for good, ends in its expected outcome (recovered, or a specific typed error)
within the deadline, on the four HTTP stacks that drive the flow:

- ``sync`` and ``async``: ``VastClient`` and ``AsyncVastClient`` on their own httpx pools;
- ``aiohttp``: ``AsyncVastClient(http_client=aiohttp.ClientSession())``, the flow driven on
  aiohttp directly (``vast_llm._aiohttp``);
- ``httpx-aiohttp``: httpx's interface over aiohttp (``httpx_aiohttp.AiohttpTransport``).

What to do about each fault is the flow's decision, proven once per decision without sockets in
tests/core/test_flow.py. What this matrix proves is that each stack carries the decision out:
that its own shape of a failure (a timeout, a refused or dropped connection, a body cut or
malformed mid-read) reaches the flow and the stream readers as the same httpx exception. So the
faults that fail at that level run on every driver, whole and streamed, on both model APIs; every
other row of the matrix runs once, its driver, API and mode rotating so each driver serves a
share of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from tests.reliability.scenarios import DEADLINE, ERRORS, OK, cases, expected, fault_for, run_case
from vast_llm.emulator import Emulator

DRIVERS = ("sync", "async", "aiohttp", "httpx-aiohttp")
APIS = ("tgi", "openai")
# Faults whose shape differs from one HTTP stack to the next (each stack raises its own
# timeout, connection and payload errors, which must translate to the same httpx exception).
ON_EVERY_DRIVER = frozenset(
    {
        "route_timeout",
        "worker_refuse",
        "slow_first_token",
        "stream_cut",
        "stream_truncated",
        "malformed_sse",
        "stream_error",
    }
)
# Where a stack names a failure differently but the outcome is the same typed family:
# httpx-aiohttp 0.2 maps aiohttp's ClientConnectorError (connection refused) to
# httpx.ConnectTimeout (the first match in its map wins over the subclass), so a worker that
# refuses every connection ends in VastTimeout, a VastConnectionError, rather than in
# VastConnectionError itself. The flow retries both alike; only the wording differs.
STACK_NAMES = {("worker_refuse", True, "httpx-aiohttp"): "VastTimeout"}
SIGNATURE_FAULTS = frozenset(
    {"bad_signature", "missing_signature", "foreign_key", "tampered_url", "pubkey_garbage"}
)


@dataclass(frozen=True)
class Cell:
    name: str
    persistent: bool
    driver: str
    api: str
    stream: bool

    @property
    def id(self) -> str:
        mode = "stream" if self.stream else "whole"
        when = "always" if self.persistent else "once"
        return f"{self.name}-{when}-{self.driver}-{self.api}-{mode}"


def matrix() -> list[Cell]:
    """Every row of the matrix at least once; the stack-shaped faults on every driver."""
    cells: list[Cell] = []
    turn = 0
    for name, persistent in cases():
        if name in ON_EVERY_DRIVER and not persistent:
            for i, driver in enumerate(DRIVERS):
                for stream in (False, True):
                    # each driver meets both APIs, and each API/mode pair two drivers
                    cells.append(Cell(name, persistent, driver, APIS[(i + stream) % 2], stream))
        else:
            driver = DRIVERS[turn % len(DRIVERS)]
            api = APIS[(turn // len(DRIVERS)) % 2]
            stream = (turn // (2 * len(DRIVERS))) % 2 == 1
            cells.append(Cell(name, persistent, driver, api, stream))
            turn += 1
    return cells


CELLS = matrix()


@asynccontextmanager
async def http_client(driver: str) -> AsyncIterator[Any]:
    """The HTTP client a driver brings (None: the vast_llm client's own httpx pools)."""
    if driver == "aiohttp":
        import aiohttp

        async with aiohttp.ClientSession() as session:
            yield session
    elif driver == "httpx-aiohttp":
        import httpx
        from httpx_aiohttp import AiohttpTransport

        async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
            yield client
    else:
        yield None


def test_every_row_runs_and_every_driver_serves_a_share() -> None:
    assert {(c.name, c.persistent) for c in CELLS} == set(cases())
    for driver in DRIVERS:
        mine = [c for c in CELLS if c.driver == driver]
        assert {c.api for c in mine} == set(APIS) and {c.stream for c in mine} == {False, True}
        assert {c.name for c in mine} >= ON_EVERY_DRIVER
        assert any(c.persistent for c in mine)


@pytest.mark.parametrize("cell", CELLS, ids=[c.id for c in CELLS])
async def test_fault(request: pytest.FixtureRequest, cell: Cell) -> None:
    emu: Emulator = request.getfixturevalue("tgi" if cell.api == "tgi" else "openai_emu")
    flavor = "sync" if cell.driver == "sync" else "async"
    async with http_client(cell.driver) as client:
        outcome = await run_case(
            emu, flavor, cell.api, cell.stream, fault_for(cell.name, cell.persistent), client
        )
    want = expected(cell.name, cell.stream, cell.persistent)
    named = STACK_NAMES.get((cell.name, cell.persistent, cell.driver), want)
    assert outcome.kind == named, (
        f"{cell.id}: expected {named}, got {outcome.kind}: {outcome.error}"
    )
    # aiohttp's connector may add a last connect attempt to a persistent fault
    slack = 1.0 if cell.persistent and client is not None else 0.0
    assert outcome.elapsed < DEADLINE + slack
    if want == OK:
        assert outcome.error is None
    else:
        assert isinstance(outcome.error, ERRORS[want])
        assert emu.api_key not in str(outcome.error)
    if outcome.kind == "WorkerStreamError" and cell.stream:
        # Tokens were handed out before the failure, and the request was not sent again.
        assert outcome.chunks == 2 and outcome.worker_requests == 1
    if cell.name in SIGNATURE_FAULTS:
        assert outcome.worker_requests == 0  # strict: no unverified worker was contacted
