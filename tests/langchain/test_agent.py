"""A scripted two-tool, three-turn agent run on ChatVast: tool A, tool B, then a final answer
made from both results; with LangChain's ``create_agent`` and with a plain tool loop."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.tools import BaseTool, tool

from langchain_vast import ChatVast
from tests.conftest import FAST
from vast_llm.emulator import Emulator, GenRequest, Match, ToolCall, Turn

QUESTION = "What are the weather and the time in Paris?"
FINAL = "It is sunny in Paris, and 12:00 in Paris."


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"sunny in {city}"


@tool
def get_time(city: str) -> str:
    """The local time in a city."""
    return f"12:00 in {city}"


def final_answer(request: GenRequest) -> str:
    weather, time = request.tool_results
    return f"It is {weather}, and {time}."


SCRIPT = [
    ToolCall("get_weather", {"city": "Paris"}),
    ToolCall("get_time"),  # arguments from the question: {"city": "Paris"}
    Turn(final_answer, when=Match(has_tool_results=True)),
]


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(api="openai", script=SCRIPT).serve() as emulator:
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
    emu.assert_all_scripted_used()
    calls = [r.json["payload"] for r in emu.worker_requests]
    assert [r.turn for r in emu.worker_requests] == [1, 2, 3]
    last = calls[-1]["messages"]
    assert [m["role"] for m in last] == ["user", "assistant", "tool", "assistant", "tool"]
    assert {t["function"]["name"] for t in calls[0]["tools"]} == {"get_weather", "get_time"}


def test_create_agent(emu: Emulator) -> None:
    agents = pytest.importorskip("langchain.agents", reason="create_agent needs `langchain`")
    agent = agents.create_agent(chat_model(emu), tools=[get_weather, get_time])
    result = agent.invoke({"messages": [{"role": "user", "content": QUESTION}]})
    assert result["messages"][-1].content == FINAL
    check_the_run(emu)


def run_tools(llm: ChatVast, tools: Sequence[BaseTool], question: str) -> list[BaseMessage]:
    """The loop an agent runs: call the model, run the tools it asks for, until it answers."""
    by_name = {t.name: t for t in tools}
    model = llm.bind_tools(tools)
    messages: list[BaseMessage] = [HumanMessage(question)]
    for _ in range(5):
        reply = model.invoke(messages)
        messages.append(reply)
        if not isinstance(reply, AIMessage) or not reply.tool_calls:
            return messages
        messages += [by_name[call["name"]].invoke(call) for call in reply.tool_calls]
    raise AssertionError("the agent did not finish")


@pytest.mark.parametrize("streaming", [False, True])
def test_a_tool_loop(emu: Emulator, streaming: bool) -> None:
    messages = run_tools(
        chat_model(emu).model_copy(update={"streaming": streaming}),
        [get_weather, get_time],
        QUESTION,
    )
    assert messages[-1].content == FINAL
    calls: Any = [m.tool_calls for m in messages if isinstance(m, AIMessage)]
    assert [[(c["name"], c["args"]) for c in step] for step in calls] == [
        [("get_weather", {"city": "Paris"})],
        [("get_time", {"city": "Paris"})],
        [],
    ]
    check_the_run(emu)
