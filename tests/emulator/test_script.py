"""Scripted turns: the Python API, its JSON/YAML form, and what workers answer when playing one."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import settings_for
from tests.emulator.test_worker import call
from vast_llm import VastClient, WorkerError, WorkerStreamError
from vast_llm.emulator import (
    Answer,
    Emulator,
    Fail,
    GenRequest,
    Json,
    Match,
    Reasoning,
    Script,
    ScriptError,
    ToolCall,
    Turn,
)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The local time in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def client_for() -> Iterator[Any]:
    clients: list[VastClient] = []

    def make(emu: Emulator, **overrides: Any) -> VastClient:
        client = VastClient(**settings_for(emu, api="openai", **overrides))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def test_turns_play_in_order_then_the_fake_answers(client_for: Any) -> None:
    with Emulator(api="openai", script=["one", Answer("two")]).serve() as emu:
        client = client_for(emu)
        said = [client.chat(user("hi")).text for _ in range(3)]
        assert said[:2] == ["one", "two"]
        with Emulator(api="openai").serve() as plain:
            assert said[2] == client_for(plain).chat(user("hi")).text  # the deterministic fake
        assert [r.turn for r in emu.worker_requests] == [1, 2, None]
        emu.assert_all_scripted_used()
        assert emu.script is not None and emu.script.uses == (1, 1)


def test_a_condition_takes_the_first_matching_turn(client_for: Any) -> None:
    script = [Turn("It is sunny.", when=Match(last_user_contains="WEATHER")), "Hello."]
    with Emulator(api="openai", script=script).serve() as emu:
        client = client_for(emu)
        assert client.chat(user("hi")).text == "Hello."  # passed turn 1 by
        assert client.chat(user("The weather?")).text == "It is sunny."
        assert [r.turn for r in emu.worker_requests] == [2, 1]


def test_callable_conditions_and_replies_see_the_request(client_for: Any) -> None:
    def echo(request: GenRequest) -> str:
        return f"you said {request.last_user_message!r} ({request.kind})"

    script = [Turn(echo, when=lambda request: "echo" in request.last_user_message, times=None)]
    with Emulator(api="openai", script=script).serve() as emu:
        client = client_for(emu)
        assert client.chat(user("echo 1")).text == "you said 'echo 1' (chat)"
        assert client.chat(user("echo 2")).text == "you said 'echo 2' (chat)"
        assert client.chat(user("other")).text != "you said 'other' (chat)"
        assert emu.script is not None and emu.script.uses == (2,)
        emu.assert_all_scripted_used()  # times=None: used once is enough


def test_scripted_tool_calls_whole_and_streamed(client_for: Any) -> None:
    parallel = [ToolCall("get_weather", {"city": "Rome"}), ToolCall("get_time")]
    script = Script([ToolCall(), parallel, parallel], unscripted="error")
    with Emulator(api="openai", script=script).serve() as emu:
        client = client_for(emu)
        params = {"tools": [WEATHER, TIME]}
        first = client.chat(user("What time is it in 'Oslo'?"), **params)
        # No name: the tool that best matches the message; no arguments: from the message.
        assert [(c.name, json.loads(c.arguments)) for c in first.tool_calls] == [
            ("get_time", {"city": "Oslo"})
        ]
        whole = client.chat(user("Weather and time in Lima?"), **params)
        with client.stream_chat(user("Weather and time in Lima?"), **params) as stream:
            list(stream)
            streamed = stream.completion()
        for answer in (whole, streamed):
            assert [(c.name, json.loads(c.arguments)) for c in answer.tool_calls] == [
                ("get_weather", {"city": "Rome"}),
                ("get_time", {"city": "Lima"}),
            ]
            assert answer.finish_reason == "tool_calls"
            assert len({c.id for c in answer.tool_calls}) == 2
        emu.assert_all_scripted_used()


def test_tool_calls_on_text_apis_are_written_out(tgi: Emulator) -> None:
    with Emulator(api="tgi", script=[ToolCall("add", {"a": 1})]).serve() as emu:
        text = call(emu, "/generate", {"inputs": "add 1"}).json()["generated_text"]
        assert json.loads(text) == {"name": "add", "arguments": {"a": 1}}


def test_a_tool_call_without_tools_is_a_422_that_says_why(client_for: Any) -> None:
    with Emulator(api="openai", script=[ToolCall()]).serve() as emu:
        with pytest.raises(WorkerError) as info:
            client_for(emu).chat(user("hi"))
        assert info.value.status_code == 422
        assert b"turn 1" in info.value.content and b"needs tools" in info.value.content


def test_json_turns(client_for: Any) -> None:
    script = [Json({"city": "Paris"}), Json()]
    with Emulator(api="openai", script=script).serve() as emu:
        client = client_for(emu)
        assert json.loads(client.chat(user("x")).text) == {"city": "Paris"}
        made_up = json.loads(client.chat(user("Give 'name' and 'age' as JSON")).text)
        assert set(made_up) == {"name", "age"}


def test_fail_turns_strike_where_their_fault_does(client_for: Any) -> None:
    script = [
        Fail("worker_500"),
        "after a 500",
        Fail("route_500"),
        "after a route 500",
        Turn(Fail("stream_cut", after=1), when=Match(last_user_contains="c")),
        "after a cut",
    ]
    with Emulator(api="openai", script=script).serve() as emu:
        client = client_for(emu)
        answer = client.chat(user("a"))
        assert (answer.text, answer.route.attempts) == ("after a 500", 2)
        routes = len(emu.route_requests)
        assert client.chat(user("b")).text == "after a route 500"
        assert len(emu.route_requests) - routes == 2  # the router failed once, then assigned
        chunks: list[str] = []
        with pytest.raises(WorkerStreamError), client.stream_chat(user("c")) as stream:
            chunks.extend(chunk.text for chunk in stream)
        assert len(chunks) == 1  # the cut came after one token (the fake's), and is not retried
        assert client.chat(user("d")).text == "after a cut"
        emu.assert_all_scripted_used()
        assert [r.turn for r in emu.worker_requests] == [1, 2, 4, 5, 6]


def test_assert_all_used_names_the_turn_and_the_request(client_for: Any) -> None:
    script = [
        Turn(ToolCall("get_weather"), when=Match(last_user_contains="weather")),
        "It is noon.",
        "Anything else?",
    ]
    with Emulator(api="openai", script=script).serve() as emu:
        client_for(emu).chat(user("What time is it in Paris?"), tools=[WEATHER, TIME])
        with pytest.raises(AssertionError) as info:
            emu.assert_all_scripted_used()
    message = str(info.value)
    assert "endpoint 'emulated-endpoint', 2 of 3 turns not used" in message
    assert (
        "turn 1: ToolCall(name='get_weather', arguments=None) when last user message contains "
        "'weather'; did not match request #1 (chat: last user message 'What time is it in "
        "Paris?', tools get_weather, get_time)"
    ) in message
    assert "turn 3: Answer(text='Anything else?'); no request was left for it (1 seen" in message


def test_unscripted_error_is_a_422_naming_the_turns_left(client_for: Any) -> None:
    script = Script([Turn("sunny", when=Match(last_user_contains="weather"))], unscripted="error")
    with Emulator(api="openai", script=script).serve() as emu, pytest.raises(WorkerError) as info:
        client_for(emu).chat(user("hello there"))
    assert info.value.status_code == 422
    error = json.loads(info.value.content)["error"]
    assert error == (
        "vast emulator script: no scripted turn matches request #1 (chat: last user message "
        "'hello there'); turns left: turn 1: Answer(text='sunny') when last user message "
        "contains 'weather'"
    )


def test_reset_rewinds_and_responses_still_cycle(client_for: Any) -> None:
    with Emulator(api="openai", responses=["a", "b"]).serve() as emu:
        client = client_for(emu)
        assert [client.chat(user("x")).text for _ in range(3)] == ["a", "b", "a"]
        emu.reset()
        assert client.chat(user("x")).text == "a"
    with pytest.raises(ValueError, match="not both"):
        Emulator(script=["a"], responses=["b"])


def test_scripts_are_per_endpoint(client_for: Any) -> None:
    emu = Emulator(api="openai", script=["default endpoint"])
    emu.add_endpoint("other", api="openai", script=["other endpoint"])
    with emu.serve():
        assert client_for(emu).chat(user("x")).text == "default endpoint"
        assert client_for(emu, endpoint="other").chat(user("x")).text == "other endpoint"
        assert set(emu.scripts) == {"emulated-endpoint", "other"}
        emu.assert_all_scripted_used()


ALL_KINDS = Script(
    [
        "plain",
        ToolCall("get_weather", {"city": "Paris"}),
        ToolCall(),
        [ToolCall("a"), ToolCall("b", {"x": [1, 2]})],
        Reasoning("Let me think.", "42"),
        Reasoning("Tools help.", ToolCall("get_time")),
        Json({"k": "v"}),
        Json(),
        Fail("stream_cut", after=3),
        Turn("when", when=Match(last_user_contains="x", has_tool_results=True), times=None),
        Turn("twice", times=2),
    ],
    unscripted="error",
)


def test_the_json_form_maps_one_to_one(tmp_path: Path) -> None:
    data = ALL_KINDS.to_data()
    assert data["turns"][:4] == [
        {"answer": "plain"},
        {"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}},
        {"tool_call": {}},
        {"tool_calls": [{"name": "a"}, {"name": "b", "arguments": {"x": [1, 2]}}]},
    ]
    assert data["turns"][4:6] == [
        {"reasoning": "Let me think.", "answer": "42"},
        {"reasoning": "Tools help.", "tool_call": {"name": "get_time"}},
    ]
    assert data["turns"][8:] == [
        {"fail": "stream_cut", "after": 3, "delay": 2.0},
        {
            "answer": "when",
            "when": {"last_user_contains": "x", "has_tool_results": True},
            "times": None,
        },
        {"answer": "twice", "times": 2},
    ]
    again = Script.from_data(json.loads(json.dumps(data)))
    assert again.turns == ALL_KINDS.turns and again.unscripted == "error"
    path = tmp_path / "script.json"
    path.write_text(json.dumps(data))
    assert Script.load(path).turns == ALL_KINDS.turns
    assert Script.from_data(["a", {"answer": "b"}]).turns == (Turn("a"), Turn("b"))


def test_yaml_scripts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    yaml = pytest.importorskip("yaml")
    path = tmp_path / "script.yaml"
    path.write_text(yaml.safe_dump(ALL_KINDS.to_data()))
    assert Script.load(path).turns == ALL_KINDS.turns
    monkeypatch.setitem(sys.modules, "yaml", None)  # as if PyYAML were not installed
    with pytest.raises(ScriptError, match=r"needs PyYAML \(pip install pyyaml\); or write"):
        Script.load(path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (["ok", {"anser": "x"}], "turn 2: unknown key(s) ['anser']"),
        (["ok", {"answer": "x", "json": 1}], "turn 2: a turn has exactly one of"),
        ([{"fail": "worker_999"}], "turn 1: unknown fault 'worker_999'"),
        ([{"fail": "route_500", "when": {"kind": "chat"}}], "cannot have a `when` condition"),
        ([{"answer": "x", "when": {"contains": "y"}}], "turn 1: unknown condition(s)"),
        ([{"tool_call": {"name": "a", "args": {}}}], "turn 1: a tool call is a name"),
        ([{"answer": "x", "times": 0}], "turn 1: Turn.times must be >= 1"),
        ({"turn": []}, "a script object has 'turns'"),
        ("hello", "a script is a list of turns"),
    ],
)
def test_bad_scripts_say_where(data: Any, message: str) -> None:
    with pytest.raises(ScriptError) as info:
        Script.from_data(data)
    assert message in str(info.value)


def test_records_are_read_only(client_for: Any) -> None:
    with Emulator(api="openai", script=["hi"]).serve() as emu:
        client_for(emu).chat(user("x"))
        requests = emu.requests
        assert isinstance(requests, tuple) and isinstance(emu.worker_requests, tuple)
        worker = emu.worker_requests[0]
        assert (worker.status, worker.turn, worker.json["payload"]["messages"]) == (
            200,
            1,
            user("x"),
        )
        with pytest.raises(dataclasses.FrozenInstanceError):
            worker.status = 500  # type: ignore[misc]
        with pytest.raises(TypeError, match="read-only"):
            worker.headers["x"] = "y"  # type: ignore[index]
        assert json.loads(json.dumps(worker.headers))["content-type"] == "application/json"
        assert json.loads(emu.route_requests[0].response or b"")["url"] == worker_url(emu)


def worker_url(emu: Emulator) -> str:
    return emu.worker_urls()[0]


def test_assert_all_faults_used(client_for: Any) -> None:
    with Emulator(api="openai").serve() as emu:
        emu.inject("worker_500", times=2)
        emu.inject("stream_cut", times=None, endpoint="elsewhere")
        with pytest.raises(WorkerError):
            client_for(emu, max_retries=0).chat(user("x"))
        with pytest.raises(AssertionError) as info:
            emu.assert_all_faults_used()
        assert str(info.value) == (
            "faults not used up:\n  worker_500 (2 time(s)): struck 1 time(s)\n"
            "  stream_cut (always, endpoint='elsewhere'): struck 0 time(s)"
        )
        emu.clear_faults()
        emu.assert_all_faults_used()


def test_a_failing_condition_is_a_422_naming_its_turn(client_for: Any) -> None:
    def broken(request: GenRequest) -> bool:
        raise KeyError("oops")

    with Emulator(api="openai", script=["a", Turn("b", when=broken)]).serve() as emu:
        client = client_for(emu)
        assert client.chat(user("x")).text == "a"  # turn 1 came first: no condition asked
        with pytest.raises(WorkerError) as info:
            client.chat(user("y"))
    assert info.value.status_code == 422
    assert json.loads(info.value.content)["error"] == (
        "vast emulator script: turn 2's condition raised KeyError: 'oops'"
    )


def test_a_script_given_as_text_must_be_a_file() -> None:
    with pytest.raises(ScriptError, match=r"for one answer, give a list: \['Hello'\]"):
        Emulator(script="Hello")
