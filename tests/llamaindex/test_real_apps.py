"""Vast as LlamaIndex applications use it: workflows run twice, async engines from thread pools,
copies and edits that take effect (``api`` included), pickles, and settings kept apart."""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import pickle
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.embeddings import MockEmbedding

from llamaindex_vast import Vast
from tests.conftest import FAST
from vast_llm import ConfigError, VastTimeout, WorkerStreamError
from vast_llm.emulator import Emulator, Fault


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


@pytest.fixture(scope="module")
def both() -> Iterator[Emulator]:
    """A TGI endpoint and an OpenAI-compatible one, to switch ``api`` and ``endpoint``."""
    emu = Emulator(api="tgi")
    emu.add_endpoint("vllm", api="openai")
    with emu.serve():
        yield emu


@pytest.fixture
def emu(both: Emulator) -> Emulator:
    both.reset()
    return both


def vast(emu: Emulator, **kwargs: Any) -> Vast:
    kwargs.setdefault("endpoint", emu.endpoint)
    return Vast(api_key=emu.api_key, base_url=emu.base_url, backoff=FAST, **kwargs)


@pytest.fixture(autouse=True)
def mock_embeddings() -> Iterator[None]:
    previous = Settings._embed_model
    Settings.embed_model = MockEmbedding(embed_dim=16)
    yield
    Settings._embed_model = previous


def test_a_workflow_agent_run_twice_in_two_loops(emu: Emulator) -> None:
    agent = FunctionAgent(tools=[multiply], llm=vast(emu, endpoint="vllm", api="openai"))

    async def ask() -> str:
        return str(await agent.run(user_msg="What is 3 times 3?"))

    assert "9" in asyncio.run(ask())
    assert "9" in asyncio.run(ask())


def test_async_query_engine_from_a_sync_handlers_thread_pool(emu: Emulator) -> None:
    index = VectorStoreIndex.from_documents([Document(text="The Eiffel Tower is in Paris.")])
    engine = index.as_query_engine(llm=vast(emu, max_new_tokens=4), use_async=True)

    def handler(i: int) -> str:  # a sync web handler: each call runs its own loop
        return str(asyncio.run(engine.aquery(f"Where is the tower? ({i})")))

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(handler, range(8), timeout=60))
    assert all(answers)


def test_acomplete_under_asyncio_run_again_and_again(emu: Emulator) -> None:
    llm = vast(emu, max_new_tokens=3)
    texts = {asyncio.run(llm.acomplete("hello")).text for _ in range(4)}
    assert len(texts) == 1


def test_switching_api_switches_calls_not_only_metadata(emu: Emulator) -> None:
    llm = vast(emu, max_new_tokens=3)
    llm.complete("on tgi")
    assert emu.worker_requests[-1].path == "/generate"
    llm.api = "openai"
    llm.endpoint = "vllm"
    assert llm.metadata.is_chat_model
    llm.complete("on vllm")
    assert emu.worker_requests[-1].path == "/v1/completions"


def test_a_copy_with_other_settings_uses_them(emu: Emulator) -> None:
    llm = vast(emu, max_new_tokens=3)
    other = llm.model_copy(update={"endpoint": "vllm", "api": "openai", "timeout": 30.0})
    other.complete("x")
    assert emu.worker_requests[-1].endpoint == "vllm"
    assert other.client.settings.timeout.read == 30.0
    llm.complete("y")
    assert emu.worker_requests[-1].endpoint == emu.endpoint


def test_route_timeout_and_cost_are_applied_not_dropped(emu: Emulator) -> None:
    llm = vast(emu, route_timeout=1.0, cost=11.0)
    llm.complete("x")
    assert llm.client.settings.route_timeout == 1.0
    assert emu.route_requests[-1].json["cost"] == 11.0
    assert "cost" not in emu.worker_requests[-1].json["payload"]["parameters"]


def test_deepcopy_and_pickle_round_trip(emu: Emulator) -> None:
    llm = vast(emu, max_new_tokens=3, timeout=30.0)
    llm.complete("warm up")
    for twin in (copy.deepcopy(llm), pickle.loads(pickle.dumps(llm))):
        assert twin.timeout == 30.0 and twin.complete("x").text
        assert emu.api_key not in repr(twin) and emu.api_key not in twin.to_json()


def test_unknown_arguments_are_an_error() -> None:
    with pytest.raises(ConfigError, match="did you mean 'temperature'"):
        Vast("ep", api_key="k", temprature=0.1)


def test_a_per_call_timeout_bounds_the_call(emu: Emulator) -> None:
    llm = vast(emu, max_new_tokens=3, max_retries=0)
    emu.inject(Fault("slow_first_token", delay=2.0))
    with pytest.raises((VastTimeout, WorkerStreamError)):
        llm.complete("x", timeout=0.3)
