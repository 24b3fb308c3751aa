"""The fake model reads the prompt: which tool, which arguments, which JSON keys; and it thinks
in vLLM's format when asked. Unit tests on the model, then the wire formats of each API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.emulator.test_worker import call
from vast_llm import VastClient
from vast_llm.emulator import Emulator, FakeModel, GenRequest, Reasoning, ToolCall
from vast_llm.emulator._models import PromptValues, fake_arguments


def tool(name: str, description: str = "", **properties: Any) -> dict[str, Any]:
    required = [k for k, v in properties.items() if not v.pop("optional", False)]
    parameters = {"type": "object", "properties": properties, "required": required}
    function = {"name": name, "description": description, "parameters": parameters}
    return {"type": "function", "function": function}


CITY = {"type": "string"}
TOOLS = [
    tool("search_docs", "Search the documentation for a query.", query=dict(CITY)),
    tool("get_weather", "Current weather conditions in a city.", city=dict(CITY)),
    tool("get_time", "The local time in a city.", city=dict(CITY)),
]


def chat(text: str, **fields: Any) -> GenRequest:
    return GenRequest(messages=[{"role": "user", "content": text}], kind="chat", **fields)


def planned_call(request: GenRequest) -> tuple[str, dict[str, Any]]:
    calls = FakeModel().plan(request).tool_calls
    assert len(calls) == 1
    return calls[0]["name"], json.loads(calls[0]["arguments"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("What time is it in Paris?", ("get_time", {"city": "Paris"})),
        ("Is it raining in New York? I need the weather.", ("get_weather", {"city": "New York"})),
        ("Look up 'rate limits' in the documentation", ("search_docs", {"query": "rate limits"})),
        ("hello", ("search_docs", {"query": "query sample"})),  # no match: the first tool
    ],
)
def test_the_tool_that_matches_the_message_with_arguments_from_it(
    text: str, expected: tuple[str, dict[str, Any]]
) -> None:
    assert planned_call(chat(text, tools=TOOLS)) == expected


def test_tool_choice_still_decides() -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    assert planned_call(chat("What time is it?", tools=TOOLS, tool_choice=named))[0] == (
        "get_weather"
    )
    assert not FakeModel().plan(chat("What time?", tools=TOOLS, tool_choice="none")).tool_calls


def test_arguments_from_the_prompt_where_the_schema_allows() -> None:
    schema = {
        "type": "object",
        "properties": {
            "nickname": {"type": "string"},  # optional: filled only if the prompt has more
            "name": {"type": "string"},
            "unit": {"enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 10},
            "ratio": {"type": "number"},
            "email": {"type": "string"},
        },
        "required": ["name", "unit", "days", "ratio", "email"],
    }
    args = fake_arguments(schema, "Forecast for 'Ada Lovelace' over 30 or 5 days, in Fahrenheit")
    assert args == {
        "nickname": "Forecast",  # a name that opens a sentence comes after the others
        "name": "Ada Lovelace",
        "unit": "fahrenheit",
        "days": 5,  # 30 is above the maximum
        "ratio": 30.0,
        "email": "Fahrenheit",
    }
    assert fake_arguments(schema, "nothing here") == {
        "name": "name sample",
        "unit": "celsius",
        "days": 1,
        "ratio": 1.5,
        "email": "email sample",
    }
    assert fake_arguments({"type": "object", "properties": {"n": {"type": "integer"}}}, "x") == {}


@pytest.mark.parametrize(
    ("text", "strings", "numbers"),
    [
        ("What's the weather in 'São Paulo' and Rio?", ["São Paulo", "Rio"], []),
        ("Create a customer named '你好啊集团' (Hello Group)", ["你好啊集团", "Group"], []),
        ('Add 2 and -3.5, then "x2" and 7x', ["x2", "Add"], [2.0, -3.5]),
        ("Weather in Lima? Tokyo too.", ["Lima", "Weather", "Tokyo"], []),
    ],
)
def test_prompt_values(text: str, strings: list[str], numbers: list[float]) -> None:
    given = PromptValues(text)
    assert (given.strings, given.numbers) == (strings, numbers)


def test_json_mode_answers_with_the_keys_the_prompt_names() -> None:
    fake = FakeModel()
    json_mode = {"type": "json_object"}
    asked = chat("Return a JSON with 'setup' and 'punchline' keys.", response_format=json_mode)
    answer = json.loads("".join(fake.answer(asked)[0]))
    assert list(answer) == ["setup", "punchline"] and all(answer.values())
    assert list(json.loads("".join(fake.answer(chat("hi", response_format=json_mode))[0]))) == [
        "answer"
    ]
    city = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    schema = {"type": "json_schema", "json_schema": {"name": "w", "schema": city}}
    assert "".join(fake.answer(chat("Weather in Oslo?", response_format=schema))[0]) == (
        '{"city": "Oslo"}'
    )


def test_after_tool_results_it_says_what_they_were() -> None:
    messages = [
        {"role": "user", "content": "Weather and time in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": []},
        {"role": "tool", "tool_call_id": "1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "2", "content": "noon"},
    ]
    request = GenRequest(messages=messages, tools=TOOLS, kind="chat")
    assert request.tool_results == ["sunny", "noon"]
    assert "".join(FakeModel().answer(request)[0]) == "The tools returned: sunny; noon"


def test_it_is_deterministic() -> None:
    request = chat("Weather in Oslo?", tools=TOOLS, reasoning="reasoning_content")
    one, two = FakeModel().plan(request), FakeModel().plan(request)
    assert (one.thought, one.tool_calls[0]["arguments"]) == (
        two.thought,
        two.tool_calls[0]["arguments"],
    )
    assert one.thought and FakeModel().plan(chat("Weather in Oslo?")).thought == ""


# -- reasoning on the wire -------------------------------------------------------------------


@pytest.fixture(scope="module", params=["reasoning_content", "reasoning"])
def thinking(request: pytest.FixtureRequest) -> Iterator[Emulator]:
    with Emulator(api="both", reasoning=request.param).serve() as emu:
        yield emu


def sse(body: str) -> list[dict[str, Any]]:
    events = [e[len("data: ") :] for e in body.split("\n\n") if e.startswith("data: ")]
    return [json.loads(e) for e in events if e != "[DONE]"]


def test_chat_streams_reasoning_deltas_before_the_content(thinking: Emulator) -> None:
    field = thinking.workers[0].reasoning
    payload = {"messages": [{"role": "user", "content": "Why is the sky blue?"}], "stream": True}
    deltas = [
        c["choices"][0]["delta"] for c in sse(call(thinking, "/v1/chat/completions", payload).text)
    ]
    kinds = [next(iter(d)) for d in deltas[1:] if d]
    assert kinds[0] == field and kinds[-1] == "content"
    assert kinds == sorted(kinds, key=lambda k: k != field)  # all reasoning, then all content
    thought = "".join(d.get(field, "") for d in deltas)
    text = "".join(d.get("content", "") for d in deltas)
    whole = call(thinking, "/v1/chat/completions", {**payload, "stream": False}).json()
    message = whole["choices"][0]["message"]
    assert (message[field], message["content"]) == (thought, text)
    assert thought and "<think>" not in text


def test_text_apis_carry_reasoning_as_think_tags(thinking: Emulator) -> None:
    tgi = call(thinking, "/generate", {"inputs": "Why?", "parameters": {"max_new_tokens": 99}})
    completion = call(thinking, "/v1/completions", {"prompt": "Why?", "max_tokens": 99})
    for text in (tgi.json()["generated_text"], completion.json()["choices"][0]["text"]):
        assert text.startswith("<think>\n") and "\n</think>\n\n" in text


def test_the_client_still_reads_the_answer_of_a_thinking_model(thinking: Emulator) -> None:
    settings = {
        "endpoint": thinking.endpoint,
        "api_key": thinking.api_key,
        "base_url": thinking.base_url,
        "api": "openai",
    }
    with VastClient(**settings) as client:
        whole = client.chat([{"role": "user", "content": "Why?"}])
        with client.stream_chat([{"role": "user", "content": "Why?"}]) as stream:
            streamed = "".join(chunk.text for chunk in stream)
    assert whole.text == streamed and whole.text and "<think>" not in whole.text


def test_reasoning_turns_with_and_without_a_reasoning_parser() -> None:
    script = [
        Reasoning("Two tools.", [ToolCall("get_time", {"city": "Oslo"})]),
        Reasoning("Simple.", "Hello!"),
    ]
    payload = {"messages": [{"role": "user", "content": "hi"}], "tools": TOOLS}
    with Emulator(api="openai", reasoning="reasoning", script=script).serve() as emu:
        streamed = sse(call(emu, "/v1/chat/completions", {**payload, "stream": True}).text)
        deltas = [c["choices"][0]["delta"] for c in streamed if c["choices"]]
        assert "".join(d.get("reasoning", "") for d in deltas) == "Two tools."
        calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
        assert calls[0]["function"]["name"] == "get_time"
        message = call(emu, "/v1/chat/completions", payload).json()["choices"][0]["message"]
        assert (message["reasoning"], message["content"]) == ("Simple.", "Hello!")
    with Emulator(api="openai", script=script[1:]).serve() as emu:  # no reasoning parser
        message = call(emu, "/v1/chat/completions", payload).json()["choices"][0]["message"]
        assert message["content"] == "<think>\nSimple.\n</think>\n\nHello!"
        assert "reasoning" not in message and "reasoning_content" not in message


def test_both_apis_on_one_worker() -> None:
    with Emulator(api="both").serve() as emu:
        settings = {"endpoint": emu.endpoint, "api_key": emu.api_key, "base_url": emu.base_url}
        with VastClient(**settings, api="tgi") as tgi, VastClient(**settings, api="openai") as oa:
            assert tgi.generate("hi", max_tokens=2).text
            assert oa.generate("hi", max_tokens=2).text
            assert oa.chat([{"role": "user", "content": "hi"}], max_tokens=2).text
        paths = [r.path for r in emu.worker_requests]
        assert paths == ["/generate", "/v1/completions", "/v1/chat/completions"]
