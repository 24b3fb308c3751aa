"""Vast.session(): an LLM of the same class bound to one worker session, in a FunctionAgent, a
chat engine and plain calls, async and sync."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.chat_engine import SimpleChatEngine

from llamaindex_vast import Vast
from tests.conftest import FAST
from tests.llamaindex.test_agent import SCRIPT, get_time, get_weather
from vast_llm import AsyncVastSession, ConfigError
from vast_llm.emulator import Emulator


def model_calls(emu: Emulator) -> list[Any]:
    return [r for r in emu.worker_requests if not r.path.startswith("/session/")]


def one_session(emu: Emulator) -> None:
    calls = [r for r in emu.worker_requests if not r.path.startswith("/session/")]
    ids = {r.json["session_id"] for r in calls}
    assert len(ids) == 1 and None not in ids, ids
    assert len({r.worker for r in calls}) == 1
    assert len(emu.route_requests) == 1 and emu.sessions() == []


@pytest.mark.parametrize("streaming", [True, False])
async def test_a_function_agent_in_a_session(streaming: bool) -> None:
    with Emulator(api="openai", workers=2, script=SCRIPT).serve() as emu:
        llm = Vast(
            emu.endpoint, api_key=emu.api_key, base_url=emu.base_url, api="openai", backoff=FAST
        )
        async with llm.session() as pinned:
            assert type(pinned) is Vast and isinstance(pinned.async_client, AsyncVastSession)
            agent = FunctionAgent(tools=[get_weather, get_time], llm=pinned, streaming=streaming)
            response = await agent.run(user_msg="What are the weather and the time in Paris?")
        assert str(response) == "It is sunny in Paris, and 12:00 in Paris."
        emu.assert_all_scripted_used()
        assert [r.turn for r in emu.worker_requests if r.turn is not None] == [1, 2, 3]
        one_session(emu)


def test_a_chat_engine_in_a_session() -> None:
    with Emulator(api="openai", workers=2).serve() as emu:
        llm = Vast(
            emu.endpoint,
            api_key=emu.api_key,
            base_url=emu.base_url,
            api="openai",
            backoff=FAST,
            max_new_tokens=8,
        )
        with llm.session(lifetime=60) as pinned:
            engine = SimpleChatEngine.from_defaults(llm=pinned)
            answers = [str(engine.chat(f"Question {i}")) for i in range(3)]
            streamed = "".join(engine.stream_chat("One more").response_gen)
        assert all(answers) and streamed
        one_session(emu)
        # The conversation grew turn by turn, on one worker.
        sizes = [len(r.json["payload"]["messages"]) for r in model_calls(emu)]
        assert sizes == sorted(sizes) and sizes[-1] > sizes[0]
        with pytest.raises(ConfigError, match="session has ended"):
            pinned.complete("after the block")


def test_tgi_completions_in_a_session() -> None:
    with Emulator(api="tgi", workers=2).serve() as emu:
        llm = Vast(
            emu.endpoint, api_key=emu.api_key, base_url=emu.base_url, backoff=FAST, max_new_tokens=4
        )
        with llm.session() as pinned:
            first = pinned.complete("Hello")
            streamed = [r.delta for r in pinned.stream_complete("Hello")]
        assert first.text and "".join(d or "" for d in streamed) == first.text
        one_session(emu)
