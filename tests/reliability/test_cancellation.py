"""Cancellation: cancelling an async stream or breaking out of a sync one closes the worker
connection at once — the emulated worker sees the client go and stops generating."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from vast_llm import AsyncVastClient, VastClient
from vast_llm.emulator import Emulator

# 400 tokens at 0.05 s each: 20 s if nobody stopped it.
SLOW = {"token_delay": 0.05}
TOKENS = 400


def settings(emu: Emulator) -> dict[str, str]:
    return {"endpoint": emu.endpoint, "api_key": emu.api_key, "base_url": emu.base_url}


def wait_until_idle(emu: Emulator, limit: float = 3.0) -> float:
    """Seconds until no worker is generating (the server noticed the client left)."""
    started = time.monotonic()
    while any(w.inflight for w in emu.workers):
        if time.monotonic() - started > limit:
            pytest.fail("the worker kept generating after the client went away")
        time.sleep(0.01)
    return time.monotonic() - started


@pytest.fixture
def slow() -> Iterator[Emulator]:
    with Emulator(**SLOW).serve() as emu:
        yield emu


async def test_cancelling_an_async_stream_closes_the_connection(slow: Emulator) -> None:
    got: list[str] = []
    started = asyncio.Event()

    async def consume(client: AsyncVastClient) -> None:
        async for chunk in client.stream("x", max_tokens=TOKENS):
            got.append(chunk.text)
            if len(got) == 2:
                started.set()

    async with AsyncVastClient(**settings(slow)) as client:
        task = asyncio.create_task(consume(client))
        await asyncio.wait_for(started.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.to_thread(wait_until_idle, slow) < 3.0
    assert 2 <= len(got) < TOKENS


async def test_leaving_an_async_with_block_closes_the_connection(slow: Emulator) -> None:
    async with AsyncVastClient(**settings(slow)) as client:
        async with client.stream("x", max_tokens=TOKENS) as stream:
            async for _ in stream:
                break
        assert await asyncio.to_thread(wait_until_idle, slow) < 3.0


def test_breaking_out_of_a_sync_stream_closes_the_connection(slow: Emulator) -> None:
    with VastClient(**settings(slow)) as client:
        for _ in client.stream("x", max_tokens=TOKENS):
            break  # the stream is unreferenced now: closed at once
        assert wait_until_idle(slow) < 3.0
        with client.stream("x", max_tokens=TOKENS) as stream:
            next(stream)
        assert wait_until_idle(slow) < 3.0


def test_closing_a_stream_that_never_started_sends_nothing(slow: Emulator) -> None:
    with VastClient(**settings(slow)) as client:
        client.stream("x").close()
    assert not slow.requests


def test_a_stop_sequence_closes_the_connection_early() -> None:
    with Emulator(recipe="g1", **SLOW).serve() as emu, VastClient(**settings(emu)) as client:
        first = [c.text for c in client.stream("stop", max_tokens=6)]
        stop = first[3].strip()  # the g1 worker ignores it: the client cuts and hangs up
        with client.stream("stop", max_tokens=TOKENS, stop=[stop]) as stream:
            text = "".join(c.text for c in stream)
        assert stop not in text and stream.finish_reason == "stop"
        assert wait_until_idle(emu) < 3.0


def test_threads_breaking_out_concurrently(slow: Emulator) -> None:
    with VastClient(**settings(slow)) as client:

        def one() -> None:
            for _ in client.stream("x", max_tokens=TOKENS):
                break

        threads = [threading.Thread(target=one) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert wait_until_idle(slow) < 3.0
