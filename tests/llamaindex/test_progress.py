"""Progress events in LlamaIndex: each vast_llm.Progress event of a call is a VastProgressEvent
that event handlers see, inside the call's span, for every call kind of Vast, VastEmbedding and
VastRerank, sync and async. Against an emulator whose worker is cold (the waiting events) and
fails once (retrying)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from llama_index.core.bridge.pydantic import Field
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.llms import ChatMessage
from llama_index.core.schema import NodeWithScore, TextNode

from llamaindex_vast import Vast, VastEmbedding, VastProgressEvent, VastRerank
from llamaindex_vast._progress import listener
from tests.conftest import FAST
from vast_llm.emulator import Emulator

MESSAGES = [ChatMessage(role="user", content="hi")]


class Heard(BaseEventHandler):
    events: list[VastProgressEvent] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "Heard"

    def handle(self, event: Any, **kwargs: Any) -> None:
        if isinstance(event, VastProgressEvent):
            self.events.append(event)


@pytest.fixture(scope="module")
def cold_session() -> Iterator[Emulator]:
    with Emulator(api="both", cold_workers=True, activation_delay=0.05).serve() as emu:
        yield emu


@pytest.fixture
def cold(cold_session: Emulator) -> Iterator[Emulator]:
    """Its one worker "Stopped" (a cold start ahead) and its first worker request failing."""
    cold_session.reset()
    cold_session.scale_to_zero()
    cold_session.inject("worker_500")
    yield cold_session
    cold_session.reset()


@pytest.fixture
def heard() -> Iterator[list[VastProgressEvent]]:
    handler = Heard()
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(handler)
    yield handler.events
    dispatcher.event_handlers.remove(handler)


def settings(emu: Emulator) -> dict[str, Any]:
    return {"api_key": emu.api_key, "base_url": emu.base_url, "backoff": FAST}


def assert_cold_start_and_retry(events: list[VastProgressEvent], endpoint: str) -> None:
    kinds = [e.kind for e in events]
    assert kinds and kinds[0] == "waiting" and "Stopped" in str(events[0].status)
    assert "retrying" in kinds and kinds[-3:] == ["routed", "verified", "answering"]
    retry = events[kinds.index("retrying")]
    assert retry.attempt == 1 and retry.error and "500" in retry.error
    assert all(e.endpoint == endpoint for e in events)
    assert "waiting for a worker" in events[0].describe()


async def drain(result: Any) -> None:
    if isinstance(result, AsyncIterator):
        async for _ in result:
            pass
    elif isinstance(result, Iterator):
        for _ in result:
            pass


CALLS = {
    "chat": lambda llm: llm.chat(MESSAGES),
    "stream_chat": lambda llm: llm.stream_chat(MESSAGES),
    "complete": lambda llm: llm.complete("hi"),
    "stream_complete": lambda llm: llm.stream_complete("hi"),
    "achat": lambda llm: llm.achat(MESSAGES),
    "astream_chat": lambda llm: llm.astream_chat(MESSAGES),
    "acomplete": lambda llm: llm.acomplete("hi"),
    "astream_complete": lambda llm: llm.astream_complete("hi"),
}


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize("api", ["openai", "tgi"])
async def test_every_llm_call_kind(
    cold: Emulator, heard: list[VastProgressEvent], call: str, api: str
) -> None:
    llm = Vast(cold.endpoint, api=api, max_new_tokens=4, **settings(cold))
    result = CALLS[call](llm)
    if call.startswith("a"):
        result = await result
    await drain(result)
    assert_cold_start_and_retry(heard, cold.endpoint)
    if not call.startswith(("stream", "astream")):
        # Inside the span of the call that made them (a stream's run after its call returns).
        assert {e.span_id for e in heard} == {heard[0].span_id}
        assert heard[0].span_id and f"Vast.{call}" in heard[0].span_id


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_embeddings_and_rerank(
    cold: Emulator, heard: list[VastProgressEvent], asynchronous: bool
) -> None:
    embedding = VastEmbedding(cold.endpoint, **settings(cold))
    reranker = VastRerank(cold.endpoint, top_n=1, **settings(cold))
    nodes = [NodeWithScore(node=TextNode(text=t)) for t in ("cold workers", "warm bread")]
    if asynchronous:
        assert await embedding.aget_query_embedding("cold")
    else:
        assert embedding.get_query_embedding("cold")
    assert_cold_start_and_retry(heard, cold.endpoint)
    heard.clear()
    cold.inject("worker_500")
    if asynchronous:
        best = await reranker.apostprocess_nodes(nodes, query_str="cold")
    else:
        best = reranker.postprocess_nodes(nodes, query_str="cold")
    assert best[0].node.get_content() == "cold workers"
    kinds = [e.kind for e in heard]
    assert kinds == ["routed", "verified", "retrying", "routed", "verified", "answering"]


def test_no_handler_no_listener(cold: Emulator) -> None:
    assert listener() is None  # the core then builds no event at all
    llm = Vast(cold.endpoint, api="openai", max_new_tokens=4, **settings(cold))
    assert llm.chat(MESSAGES).message.content
