"""One async client, many event loops: one after another, at once in threads, and loops that die.

Users meet these in scripts that call ``asyncio.run`` twice, pytest-asyncio's loop per test,
notebooks, and thread pools whose threads each run a loop. Each case is bounded in time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import gc
import os
import pickle
import threading
import warnings
from typing import Any

import httpx
import pytest

from tests.conftest import settings_for
from vast_llm import AsyncVastClient, AsyncVastTransport, ConfigError, VastClient, VastTransport
from vast_llm.emulator import Emulator, Fault


def _collect_garbage_quietly() -> None:
    """Collect what a dead loop left behind now, with its ResourceWarnings (asyncio's, for a
    loop closed without shutdown) ignored, so they do not surface in a later test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def emu(tgi: Emulator) -> Emulator:
    return tgi


async def _generate(client: AsyncVastClient, prompt: str = "hello") -> str:
    return (await client.generate(prompt, max_tokens=3)).text


async def _stream(client: AsyncVastClient) -> str:
    async with client.stream("hello", max_tokens=3) as stream:
        return "".join([chunk.text async for chunk in stream])


def test_asyncio_run_again_and_again_on_one_client(emu: Emulator) -> None:
    client = AsyncVastClient(**settings_for(emu))
    answers = {asyncio.run(_generate(client)) for _ in range(5)}
    assert len(answers) == 1  # the fake model is deterministic: every loop got the answer
    assert asyncio.run(_stream(client))
    # Every run's pools were closed when its loop shut down (no loop holds one now).
    assert len(client._loops) == 0


def test_pools_close_with_their_loop_so_file_descriptors_do_not_grow(emu: Emulator) -> None:
    client = AsyncVastClient(**settings_for(emu))
    asyncio.run(_generate(client))
    before = _fds()
    for _ in range(30):
        asyncio.run(_generate(client))
    assert _fds() <= before + 2


def test_threads_each_running_their_own_loop_share_one_client(emu: Emulator) -> None:
    client = AsyncVastClient(**settings_for(emu))
    barrier = threading.Barrier(4)

    def worker(i: int) -> list[str]:
        async def run() -> list[str]:
            barrier.wait(timeout=10)  # all four loops are alive at once
            return await asyncio.gather(*(_generate(client, f"t{i}-{j}") for j in range(5)))

        return asyncio.run(run())

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(worker, range(4), timeout=60))
    assert all(len(r) == 5 and all(r) for r in results)
    assert len(client._loops) == 0


# A loop closed without its shutdown leaves its sockets for the garbage collector, whose
# ResourceWarning is asyncio's to give: what matters here is that the client goes on.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_a_loop_closed_without_shutdown_is_dropped_without_touching_it(emu: Emulator) -> None:
    client = AsyncVastClient(**settings_for(emu))
    dead = asyncio.new_event_loop()
    assert dead.run_until_complete(_generate(client))
    dead.close()  # no shutdown_asyncgens: the client's watcher never ran
    assert asyncio.run(asyncio.wait_for(_generate(client), 10))
    assert len(client._loops) == 0  # the dead loop's set was pruned, the new one closed
    _collect_garbage_quietly()


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_a_notebook_cell_rerun_after_an_interrupted_loop_does_not_hang(emu: Emulator) -> None:
    """A call interrupted mid-flight (its loop stopped and closed while the call, holding the
    gate and the key lock, waits on the worker), then the same client in a fresh loop."""
    client = AsyncVastClient(**settings_for(emu, max_concurrency=1))
    emu.inject(Fault("slow_first_token", delay=5.0))
    first = asyncio.new_event_loop()
    task = first.create_task(_generate(client))
    first.run_until_complete(asyncio.sleep(0.5))  # the call holds the only slot now
    assert not task.done()
    first.close()  # the cell was interrupted; its loop is gone with the task in it
    assert asyncio.run(asyncio.wait_for(_generate(client), 10))
    del task
    _collect_garbage_quietly()


def test_a_given_httpx_client_belongs_to_its_loop(emu: Emulator) -> None:
    http = httpx.AsyncClient()
    client = AsyncVastClient(**settings_for(emu), http_client=http)
    assert asyncio.run(_generate(client))
    with pytest.raises(ConfigError, match="another event loop"):
        asyncio.run(_generate(client))


def test_a_given_aiohttp_session_belongs_to_its_loop(emu: Emulator) -> None:
    import aiohttp

    async def make() -> aiohttp.ClientSession:
        return aiohttp.ClientSession()

    loop = asyncio.new_event_loop()
    session = loop.run_until_complete(make())
    client = AsyncVastClient(**settings_for(emu), http_client=session)
    assert loop.run_until_complete(_generate(client))
    with pytest.raises(ConfigError, match="another event loop"):
        asyncio.run(_generate(client))
    loop.run_until_complete(session.close())
    loop.run_until_complete(asyncio.sleep(0.1))  # aiohttp closes transports a tick later
    loop.close()


def test_the_async_transport_under_an_sdk_in_several_loops(openai_emu: Emulator) -> None:
    transport = AsyncVastTransport(**settings_for(openai_emu))

    async def call() -> int:
        async with httpx.AsyncClient(transport=transport, base_url="http://vast") as http:
            response = await http.post("/v1/completions", json={"prompt": "hi", "max_tokens": 3})
            await response.aread()
            return response.status_code

    assert [asyncio.run(call()) for _ in range(3)] == [200, 200, 200]
    assert len(transport._loops) == 0


def test_clients_copy_and_pickle_with_their_settings(emu: Emulator) -> None:
    client = VastClient(**settings_for(emu, max_retries=1))
    for twin in (copy.copy(client), copy.deepcopy(client), pickle.loads(pickle.dumps(client))):
        assert twin is not client
        assert twin._settings.max_retries == 1
        assert twin.generate("x", max_tokens=2).text
        assert emu.api_key not in repr(twin)
        twin.close()
    aclient = AsyncVastClient(**settings_for(emu))
    assert asyncio.run(_generate(pickle.loads(pickle.dumps(aclient))))
    with_http = VastClient(**settings_for(emu), http_client=httpx.Client())
    assert copy.deepcopy(with_http)._user_http is with_http._user_http  # shared, not copied
    with pytest.raises(TypeError, match="http_client"):
        pickle.dumps(with_http)
    client.close()


def test_a_closed_client_refuses_calls(emu: Emulator) -> None:
    client = VastClient(**settings_for(emu))
    client.generate("x", max_tokens=1)
    client.close()
    with pytest.raises(ConfigError, match="closed"):
        client.generate("x", max_tokens=1)


def test_per_call_settings_bound_the_call_and_stay_out_of_the_payload(emu: Emulator) -> None:
    from vast_llm import VastTimeout, WorkerStreamError

    with VastClient(**settings_for(emu)) as client:
        emu.inject(Fault("slow_first_token", delay=2.0))
        with pytest.raises((VastTimeout, WorkerStreamError)):
            client.generate("x", max_tokens=2, timeout=0.3, max_retries=0)
        client.generate("x", max_tokens=2, deadline=5, cost=7)
        payload: dict[str, Any] = emu.worker_requests[-1].json["payload"]
        assert not {"timeout", "deadline", "cost", "max_retries"} & set(payload["parameters"])
        assert emu.route_requests[-1].json["cost"] == 7


def test_transport_takes_limits_and_max_concurrency(emu: Emulator) -> None:
    transport = VastTransport(
        **settings_for(emu), limits=httpx.Limits(max_connections=4), max_concurrency=2
    )
    assert transport._gate.limit == 2
    transport.close()
