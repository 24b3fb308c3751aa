"""ChatVast and VastLLM as real applications use them: many event loops and threads on one
model, copies and edits that take effect, pickles, configurable fields, and payloads that hold
generation parameters only."""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import os
import pickle
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.runnables import ConfigurableField

from langchain_vast import ChatVast, VastLLM
from tests.conftest import FAST
from vast_llm import ConfigError, VastTimeout, WorkerStreamError
from vast_llm.emulator import Emulator, Fault


@pytest.fixture(scope="module")
def two() -> Iterator[Emulator]:
    """An OpenAI-compatible emulator with a second endpoint (for copies that switch)."""
    emu = Emulator(api="openai", workers=1)
    emu.add_endpoint("second", api="openai")
    with emu.serve():
        yield emu


@pytest.fixture
def emu(two: Emulator) -> Emulator:
    two.reset()
    return two


def chat(emu: Emulator, **kwargs: Any) -> ChatVast:
    return ChatVast(
        endpoint=emu.endpoint, api_key=emu.api_key, base_url=emu.base_url, backoff=FAST, **kwargs
    )


def llm(emu: Emulator, **kwargs: Any) -> VastLLM:
    return VastLLM(
        endpoint=emu.endpoint,
        api_key=emu.api_key,
        base_url=emu.base_url,
        backoff=FAST,
        api="openai",
        **kwargs,
    )


# -- one model shared by pytest-asyncio tests, each in its own (function-scoped) loop --------

_SHARED: dict[str, Any] = {}


@pytest.fixture(scope="module")
def shared_model(two: Emulator) -> ChatVast:
    if "model" not in _SHARED:
        _SHARED["model"] = chat(two, max_tokens=3)
    return _SHARED["model"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("turn", range(3))
async def test_a_shared_model_in_a_new_loop_per_test(shared_model: ChatVast, turn: int) -> None:
    answer = await shared_model.ainvoke(f"turn {turn}")
    assert answer.content
    chunks = [c async for c in shared_model.astream(f"turn {turn}")]
    assert "".join(str(c.content) for c in chunks)


# -- loops and threads -----------------------------------------------------------------------


@pytest.mark.parametrize("make", [chat, llm])
def test_asyncio_run_twice_on_one_model(emu: Emulator, make: Any) -> None:
    model = make(emu, max_tokens=3)
    first = asyncio.run(model.ainvoke("hello"))
    second = asyncio.run(model.ainvoke("hello"))
    assert first == second or getattr(first, "content", None) == getattr(second, "content", 0)
    assert asyncio.run(model.abatch(["a", "b", "c"]))


def test_threads_with_their_own_loops_share_a_model(emu: Emulator) -> None:
    model = chat(emu, max_tokens=3)

    def run(i: int) -> str:
        return str(asyncio.run(model.ainvoke(f"thread {i}")).content)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(run, range(8), timeout=60))
    assert all(answers)


# -- copies, edits, pickles ------------------------------------------------------------------


def test_a_copy_with_other_settings_uses_them(emu: Emulator) -> None:
    model = chat(emu, max_tokens=3)
    model.invoke("first")
    other = model.model_copy(update={"endpoint": "second", "max_retries": 0})
    other.invoke("from the copy")
    assert emu.worker_requests[-1].endpoint == "second"
    model.invoke("the original still goes to its own")
    assert emu.worker_requests[-1].endpoint == emu.endpoint
    assert other.client is not model.client


def test_editing_settings_after_construction_takes_effect(emu: Emulator) -> None:
    model = chat(emu, max_tokens=3)
    model.invoke("before")
    model.timeout = 0.3
    model.max_retries = 0
    emu.inject(Fault("slow_first_token", delay=2.0))
    with pytest.raises((VastTimeout, WorkerStreamError)):
        model.invoke("the worker is slower than the new timeout")
    model.endpoint = "second"
    model.invoke("now elsewhere")
    assert emu.worker_requests[-1].endpoint == "second"


def test_equal_models_share_their_clients_and_changed_ones_do_not(emu: Emulator) -> None:
    a, b = chat(emu, max_tokens=3), chat(emu, max_tokens=5)  # generation params differ only
    assert a.client is b.client
    b.deadline = 7.0
    assert a.client is not b.client and b.client.settings.deadline == 7.0


@pytest.mark.parametrize("make", [chat, llm])
def test_deepcopy_and_pickle_round_trip(emu: Emulator, make: Any) -> None:
    model = make(emu, max_tokens=3, timeout=30.0)
    model.invoke("warm the clients up")
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert twin.timeout == 30.0
        assert twin.invoke("hello")
        assert emu.api_key not in repr(twin) and emu.api_key not in str(twin)
        assert emu.api_key not in twin.model_dump_json()


def test_configurable_fields_do_not_leak_connection_pools(emu: Emulator) -> None:
    model = chat(emu, max_tokens=2).configurable_fields(
        temperature=ConfigurableField(id="temperature")
    )
    model.invoke("warm up", config={"configurable": {"temperature": 0.1}})
    before = len(os.listdir("/proc/self/fd"))
    for i in range(30):
        model.invoke(f"call {i}", config={"configurable": {"temperature": 0.1 + i / 100}})
    assert len(os.listdir("/proc/self/fd")) <= before + 2


def test_close_releases_and_a_later_call_reopens(emu: Emulator) -> None:
    model = chat(emu, max_tokens=2)
    model.invoke("x")
    model.close()
    assert model.invoke("y").content  # a closed model opens new pools on its next call
    asyncio.run(model.aclose())


# -- settings and generation parameters stay apart -------------------------------------------


def test_client_settings_never_reach_the_payload(emu: Emulator) -> None:
    model = chat(emu, max_tokens=3, route_timeout=1.0, cost=5.0, deadline=9.0)
    model.invoke("x")
    payload = emu.worker_requests[-1].json["payload"]
    assert not {"route_timeout", "cost", "deadline", "timeout"} & set(payload)
    assert emu.route_requests[-1].json["cost"] == 5.0
    assert model.client.settings.route_timeout == 1.0


def test_a_per_call_timeout_bounds_the_call_and_is_not_sent(emu: Emulator) -> None:
    model = chat(emu, max_tokens=3, max_retries=0)
    emu.inject(Fault("slow_first_token", delay=2.0))
    with pytest.raises((VastTimeout, WorkerStreamError)):
        model.invoke("x", timeout=0.3)
    model.invoke("y", request_timeout=5.0)
    assert "timeout" not in emu.worker_requests[-1].json["payload"]
    assert "request_timeout" not in emu.worker_requests[-1].json["payload"]


def test_client_settings_in_a_call_are_an_error(emu: Emulator) -> None:
    with pytest.raises(ConfigError, match="base_url"):
        chat(emu).invoke("x", base_url="http://elsewhere")


def test_max_concurrency_bounds_batch() -> None:
    # A fresh emulator: calls abandoned by other tests may still run on the shared one.
    with Emulator(api="openai", faults=[Fault("slow_first_token", delay=0.3, times=None)]) as emu:
        model = chat(emu, max_tokens=2, max_concurrency=2)
        model.batch([f"q{i}" for i in range(6)])
        assert max(w.peak_inflight for w in emu.workers) == 2
