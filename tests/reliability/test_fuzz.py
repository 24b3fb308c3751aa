"""Fuzzing with hypothesis: the stream decoders, the route-answer parser and the event parsers
never fail with anything but our typed errors, and valid streams decode the same however they
are split. (The signature property — never verifies for a changed url — is in
tests/core/test_signing.py.)"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import examples
from tests.core.test_streams import decode
from vast_llm import WorkerStreamError
from vast_llm._decoders import OpenAIStreamDecoder, TGIStreamDecoder
from vast_llm._route import Ready, Rejected, Waiting, parse_route_answer

FUZZ = settings(
    max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
KINDS = st.sampled_from(["tgi", "chat", "completions"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@FUZZ
@given(body=st.binary(max_size=600), kind=KINDS, cuts=st.lists(st.integers(1, 600), max_size=6))
def test_any_bytes_any_chunking_only_typed_errors(body: bytes, kind: str, cuts: list[int]) -> None:
    got = decode(body, kind, cuts)  # decode() catches WorkerStreamError only
    assert "error" in got or got["builder"].finished


def _sse_body(kind: str, tokens: list[str], newline: str, comments: bool, space: bool) -> bytes:
    prefix = "data: " if space else "data:"
    events = []
    for i, token in enumerate(tokens):
        last = i == len(tokens) - 1
        if kind == "tgi":
            event: dict[str, Any] = {
                "index": i + 1,
                "token": {"id": i, "text": token, "special": False},
                "generated_text": "".join(tokens) if last else None,
                "details": {"finish_reason": "length", "generated_tokens": len(tokens)}
                if last
                else None,
            }
        elif kind == "chat":
            event = {
                "choices": [
                    {
                        "index": 0,
                        "delta": {"content": token},
                        "finish_reason": "stop" if last else None,
                    }
                ]
            }
        else:
            event = {
                "choices": [{"index": 0, "text": token, "finish_reason": "stop" if last else None}]
            }
        if comments:
            events.append(f": ping{newline}{newline}")
        events.append(f"{prefix}{json.dumps(event)}{newline}{newline}")
    if kind != "tgi":
        events.append(f"{prefix}[DONE]{newline}{newline}")
    return "".join(events).encode()


@FUZZ
@given(
    kind=KINDS,
    tokens=st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=8),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
    comments=st.booleans(),
    space=st.booleans(),
    cuts=st.lists(st.integers(1, 2000), max_size=10),
)
def test_valid_streams_decode_the_same_however_split(
    kind: str, tokens: list[str], newline: str, comments: bool, space: bool, cuts: list[int]
) -> None:
    body = _sse_body(kind, tokens, newline, comments, space)
    whole = decode(body, kind, [])
    split = decode(body, kind, cuts)
    assert "error" not in whole and "error" not in split
    assert whole["builder"].text == split["builder"].text == "".join(tokens)
    assert [c.text for c in whole["chunks"]] == [c.text for c in split["chunks"]]


@FUZZ
@given(
    status=st.sampled_from([200, 200, 200, 400, 401, 404, 429, 500, 503]),
    body=st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode())),
    headers=st.dictionaries(st.sampled_from(["retry-after", "content-type"]), st.text(max_size=20)),
)
def test_route_parser_never_raises(status: int, body: bytes, headers: dict[str, str]) -> None:
    outcome = parse_route_answer(
        status, headers, body, endpoint="e", base_url="https://x", api_key="SECRET-KEY"
    )
    assert isinstance(outcome, (Ready, Waiting, Rejected))
    if isinstance(outcome, Rejected):
        assert "SECRET-KEY" not in str(outcome.error)
    if isinstance(outcome, Ready):
        assert status == 200 and outcome.url.startswith(("http://", "https://"))


@FUZZ
@given(value=json_values, chat=st.booleans())
def test_event_parsers_give_chunks_or_typed_errors(value: Any, chat: bool) -> None:
    for decoder in (TGIStreamDecoder(), OpenAIStreamDecoder(chat=chat)):
        try:
            chunk = decoder.feed(json.dumps(value))
        except WorkerStreamError:
            continue
        assert chunk is None or isinstance(chunk.text, str)


# Events with the right keys and values of any type: where a careless parser would crash.
openai_events = st.fixed_dictionaries(
    {
        "choices": st.lists(
            st.fixed_dictionaries(
                {
                    "index": json_values,
                    "text": json_values,
                    "finish_reason": json_values,
                    "delta": json_values
                    | st.fixed_dictionaries(
                        {
                            "content": json_values,
                            "tool_calls": st.lists(
                                st.fixed_dictionaries(
                                    {
                                        "index": json_values,
                                        "id": json_values,
                                        "function": st.fixed_dictionaries(
                                            {"name": json_values, "arguments": json_values}
                                        ),
                                    }
                                ),
                                max_size=2,
                            ),
                        }
                    ),
                },
            ),
            max_size=2,
        )
    },
    optional={"usage": json_values, "model": json_values, "error": json_values},
)
tgi_events = st.fixed_dictionaries(
    {
        "token": st.fixed_dictionaries({"text": json_values, "special": json_values}),
        "generated_text": json_values,
        "details": json_values,
    },
    optional={"error": json_values},
)


@FUZZ
@given(event=openai_events, chat=st.booleans())
def test_openai_shaped_events_never_crash(event: Any, chat: bool) -> None:
    try:
        chunk = OpenAIStreamDecoder(chat=chat).feed(json.dumps(event))
    except WorkerStreamError:
        return
    assert chunk is None or isinstance(chunk.text, str)


@FUZZ
@given(event=tgi_events)
def test_tgi_shaped_events_never_crash(event: Any) -> None:
    try:
        chunk = TGIStreamDecoder().feed(json.dumps(event))
    except WorkerStreamError:
        return
    assert chunk is None or isinstance(chunk.text, str)


whole_answers = st.one_of(
    json_values,
    st.fixed_dictionaries({"generated_text": json_values, "details": json_values}),
    st.fixed_dictionaries(
        {
            "choices": st.lists(
                st.fixed_dictionaries(
                    {
                        "index": st.just(0) | json_values,
                        "text": st.text() | json_values,
                        "finish_reason": st.just("stop") | json_values,
                        "message": json_values
                        | st.fixed_dictionaries(
                            {
                                "content": json_values,
                                "tool_calls": json_values
                                | st.lists(
                                    st.fixed_dictionaries(
                                        {"id": json_values, "function": json_values}
                                    ),
                                    max_size=2,
                                ),
                            }
                        ),
                    }
                ),
                max_size=2,
            ),
            "usage": json_values,
            "model": json_values,
        }
    ),
)


@FUZZ
@given(body=whole_answers, kind=KINDS)
def test_whole_answer_parser_gives_answers_or_typed_errors(body: Any, kind: str) -> None:
    from vast_llm import WorkerError
    from vast_llm._apis import parse_answer

    try:
        parsed = parse_answer(kind, body)
    except WorkerError:
        return
    assert isinstance(parsed.text, str)
    assert parsed.finish_reason is None or isinstance(parsed.finish_reason, str)
    assert parsed.model is None or isinstance(parsed.model, str)
    assert all(isinstance(c.arguments, str) and isinstance(c.name, str) for c in parsed.tool_calls)
