"""Emulated workers on the wire: a current worker's checks, in its order, and both model APIs."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests import loopback
from vast_llm.emulator import Emulator
from vast_llm.emulator._models import FakeModel, GenRequest, fake_arguments


def assign(emu: Emulator, endpoint: str | None = None) -> dict[str, Any]:
    body = {"endpoint": endpoint or emu.endpoint, "api_key": emu.api_key, "cost": 100}
    answer: dict[str, Any] = loopback.post(emu.base_url + "/route/", json=body).json()
    return answer


def call(
    emu: Emulator, path: str, payload: Any, *, auth: dict[str, Any] | None = None, **extra: Any
) -> httpx.Response:
    auth = auth or assign(emu)
    body = {"auth_data": auth, "session_id": None, "payload": payload, **extra}
    return loopback.post(auth["url"] + path, json=body)


TGI = {"inputs": "Hello", "parameters": {"max_new_tokens": 4, "details": True}}


def test_invalid_json_is_422(tgi: Emulator) -> None:
    url = assign(tgi)["url"]
    response = loopback.post(url + "/generate", content=b"{nope")
    assert response.status_code == 422 and response.json() == {"error": "invalid JSON"}


def test_missing_fields_are_listed(tgi: Emulator) -> None:
    auth = assign(tgi)
    del auth["request_idx"]
    response = loopback.post(auth["url"] + "/generate", json={"auth_data": auth})
    assert response.status_code == 422
    assert response.json() == {
        "auth_data": {"request_idx": "missing parameter"},
        "payload": "field missing",
    }
    response = call(tgi, "/generate", {"parameters": {}})
    assert response.json() == {"payload": {"inputs": "missing parameter"}}


def test_unknown_session_is_410(tgi: Emulator) -> None:
    response = call(tgi, "/generate", TGI, session_id="abc")
    assert response.status_code == 410


def test_bad_signature_is_401_with_an_empty_body(tgi: Emulator) -> None:
    auth = assign(tgi)
    auth["signature"] = auth["signature"][:-8] + "AAAAAAA="
    response = call(tgi, "/generate", TGI, auth=auth)
    assert response.status_code == 401 and response.content == b""


def test_overload_is_429_with_an_empty_body() -> None:
    with Emulator(max_concurrency=0).serve() as emu:
        response = call(emu, "/generate", TGI)
        assert response.status_code == 429 and response.content == b""


def test_model_errors_pass_through(tgi: Emulator) -> None:
    response = call(tgi, "/generate", {"inputs": "x", "parameters": {"temperature": 0}})
    assert response.status_code == 422 and "temperature" in response.json()["error"]


def test_other_api_routes_are_404(tgi: Emulator) -> None:
    assert call(tgi, "/v1/chat/completions", {"messages": []}).status_code == 404


def test_tgi_generate(tgi: Emulator) -> None:
    answer = call(tgi, "/generate", TGI).json()
    assert len(answer["generated_text"].split()) == 4
    assert answer["details"]["finish_reason"] == "length"
    assert answer["details"]["generated_tokens"] == 4


def test_tgi_stream_framing_is_exact(tgi: Emulator) -> None:
    body = call(tgi, "/generate_stream", TGI).text
    events = body.split("\n\n")
    assert events[-1] == "" and all(e.startswith("data:{") for e in events[:-1])
    parsed = [json.loads(e[5:]) for e in events[:-1]]
    assert [p["index"] for p in parsed] == [1, 2, 3, 4]
    assert all(p["generated_text"] is None for p in parsed[:-1])
    final = parsed[-1]
    assert final["generated_text"] == "".join(p["token"]["text"] for p in parsed)
    assert final["details"]["finish_reason"] == "length"
    assert final["details"]["generated_tokens"] == 4 and "input_length" in final["details"]
    assert "[DONE]" not in body and ", " not in events[0]  # compact JSON like TGI's serde


def test_tgi_stream_ends_with_a_special_token_on_eos(tgi: Emulator) -> None:
    body = call(
        tgi,
        "/generate_stream",
        {"inputs": "a", "parameters": {"max_new_tokens": 500, "details": True}},
    ).text
    final = json.loads(body.split("\n\n")[-2][5:])
    assert final["token"]["special"] is True and final["details"]["finish_reason"] == "eos_token"


def test_openai_chat_stream_framing(openai_emu: Emulator) -> None:
    payload = {
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 3,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    body = call(openai_emu, "/v1/chat/completions", payload).text
    events = body.split("\n\n")[:-1]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3


def test_openai_stream_without_include_usage_has_no_usage(openai_emu: Emulator) -> None:
    payload = {"prompt": "hi", "max_tokens": 3, "stream": True}
    body = call(openai_emu, "/v1/completions", payload).text
    assert "usage" not in body and body.endswith("data: [DONE]\n\n")


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "add",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "shout",
            "parameters": {"type": "object", "properties": {"text": {"type": "string"}}},
        },
    },
]


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ("auto", "add"),
        ("required", "add"),
        ({"type": "function", "function": {"name": "shout"}}, "shout"),
        ("none", None),
    ],
)
def test_tool_calls_honour_tool_choice(
    openai_emu: Emulator, tool_choice: Any, expected: Any
) -> None:
    payload = {
        "messages": [{"role": "user", "content": "go"}],
        "tools": TOOLS,
        "tool_choice": tool_choice,
    }
    message = call(openai_emu, "/v1/chat/completions", payload).json()["choices"][0]["message"]
    if expected is None:
        assert message["content"] and "tool_calls" not in message
    else:
        call_ = message["tool_calls"][0]
        assert call_["function"]["name"] == expected
        assert isinstance(json.loads(call_["function"]["arguments"]), dict)


def test_after_a_tool_result_the_answer_is_text(openai_emu: Emulator) -> None:
    messages = [
        {"role": "user", "content": "add 2 and 3"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "5"},
    ]
    payload = {"messages": messages, "tools": TOOLS}
    choice = call(openai_emu, "/v1/chat/completions", payload).json()["choices"][0]
    assert choice["finish_reason"] == "stop" and "5" in choice["message"]["content"]


def test_fake_arguments_are_schema_valid() -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "kind": {"enum": ["a", "b"]},
            "count": {"type": "integer", "minimum": 2},
            "ratio": {"type": "number"},
            "flag": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "maybe": {"anyOf": [{"type": "null"}, {"type": "integer"}]},
            "nested": {"$ref": "#/$defs/Inner"},
        },
        "$defs": {"Inner": {"type": "object", "properties": {"x": {"type": "string"}}}},
    }
    args = fake_arguments(schema)
    assert args["kind"] == "a" and args["count"] == 2 and isinstance(args["ratio"], float)
    assert args["flag"] is True and args["tags"] == ["tags sample"] and args["maybe"] == 3
    assert args["nested"] == {"x": "x sample"}


def test_fake_model_is_deterministic_and_scriptable() -> None:
    fake = FakeModel()
    one = fake.answer(GenRequest(prompt="same"))[0]
    assert one == fake.answer(GenRequest(prompt="same"))[0]
    assert one != fake.answer(GenRequest(prompt="other"))[0]
    scripted = FakeModel(responses=["first answer", "second answer"])
    said = ["".join(scripted.answer(GenRequest(prompt="x"))[0]) for _ in range(3)]
    assert said == ["first answer", "second answer", "first answer"]


def test_replays_are_refused_by_g1_workers() -> None:
    with Emulator(recipe="g1").serve() as emu:
        auth = assign(emu)
        assert call(emu, "/generate", TGI, auth=auth).status_code == 200
        assert call(emu, "/generate", TGI, auth=auth).status_code == 401


def test_g1_tgi_workers_forward_only_max_new_tokens() -> None:
    with Emulator(recipe="g1").serve() as emu:
        payload = {"inputs": "stop test", "parameters": {"max_new_tokens": 12}}
        full = call(emu, "/generate", payload).json()["generated_text"]
        stop = full.split()[2]
        payload["parameters"]["stop"] = [stop]
        assert call(emu, "/generate", payload).json()["generated_text"] == full


def test_current_workers_honour_stop_sequences(tgi: Emulator) -> None:
    payload: dict[str, Any] = {"inputs": "stop test", "parameters": {"max_new_tokens": 12}}
    full = call(tgi, "/generate", payload).json()["generated_text"]
    stop = full.split()[2]
    payload["parameters"]["stop"] = [stop]
    cut = call(tgi, "/generate", payload).json()["generated_text"]
    assert cut.endswith(stop) and len(cut) < len(full)  # TGI keeps the stop sequence


def test_flat_format_worker() -> None:
    with Emulator(payload_format="flat", recipe="g1").serve() as emu:
        auth = assign(emu)
        response = loopback.post(auth["url"] + "/generate", json={**auth, **TGI})
        assert response.status_code == 200 and response.json()["generated_text"]
