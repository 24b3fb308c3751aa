"""ChatVast.session() and VastLLM.session(): a model of the same class bound to one worker
session, usable wherever a model goes (an agent, a tool loop, a batch), sync and async."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from langchain_vast import ChatVast, VastLLM
from tests.conftest import FAST
from tests.langchain.test_agent import (
    FINAL,
    QUESTION,
    SCRIPT,
    get_time,
    get_weather,
    run_tools,
)
from vast_llm import ConfigError, VastSession
from vast_llm.emulator import Emulator


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(api="openai", workers=2, script=SCRIPT).serve() as emulator:
        yield emulator


def chat_model(emu: Emulator) -> ChatVast:
    return ChatVast(
        endpoint=emu.endpoint,
        api_key=emu.api_key,
        base_url=emu.base_url,
        backoff=FAST,
        temperature=0,
    )


def check_the_run(emu: Emulator) -> None:
    """test_agent's checks, on the model calls (the session's own calls left out)."""
    emu.assert_all_scripted_used()
    calls = [r for r in emu.worker_requests if not r.path.startswith("/session/")]
    assert [r.turn for r in calls] == [1, 2, 3]
    last = calls[-1].json["payload"]["messages"]
    assert [m["role"] for m in last] == ["user", "assistant", "tool", "assistant", "tool"]


def one_session(emu: Emulator) -> str:
    """The id of the one session every model call went to (asserting there was one)."""
    calls = [r for r in emu.worker_requests if not r.path.startswith("/session/")]
    ids = {r.json["session_id"] for r in calls}
    assert len(ids) == 1 and None not in ids, ids
    assert len({r.worker for r in calls}) == 1
    return str(ids.pop())


@pytest.mark.parametrize("streaming", [False, True])
def test_a_tool_loop_in_a_session(emu: Emulator, streaming: bool) -> None:
    llm = chat_model(emu).model_copy(update={"streaming": streaming})
    with llm.session(lifetime=60) as pinned:
        assert type(pinned) is ChatVast and isinstance(pinned.client, VastSession)
        messages = run_tools(pinned, [get_weather, get_time], QUESTION)
        assert emu.sessions()[0].calls == 3
    assert messages[-1].content == FINAL
    check_the_run(emu)
    session_id = one_session(emu)
    # Routed once (for the session), ended with the block; the model itself still routes.
    assert len(emu.route_requests) == 1 and emu.sessions() == []
    assert emu.worker_requests[-1].path == "/session/end"
    assert isinstance(llm.client, type(llm._pair().sync))
    with pytest.raises(ConfigError, match="session has ended"):
        pinned.invoke("Hello")
    final = messages[-1]
    assert isinstance(final, AIMessage)
    assert final.response_metadata["vast"]["session_id"] == session_id


def test_create_agent_in_a_session(emu: Emulator) -> None:
    agents = pytest.importorskip("langchain.agents", reason="create_agent needs `langchain`")
    with chat_model(emu).session() as pinned:
        agent = agents.create_agent(pinned, tools=[get_weather, get_time])
        result = agent.invoke({"messages": [{"role": "user", "content": QUESTION}]})
    assert result["messages"][-1].content == FINAL
    check_the_run(emu)
    one_session(emu)


async def test_async_calls_in_a_session() -> None:
    with Emulator(api="openai", workers=2).serve() as emu:
        async with chat_model(emu).session() as pinned:
            first = await pinned.ainvoke([HumanMessage("Hello")])
            pieces = [chunk async for chunk in pinned.astream([HumanMessage("Hello again")])]
            # The same session serves the sync calls of the same pinned model.
            third = await asyncio.to_thread(pinned.invoke, "And once more")
        assert first.content and "".join(str(p.content) for p in pieces) and third.content
        one_session(emu)
        assert len(emu.route_requests) == 1 and emu.sessions() == []


def test_vastllm_session_batch_and_stream() -> None:
    with Emulator(api="tgi", workers=2).serve() as emu:
        llm = VastLLM(
            endpoint=emu.endpoint,
            api_key=emu.api_key,
            base_url=emu.base_url,
            backoff=FAST,
            max_tokens=4,
        )
        with llm.session() as pinned:
            assert type(pinned) is VastLLM
            answers = pinned.batch(["one", "two", "three"])
            streamed = "".join(pinned.stream("four"))
        assert all(answers) and streamed
        one_session(emu)
        assert len(emu.route_requests) == 1 and emu.sessions() == []
