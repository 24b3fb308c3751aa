"""A scripted two-tool, three-turn FunctionAgent run on Vast: tool A, tool B, then a final
answer made from both results."""

from __future__ import annotations

import pytest

from llamaindex_vast import Vast
from tests.conftest import FAST
from vast_llm.emulator import Emulator, GenRequest, Match, ToolCall, Turn


def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"sunny in {city}"


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


@pytest.mark.parametrize("streaming", [True, False])
async def test_function_agent_runs_a_scripted_two_tool_conversation(streaming: bool) -> None:
    # Imported here: the agent workflow takes a second to import, which every xdist worker
    # would pay at collection.
    from llama_index.core.agent.workflow import FunctionAgent, ToolCallResult

    with Emulator(api="openai", script=SCRIPT).serve() as emu:
        llm = Vast(
            emu.endpoint, api_key=emu.api_key, base_url=emu.base_url, api="openai", backoff=FAST
        )
        agent = FunctionAgent(tools=[get_weather, get_time], llm=llm, streaming=streaming)
        handler = agent.run(user_msg="What are the weather and the time in Paris?")
        results = [
            (event.tool_name, event.tool_kwargs, str(event.tool_output))
            async for event in handler.stream_events()
            if isinstance(event, ToolCallResult)
        ]
        response = await handler
        assert str(response) == "It is sunny in Paris, and 12:00 in Paris."
        assert results == [
            ("get_weather", {"city": "Paris"}, "sunny in Paris"),
            ("get_time", {"city": "Paris"}, "12:00 in Paris"),
        ]
        emu.assert_all_scripted_used()
        assert [r.turn for r in emu.worker_requests] == [1, 2, 3]
