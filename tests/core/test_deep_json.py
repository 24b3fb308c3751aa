"""Issue 14 item 4: JSON nested too deeply to parse (``RecursionError``) from a router or a worker
is the same typed error as malformed JSON, wherever it arrives."""

from __future__ import annotations

import json

import pytest

from vast_llm import RouteError, WorkerError, WorkerStreamError
from vast_llm._answer import whole_answer
from vast_llm._apis import WorkerCall, parse_answer
from vast_llm._decoders import OpenAIStreamDecoder, TGIStreamDecoder
from vast_llm._errors import json_excerpt
from vast_llm._route import MAX_DEPTH, Ready, Rejected, parse_route_answer
from vast_llm._signing import signed_message
from vast_llm._types import RouteInfo

DEEP = "[" * 100_000 + "]" * 100_000  # RecursionError in json.loads
NEARLY = "[" * 900 + "]" * 900  # parses, but encoding it again deeper in the stack may not
ROUTE = {"endpoint": "ep", "api_key": "k", "base_url": "http://r"}
INFO = RouteInfo("ep", "http://w", None, None, 1, 1, 0.0, "g3")


def deep_value(depth: int) -> object:
    value: object = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize("status", [200, 500, 429, 400])
def test_route_answers(status: int) -> None:
    got = parse_route_answer(status, {}, DEEP.encode(), **ROUTE)
    assert isinstance(got, Rejected) and isinstance(got.error, RouteError)
    error_field = b'{"error": ' + NEARLY.encode() + b"}"
    got = parse_route_answer(status, {}, error_field, **ROUTE)
    assert isinstance(got, Rejected) and isinstance(got.error, RouteError)
    assert got.retryable == (status != 400)  # a 200 nested too deeply: like garbage, retried


def test_a_route_answer_nested_past_the_bound_is_malformed_json() -> None:
    ok = {"url": "http://w", "signature": "s", "extra": deep_value(MAX_DEPTH - 1)}
    assert isinstance(parse_route_answer(200, {}, json.dumps(ok).encode(), **ROUTE), Ready)
    deep = {"url": "http://w", "signature": "s", "extra": json.loads(NEARLY)}
    got = parse_route_answer(200, {}, json.dumps(deep).encode(), **ROUTE)
    assert isinstance(got, Rejected) and got.retryable and "not a JSON object" in str(got.error)


def test_signing_a_field_too_deep_to_encode_is_no_message() -> None:
    cost = deep_value(100_000)
    assert (
        signed_message(
            "g2", {"cost": cost, "endpoint": "e", "reqnum": 1, "request_idx": 1, "url": "u"}
        )
        is None
    )


@pytest.mark.parametrize("kind", ["tgi", "completions", "chat"])
def test_whole_answers(kind: str) -> None:
    call = WorkerCall(kind, "/x", {}, 16, False, ())
    with pytest.raises(WorkerError, match="not JSON"):
        whole_answer(call, DEEP.encode(), INFO, 0.0, lambda: 0.0)
    with pytest.raises(WorkerError):  # parsed, then quoted in the error without dumping it whole
        parse_answer(kind, json.loads(NEARLY))


def test_odd_chat_contents_and_arguments() -> None:
    def chat(message: object) -> object:
        return {"choices": [{"index": 0, "message": message}]}

    deep = deep_value(100_000)
    with pytest.raises(WorkerError):
        parse_answer("chat", chat({"tool_calls": [{"function": {"arguments": deep}}]}))
    assert parse_answer("chat", chat({"content": [{"text": 5}, {"text": "ok"}]})).text == "ok"
    assert parse_answer("chat", chat({"content": {"a": deep}})).text.endswith("…")


@pytest.mark.parametrize("decoder", [TGIStreamDecoder(), OpenAIStreamDecoder(chat=True)])
def test_stream_events(decoder: TGIStreamDecoder | OpenAIStreamDecoder) -> None:
    with pytest.raises(WorkerStreamError, match="not JSON"):
        decoder.feed(DEEP)


def test_json_excerpt_never_raises_nor_dumps_everything() -> None:
    assert json_excerpt(deep_value(100_000)).endswith("…")
    assert len(json_excerpt(list(range(10**6)))) == 1000
    assert json_excerpt({"a": object()}).startswith('{"a": "<object object')
