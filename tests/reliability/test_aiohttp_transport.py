"""The same fault matrix on the faster HTTP stack (``vast-llm[aiohttp]``: httpx's interface over
aiohttp): its exceptions must map onto the same retry decisions and typed errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from httpx_aiohttp import AiohttpTransport

from tests.reliability.scenarios import DEADLINE, OK, ONCE, expected, fault_for, run_case
from vast_llm import AsyncVastClient
from vast_llm.emulator import Emulator


@pytest.fixture
async def aiohttp_client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
        yield client


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("api", ["tgi", "openai"])
@pytest.mark.parametrize("name", list(ONCE))
async def test_fault_once_on_aiohttp(
    request: pytest.FixtureRequest,
    aiohttp_client: httpx.AsyncClient,
    api: str,
    stream: bool,
    name: str,
) -> None:
    emu: Emulator = request.getfixturevalue("tgi" if api == "tgi" else "openai_emu")
    fault = fault_for(name, persistent=False)
    outcome = await run_case(emu, "async", api, stream, fault, http_client=aiohttp_client)
    want = expected(name, stream, persistent=False)
    assert outcome.kind == want, f"{name}: expected {want}, got {outcome.kind}: {outcome.error}"
    assert outcome.elapsed < DEADLINE
    if outcome.kind == "WorkerStreamError" and stream:
        assert outcome.chunks == 2 and outcome.worker_requests == 1
    if want == OK:
        assert outcome.error is None


async def test_no_credentials_reach_workers_over_aiohttp(
    tgi: Emulator, aiohttp_client: httpx.AsyncClient
) -> None:
    async with AsyncVastClient(tgi.endpoint, api_key=tgi.api_key, base_url=tgi.base_url,
                               http_client=aiohttp_client) as client:  # fmt: skip
        await client.generate("x")
        async with client.stream("x") as stream:
            assert [c async for c in stream]
    for request in tgi.worker_requests:
        assert tgi.api_key not in request.text and "authorization" not in request.headers
