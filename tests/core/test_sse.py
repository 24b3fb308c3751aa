"""The bounded event-stream decoder: the same events as httpx-sse on valid streams (the shared
vectors split at every byte, and generated streams), bounds on lines and events, and what
counts as progress."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from httpx_sse import EventSource
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import load_vectors
from vast_llm._sse import Event, EventDecoder, EventTooLarge, LineTooLong

CASES = load_vectors("streams.json")["cases"]
Seen = list[tuple[str, str, str, int | None]]


class _Parts(httpx.SyncByteStream):
    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts

    def __iter__(self) -> Iterator[bytes]:
        yield from (part for part in self.parts if part)


def httpx_sse(parts: list[bytes]) -> Seen:
    response = httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=_Parts(parts)
    )
    return [(e.event, e.data, e.id, e.retry) for e in EventSource(response).iter_sse()]


def ours(parts: list[bytes], **bounds: int) -> Seen:
    decoder = EventDecoder(**bounds)
    seen: Seen = []
    for part in parts:
        seen += [(e.event, e.data, e.id, e.retry) for e in decoder.feed(part).events]
    return seen


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    out, last = [], 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}):
        out.append(data[last:cut])
        last = cut
    return [*out, data[last:]]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_shared_vectors_whole_and_split_at_every_byte(case: dict[str, str]) -> None:
    data = case["stream"].encode()
    want = httpx_sse([data])
    assert want, "every vector has events"
    assert ours([data]) == want
    assert ours([data[i : i + 1] for i in range(len(data))]) == want
    for at in range(1, len(data)):
        assert ours([data[:at], data[at:]]) == want, at


# Generated streams: field lines, comments, unknown fields and blank lines, with every kind
# of line end; values are any text without CR or LF (U+2028, NUL and non-ASCII included).
_value = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n"), max_size=20
)
_line = st.one_of(
    st.builds(lambda v: f"data:{v}", _value),
    st.builds(lambda v: f"data: {v}", _value),
    st.just("data"),
    st.builds(lambda v: f"event: {v}", _value),
    st.builds(lambda v: f"id: {v}", _value),
    st.builds(lambda n: f"retry: {n}", st.integers(0, 10**6)),
    st.builds(lambda v: f":{v}", _value),
    st.builds(lambda v: f"other: {v}", _value),
    st.just(""),
)
_end = st.sampled_from(["\n", "\r", "\r\n"])


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(st.tuples(_line, _end), max_size=30))
    text = "".join(line + end for line, end in lines)
    if text.startswith("\ufeff"):
        text = text[1:]  # a leading BOM is the one documented difference
    return text.encode()


@given(data=streams(), cuts=st.lists(st.integers(min_value=0), max_size=10))
def test_same_events_as_httpx_sse(data: bytes, cuts: list[int]) -> None:
    parts = split(data, cuts)
    assert ours(parts) == httpx_sse(parts) == httpx_sse([data])


@given(data=streams())
def test_same_events_as_httpx_sse_one_event_a_chunk(data: bytes) -> None:
    # As workers send them: each chunk ends at a blank line (the decoder's fast path takes the
    # ones that are a single data line; the others go the general way).
    parts = re.split(b"(?<=\n\n)", data)
    assert ours(parts) == httpx_sse([data])


def test_the_fast_path_keeps_the_bounds_and_the_state() -> None:
    with pytest.raises(LineTooLong):
        EventDecoder(max_line=10).feed(b"data: 0123456789\n\n")
    with pytest.raises(EventTooLarge):
        EventDecoder(max_event=3).feed(b"data: abcd\n\n")
    assert EventDecoder(max_event=4).feed(b"data: abcd\n\n").events == [Event(data="abcd")]
    decoder = EventDecoder()
    assert decoder.feed(b"id: 7\nevent: e\n").events == []
    assert decoder.feed(b"data: x\n\n").events == [Event("e", "x", "7")]  # the pending fields
    assert decoder.feed(b"data:y\n\n") == ([Event("message", "y", "7")], True)  # id kept
    assert decoder.feed(b"data: \xff\n\n").events == [Event("message", "\ufffd", "7")]


def test_only_cr_lf_and_crlf_end_lines() -> None:
    data = "data: a\u2028b\u0085c\x0cd\n\n".encode()
    assert ours([data]) == [("message", "a\u2028b\u0085c\x0cd", "", None)]


def test_a_cr_ending_one_chunk_and_an_lf_starting_the_next_are_one_line_end() -> None:
    decoder = EventDecoder()
    assert decoder.feed(b"data: x\r").events == []
    fed = decoder.feed(b"\n\r")  # the LF pairs with the CR; the CR ends the blank line at once
    assert fed.events == [Event("message", "x")] and fed.progress
    assert decoder.feed(b"\ndata: y\r\r").events == [Event("message", "y")]


def test_fields() -> None:
    data = (
        b"\xef\xbb\xbfevent: add\ndata\ndata:  two spaces\nid: 7\nretry: 1500\nfoo: bar\n\n"
        b"id: bad\0id\nretry: 1e3\ndata: \xff\n\n"
    )
    assert ours([data]) == [
        ("add", "\n two spaces", "7", 1500),
        ("message", "\ufffd", "7", None),  # the last valid id is kept
    ]


def test_progress_is_a_complete_event_with_a_field() -> None:
    decoder = EventDecoder()
    for chunk in [b": keep-alive\n", b":\n\n", b"\n\n", b"data: {", b"}", b"\n", b"unknown: 1\n"]:
        assert decoder.feed(chunk) == ([], False), chunk
    fed = decoder.feed(b"\n")
    assert fed == ([Event("message", "{}")], True)
    decoder.feed(b"id: 1\n\n")
    # httpx-sse dispatches an event at every blank line once an id was set: not progress.
    assert decoder.feed(b"\n\n") == ([Event(id="1"), Event(id="1")], False)


def test_a_line_without_end_is_refused_as_it_grows() -> None:
    decoder = EventDecoder(max_line=10_000)
    fed = []

    def trickle() -> None:
        while len(fed) < 1000:
            fed.append(1000)
            decoder.feed(b"x" * 1000)

    with pytest.raises(LineTooLong):
        trickle()
    assert sum(fed) == 11_000  # refused by the first kilobyte past the bound
    with pytest.raises(LineTooLong):  # a whole long line in one chunk
        EventDecoder(max_line=10).feed(b"data: 0123456789\n")
    assert EventDecoder(max_line=10).feed(b"data: 0123\n\n").events == [Event(data="0123")]


def test_data_lines_without_a_blank_line_are_refused() -> None:
    decoder = EventDecoder(max_event=1000)
    with pytest.raises(EventTooLarge):
        decoder.feed(b"data: 0123456789\n" * 1000)
    with pytest.raises(EventTooLarge):  # empty data lines count their newline
        EventDecoder(max_event=100).feed(b"data:\n" * 200)
    exact = EventDecoder(max_event=5)
    assert exact.feed(b"data: ab\ndata: cd\n\n").events == [Event(data="ab\ncd")]


def test_comments_and_other_fields_buffer_nothing() -> None:
    decoder = EventDecoder(max_line=100, max_event=100)
    for _ in range(10_000):
        assert decoder.feed(b": ping\nother: x\nevent: e\n") == ([], False)
    assert decoder.feed(b"data: 1\n\n").events == [Event("e", "1")]
