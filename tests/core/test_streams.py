"""Stream decoding: the shared vectors whole and split at every byte, and SSE framing cases."""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import examples, load_vectors
from vast_llm import WorkerStreamError
from vast_llm._answer import AnswerBuilder
from vast_llm._apis import WorkerCall
from vast_llm._body import EventReader, read_events
from vast_llm._types import Chunk

CASES = load_vectors("streams.json")["cases"]
KINDS = {"tgi": "tgi", "openai-chat": "chat", "openai-completions": "completions"}


def call(kind: str, stop: tuple[str, ...] = (), think: bool = False) -> WorkerCall:
    return WorkerCall(kind, "/x", {}, 256, True, stop, think)


def pieces(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    last = 0
    for cut in sorted(set(cuts)):
        if 0 < cut < len(data):
            yield data[last:cut]
            last = cut
    yield data[last:]


def decode(
    data: bytes, kind: str, cuts: list[int], stop: tuple[str, ...] = (), think: bool = False
) -> dict[str, Any]:
    """Run a body through httpx, the bounded reader (_body: decoder, event parser, bounds) and
    AnswerBuilder, the way the client does."""
    response = httpx.Response(
        200,
        headers={"content-type": "text/event-stream"},
        stream=httpx.ByteStream(b"") if not data else _Chunks(list(pieces(data, cuts))),
    )
    builder = AnswerBuilder(call(kind, stop, think), 0.0, lambda: 0.0)
    chunks: list[Chunk] = []
    out: dict[str, Any] = {"chunks": chunks, "builder": builder}
    try:
        reader = EventReader(
            response, max_bytes=1 << 20, max_event=1 << 20, max_events=10_000, idle=60.0
        )
        for sse in read_events(response, reader):
            chunk = builder.feed(sse.event, sse.data)
            if chunk is not None:
                chunks.append(chunk)
            if builder.finished:
                break
        tail = builder.end()
        if tail is not None:
            chunks.append(tail)
    except WorkerStreamError as exc:
        out["error"] = exc
    return out


class _Chunks(httpx.SyncByteStream):
    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts

    def __iter__(self) -> Iterator[bytes]:
        yield from self.parts


def check(case: dict[str, Any], got: dict[str, Any]) -> None:
    expect = case["expect"]
    texts = [c.text for c in got["chunks"] if c.text]
    if "error" in expect or expect.get("truncated"):
        assert "error" in got, "an incomplete or failed stream must raise WorkerStreamError"
        assert "".join(texts) == "".join(expect["deltas_before_error"])
        if "error" in expect:
            assert expect["error"] in str(got["error"])
        return
    assert "error" not in got, got.get("error")
    builder: AnswerBuilder = got["builder"]
    assert "".join(texts) == expect["text"] == builder.text
    if "deltas" in expect:
        assert texts == expect["deltas"]
    assert builder.finish_reason == expect["finish_reason"]
    if "usage" in expect:
        usage = builder.usage
        assert usage is not None
        assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
            expect["usage"]["prompt_tokens"],
            expect["usage"]["completion_tokens"],
            expect["usage"]["total_tokens"],
        )
    if "completion_tokens" in expect:
        assert builder.usage is not None
        assert builder.usage.completion_tokens == expect["completion_tokens"]
    if "tool_calls" in expect:
        calls = builder._acc.tool_calls
        assert [(c.id, c.name, c.args) for c in calls] == [
            (t["id"], t["name"], t["arguments"]) for t in expect["tool_calls"]
        ]
    if "model" in expect:
        assert builder._acc.model == expect["model"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_vector_whole(case: dict[str, Any]) -> None:
    check(case, decode(case["stream"].encode(), KINDS[case["api"]], []))


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_vector_split_at_every_byte(case: dict[str, Any]) -> None:
    data = case["stream"].encode()
    for cut in range(1, len(data)):
        check(case, decode(data, KINDS[case["api"]], [cut]))


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
@settings(max_examples=examples(40), deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=5000), max_size=12))
def test_vector_any_chunking(case: dict[str, Any], cuts: list[int]) -> None:
    check(case, decode(case["stream"].encode(), KINDS[case["api"]], cuts))


def tgi_event(text: str, final: bool = False) -> str:
    event = {
        "token": {"id": 1, "text": text, "special": False},
        "generated_text": "x" if final else None,
        "details": {"finish_reason": "length", "generated_tokens": 2} if final else None,
    }
    return json.dumps(event)


@pytest.mark.parametrize("newline", ["\n", "\r", "\r\n"])
@pytest.mark.parametrize("prefix", ["data:", "data: "])
def test_line_endings_and_data_spacing(newline: str, prefix: str) -> None:
    body = (
        f": comment{newline}{newline}"
        f"{prefix}{tgi_event('a')}{newline}{newline}"
        f"{prefix}{tgi_event('b', final=True)}{newline}{newline}"
    )
    got = decode(body.encode(), "tgi", [])
    assert [c.text for c in got["chunks"]] == ["a", "b"]


def test_multi_line_data_is_joined_with_newlines() -> None:
    # A JSON document spread over two data: lines (legal SSE) decodes as one event.
    event = json.dumps(
        {"id": "c", "choices": [{"index": 0, "text": "hi", "finish_reason": "stop"}]}
    )
    head, tail = event[:10], event[10:]
    body = f"data: {head}\ndata: {tail}\n\ndata: [DONE]\n\n"
    got = decode(body.encode(), "completions", [])
    assert [c.text for c in got["chunks"]] == ["hi"]


def test_unicode_line_separator_is_not_a_line_break() -> None:
    # U+2028 inside a token must survive (str.splitlines would split on it).
    event = tgi_event("a\u2028b", final=True)
    got = decode(f"data:{event}\n\n".encode(), "tgi", [])
    assert [c.text for c in got["chunks"]] == ["a\u2028b"]


def test_done_ends_the_stream_even_if_more_follows() -> None:
    first = json.dumps({"choices": [{"index": 0, "text": "1", "finish_reason": None}]})
    late = json.dumps({"choices": [{"index": 0, "text": "LATE", "finish_reason": None}]})
    body = f"data: {first}\n\ndata: [DONE]\n\ndata: {late}\n\n"
    got = decode(body.encode(), "completions", [])
    assert "".join(c.text for c in got["chunks"]) == "1"


def test_error_event_type_is_an_error() -> None:
    got = decode(b"event: error\ndata: overloaded\n\n", "completions", [])
    assert isinstance(got["error"], WorkerStreamError)


def test_malformed_json_is_a_stream_error() -> None:
    got = decode(b"data:{nope\n\n", "tgi", [])
    assert "not JSON" in str(got["error"])


def test_empty_body_is_incomplete() -> None:
    assert isinstance(decode(b"", "tgi", [])["error"], WorkerStreamError)


def test_choices_other_than_zero_are_ignored() -> None:
    a = json.dumps({"choices": [{"index": 1, "text": "other", "finish_reason": None}]})
    b = json.dumps({"choices": [{"index": 0, "text": "mine", "finish_reason": "stop"}]})
    got = decode(f"data: {a}\n\ndata: {b}\n\ndata: [DONE]\n\n".encode(), "completions", [])
    assert "".join(c.text for c in got["chunks"]) == "mine"


@pytest.mark.parametrize("cut", range(1, 12))
def test_stop_sequence_cut_across_chunk_boundaries(cut: int) -> None:
    words = ["The", " answer", " is", " END", "HERE", " more"]
    text = "".join(words)
    stop = text[cut + 6 : cut + 12]  # a stop that straddles token boundaries
    events = "".join(
        f"data:{tgi_event(w, final=i == len(words) - 1)}\n\n" for i, w in enumerate(words)
    )
    got = decode(events.encode(), "tgi", [], stop=(stop,))
    out = "".join(c.text for c in got["chunks"])
    assert out == text[: text.index(stop)]
    assert got["builder"].finish_reason == "stop"


@settings(max_examples=examples(500), deadline=None)
@given(
    text=st.text(alphabet="abcXY ", max_size=40),
    stops=st.lists(st.text(alphabet="abcXY", min_size=1, max_size=4), max_size=3),
    cuts=st.lists(st.integers(min_value=1, max_value=40), max_size=8),
)
def test_stop_cutter_matches_a_whole_string_cut(
    text: str, stops: list[str], cuts: list[int]
) -> None:
    from vast_llm._decoders import StopCutter

    cutter = StopCutter(stops)
    out = ""
    last = 0
    for cut in [*sorted(set(c for c in cuts if c < len(text))), len(text)]:
        out += cutter.feed(text[last:cut])
        last = cut
    out += cutter.flush()
    assert out == _reference_cut(text, stops)


def _reference_cut(text: str, stops: list[str]) -> str:
    """Text generated one character at a time stops when the first stop sequence completes."""
    for end in range(1, len(text) + 1):
        done = [s for s in stops if text[:end].endswith(s)]
        if done:
            return text[: end - max(len(s) for s in done)]
    return text


def test_overlapping_stops_cut_the_same_however_chunked() -> None:
    from vast_llm._decoders import StopCutter

    for pieces in (["XXYX"], ["XXY", "X"], ["X", "X", "Y", "X"]):
        cutter = StopCutter(["Y", "XYX"])
        out = "".join(cutter.feed(p) for p in pieces) + cutter.flush()
        assert out == "XX"


# -- reasoning, logprobs, usage details, several choices (vLLM's shapes) ---------------------


def chat_event(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
    choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish, **extra}
    return "data: " + json.dumps({"model": "m", "choices": [choice]}) + "\n\n"


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_chat_stream_reasoning_fields(field: str) -> None:
    body = (
        chat_event({"role": "assistant", "content": ""})
        + chat_event({field: "Let me"})
        + chat_event({field: " think."})
        + chat_event({"content": "Paris."})
        + chat_event({}, "stop")
        + "data: [DONE]\n\n"
    )
    got = decode(body.encode(), "chat", [])
    assert [(c.reasoning, c.text) for c in got["chunks"]][:3] == [
        ("Let me", ""),
        (" think.", ""),
        ("", "Paris."),
    ]
    builder: AnswerBuilder = got["builder"]
    assert builder.reasoning == "Let me think." and builder.text == "Paris."
    assert builder.time_to_first_token is not None  # reasoning is output


def test_a_chat_answer_without_reasoning_has_none() -> None:
    body = chat_event({"content": "hi"}, "stop") + "data: [DONE]\n\n"
    got = decode(body.encode(), "chat", [])
    assert got["builder"].reasoning is None


THINK = "<think>\nStep one.\nStep two.\n</think>\n\nThe answer."


@pytest.mark.parametrize("kind", ["chat", "tgi"])
@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=len(THINK) - 1), max_size=10))
def test_leading_think_text_of_a_chat_answer_is_reasoning_however_split(
    kind: str, cuts: list[int]
) -> None:
    bounds = [0, *sorted(set(cuts)), len(THINK)]
    pieces = [THINK[a:b] for a, b in pairwise(bounds) if b > a]
    if kind == "chat":
        body = "".join(chat_event({"content": p}) for p in pieces)
        body += chat_event({}, "stop") + "data: [DONE]\n\n"
    else:
        body = "".join(
            f"data:{tgi_event(p, final=i == len(pieces) - 1)}\n\n" for i, p in enumerate(pieces)
        )
    got = decode(body.encode(), kind, [], think=True)
    builder: AnswerBuilder = got["builder"]
    assert builder.reasoning == "Step one.\nStep two."
    assert builder.text == "The answer."
    assert "".join(c.text for c in got["chunks"]) == "The answer."


def test_think_text_is_left_alone_unless_the_answer_starts_with_it() -> None:
    body = chat_event({"content": "I say <think>x</think>"}, "stop") + "data: [DONE]\n\n"
    got = decode(body.encode(), "chat", [], think=True)
    assert got["builder"].text == "I say <think>x</think>" and got["builder"].reasoning is None
    # Text completions are the model's text as written.
    body = f"data:{tgi_event('<think>x</think>y', final=True)}\n\n"
    assert decode(body.encode(), "tgi", [])["builder"].text == "<think>x</think>y"


def test_chat_stream_logprobs_accumulate() -> None:
    def entry(token: str) -> dict[str, Any]:
        return {
            "token": token,
            "logprob": -0.5,
            "bytes": list(token.encode()),
            "top_logprobs": [{"token": token, "logprob": -0.5}],
        }

    body = (
        chat_event({"content": "Hi"}, logprobs={"content": [entry("Hi")]})
        + chat_event({"content": " there"}, logprobs={"content": [entry(" there")]})
        + chat_event({}, "stop", logprobs=None)
        + "data: [DONE]\n\n"
    )
    got = decode(body.encode(), "chat", [])
    assert [c.logprobs for c in got["chunks"] if c.logprobs] == [[entry("Hi")], [entry(" there")]]
    assert [e["token"] for e in got["builder"].logprobs] == ["Hi", " there"]


def test_completions_logprob_columns_become_entries() -> None:
    from vast_llm._decoders import parse_logprobs

    columns = {
        "tokens": ["a", "b"],
        "token_logprobs": [-1.0, -2.0],
        "top_logprobs": [{"a": -1.0, "c": -3.0}, None],
        "text_offset": [0, 1],
    }
    assert parse_logprobs(columns) == [
        {
            "token": "a",
            "logprob": -1.0,
            "top_logprobs": [{"token": "a", "logprob": -1.0}, {"token": "c", "logprob": -3.0}],
        },
        {"token": "b", "logprob": -2.0},
    ]
    assert parse_logprobs(None) is None


def test_usage_details_cached_and_reasoning_tokens() -> None:
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 8},
        "completion_tokens_details": {"reasoning_tokens": 3},
    }
    body = (
        chat_event({"content": "x"}, "stop")
        + "data: "
        + json.dumps({"choices": [], "usage": usage})
        + "\n\ndata: [DONE]\n\n"
    )
    got = decode(body.encode(), "chat", [])
    parsed = got["builder"].usage
    assert (parsed.cached_tokens, parsed.reasoning_tokens) == (8, 3)
    assert parsed.to_dict() == usage


def test_whole_chat_answer_with_several_choices_reasoning_and_logprobs() -> None:
    from vast_llm._answer import whole_answer
    from vast_llm._types import RouteInfo

    route = RouteInfo("e", "http://w", 1, 1, 1, 1, 0.0, "g3")
    body = {
        "model": "m",
        "usage": {
            "prompt_tokens": 3,
            "completion_tokens": 4,
            "total_tokens": 7,
            "prompt_tokens_details": {"cached_tokens": 2},
        },
        "choices": [
            {
                "index": 1,
                "message": {"role": "assistant", "content": "Second END cut"},
                "finish_reason": "stop",
                "logprobs": None,
            },
            {
                "index": 0,
                "message": {"role": "assistant", "content": "First", "reasoning_content": "Hmm."},
                "finish_reason": "length",
                "logprobs": {"content": [{"token": "First", "logprob": -0.1}]},
            },
        ],
    }
    answer = whole_answer(
        WorkerCall("chat", "/x", {}, 256, False, ("END",), think=True),
        json.dumps(body).encode(),
        route,
        0.0,
        lambda: 1.0,
    )
    assert (answer.text, answer.reasoning, answer.finish_reason) == ("First", "Hmm.", "length")
    assert answer.logprobs == [{"token": "First", "logprob": -0.1}]
    assert answer.usage is not None and answer.usage.cached_tokens == 2
    [other] = answer.alternatives
    assert (other.text, other.reasoning, other.finish_reason) == ("Second ", None, "stop")
    assert other.route is route


def test_whole_answer_think_text_is_reasoning() -> None:
    from vast_llm._answer import whole_answer
    from vast_llm._types import RouteInfo

    route = RouteInfo("e", "http://w", 1, 1, 1, 1, 0.0, "g3")
    body = {"generated_text": THINK, "details": {"finish_reason": "eos_token"}}
    tgi_chat = WorkerCall("tgi", "/generate", {}, 256, False, (), think=True)
    answer = whole_answer(tgi_chat, json.dumps(body).encode(), route, 0.0, lambda: 0.0)
    assert (answer.reasoning, answer.text) == ("Step one.\nStep two.", "The answer.")


def test_common_finish_reasons() -> None:
    from vast_llm._types import common_finish_reason

    assert [
        common_finish_reason(r)
        for r in ("eos_token", "stop_sequence", "length", "stop", "tool_calls", None)
    ] == ["stop", "stop", "length", "stop", "tool_calls", None]
