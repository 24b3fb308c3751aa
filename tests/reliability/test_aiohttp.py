"""aiohttp, both ways it can carry the flow (``vast-llm[aiohttp]``):

- ``native``: ``AsyncVastClient(http_client=aiohttp.ClientSession())``, the flow driven on
  aiohttp directly (``vast_llm._aiohttp``);
- ``httpx-aiohttp``: httpx's interface over aiohttp (``httpx_aiohttp.AiohttpTransport``).

aiohttp raises its own exceptions; each must map onto the same retry decision and typed error
as on httpx, over real sockets to the emulator. The fault matrix runs on both (its stack-shaped
faults on every driver: test_fault_matrix.py); here is what is particular to aiohttp: sessions
that carry credentials, sessions left to their owner, abandoned streams, aiohttp's timeouts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import pytest
from httpx_aiohttp import AiohttpTransport

from vast_llm import (
    AsyncVastClient,
    ConfigError,
    VastConnectionError,
    VastTimeout,
)
from vast_llm.emulator import Emulator, Fault


@pytest.fixture(params=["native", "httpx-aiohttp"])
async def aiohttp_client(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    if request.param == "native":
        async with aiohttp.ClientSession() as session:
            yield session
    else:
        async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
            yield client


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_no_credentials_reach_workers_over_aiohttp(
    tgi: Emulator, aiohttp_client: Any
) -> None:
    async with AsyncVastClient(
        tgi.endpoint, api_key=tgi.api_key, base_url=tgi.base_url, http_client=aiohttp_client
    ) as client:
        await client.generate("x")
        async with client.stream("x") as stream:
            assert [c async for c in stream]
    for request in tgi.worker_requests:
        assert tgi.api_key not in request.text and "authorization" not in request.headers


async def test_native_answers_match_httpx(tgi: Emulator, session: aiohttp.ClientSession) -> None:
    common: dict[str, Any] = {"api_key": tgi.api_key, "base_url": tgi.base_url}
    async with (
        AsyncVastClient(tgi.endpoint, **common) as plain,
        AsyncVastClient(tgi.endpoint, http_client=session, **common) as native,
    ):
        a = await plain.generate("same prompt", max_tokens=8, stop=["token 3"])
        b = await native.generate("same prompt", max_tokens=8, stop=["token 3"])
        assert (a.text, a.finish_reason, a.usage) == (b.text, b.finish_reason, b.usage)
        assert b.route is not None and b.route.signature == "g3"
        async with native.stream("same prompt", max_tokens=8) as chunks:
            streamed = "".join([c.text async for c in chunks])
        assert streamed == (await plain.generate("same prompt", max_tokens=8)).text
    assert not session.closed  # the session stays the caller's


@pytest.mark.parametrize(
    "make",
    [
        lambda: aiohttp.ClientSession(auth=aiohttp.BasicAuth("user", "secret")),
        lambda: aiohttp.ClientSession(headers={"Authorization": "Bearer secret"}),
        lambda: aiohttp.ClientSession(headers={"X-Api-Key": "secret"}),
    ],
    ids=["auth", "authorization-header", "api-key-header"],
)
@pytest.mark.filterwarnings("ignore:.*deprecated:DeprecationWarning")  # aiohttp's auth= is
async def test_a_session_with_default_credentials_is_refused(tgi: Emulator, make: Any) -> None:
    async with make() as session:
        with pytest.raises(ConfigError, match="credentials") as info:
            AsyncVastClient(
                tgi.endpoint, api_key=tgi.api_key, base_url=tgi.base_url, http_client=session
            )
        assert "secret" not in str(info.value)


async def test_credentials_added_to_the_session_later_never_reach_a_worker(
    tgi: Emulator, session: aiohttp.ClientSession
) -> None:
    client = AsyncVastClient(
        tgi.endpoint, api_key=tgi.api_key, base_url=tgi.base_url, http_client=session
    )
    session.headers["Authorization"] = "Bearer added-later"
    before = len(tgi.worker_requests)
    with pytest.raises(ConfigError, match="credentials"):
        await client.generate("x")
    assert len(tgi.worker_requests) == before


async def test_something_else_is_not_an_http_client(tgi: Emulator) -> None:
    with pytest.raises(ConfigError, match=r"aiohttp\.ClientSession"):
        AsyncVastClient(
            tgi.endpoint, api_key=tgi.api_key, base_url=tgi.base_url, http_client=object()
        )  # type: ignore[arg-type]


async def test_an_abandoned_stream_closes_its_connection() -> None:
    """A half-read answer must not go back to the pool (the next request would read its rest)."""
    with Emulator(api="tgi", workers=1, token_delay=0.02).serve() as emu:
        async with (
            aiohttp.ClientSession() as session,
            AsyncVastClient(
                emu.endpoint, api_key=emu.api_key, base_url=emu.base_url, http_client=session
            ) as client,
        ):
            for _ in range(3):
                async with client.stream("x", max_tokens=50) as chunks:
                    async for _ in chunks:
                        break
                again = await client.generate("x", max_tokens=4)
                assert again.text and again.finish_reason == "length"


async def test_a_dead_worker_is_a_typed_error_in_bounded_time(
    tgi: Emulator, session: aiohttp.ClientSession
) -> None:
    tgi.inject(Fault("worker_refuse", times=None))
    loop = asyncio.get_running_loop()
    started = loop.time()
    common: dict[str, Any] = {"api_key": tgi.api_key, "base_url": tgi.base_url}
    async with AsyncVastClient(
        tgi.endpoint, http_client=session, deadline=2.0, max_retries=2, **common
    ) as client:
        with pytest.raises(VastConnectionError) as info:
            await client.generate("x")
    assert loop.time() - started < 3.0
    assert "aiohttp" in str(info.value)  # the underlying failure is named


async def test_idle_timeouts_on_native_aiohttp(
    tgi: Emulator, session: aiohttp.ClientSession
) -> None:
    """aiohttp's read timeouts end in the same typed errors: silent before any output, streamed
    or not -> VastTimeout, not retried (the worker may be busy)."""
    common: dict[str, Any] = {"api_key": tgi.api_key, "base_url": tgi.base_url}
    async with AsyncVastClient(tgi.endpoint, http_client=session, timeout=0.3, **common) as client:
        tgi.inject(Fault("slow_first_token", delay=2.0))
        started = asyncio.get_running_loop().time()
        with pytest.raises(VastTimeout, match="did not answer in time"):
            async with client.stream("x") as chunks:
                _ = [c async for c in chunks]
        tgi.clear_faults()
        tgi.inject(Fault("slow_first_token", delay=2.0))
        before = len(tgi.worker_requests)
        with pytest.raises(VastTimeout):
            await client.generate("x")
        assert len(tgi.worker_requests) == before + 1  # not sent again
        assert asyncio.get_running_loop().time() - started < 2.0


def test_asyncio_timeouts_are_read_timeouts_on_every_python() -> None:
    """aiohttp raises asyncio.TimeoutError, which is TimeoutError only from Python 3.11 on;
    on 3.10 it slipped past the translation (make test-lowest runs 3.10 and found it)."""
    from vast_llm._aiohttp import translate

    assert isinstance(translate(asyncio.TimeoutError()), httpx.ReadTimeout)
    assert isinstance(translate(TimeoutError()), httpx.ReadTimeout)
