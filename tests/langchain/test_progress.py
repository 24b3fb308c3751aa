"""Progress events in LangChain: each vast_llm.Progress event of a call is a `vast_progress`
custom event of the model's own run (the calling run's, for embeddings and rerank), in
astream_events and in callback handlers, for sync and async calls, invoke and stream. Against
an emulator whose worker is cold (the waiting events) and fails once (retrying)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, PromptTemplate
from langchain_core.runnables import RunnableLambda

import vast_llm
from langchain_vast import ChatVast, VastEmbeddings, VastLLM, VastRerank
from langchain_vast._progress import _RUN
from tests.conftest import FAST
from vast_llm.emulator import Emulator

FIELDS = {
    "kind",
    "endpoint",
    "elapsed",
    "attempt",
    "status",
    "worker_url",
    "signature",
    "retry_in",
    "error",
}


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


def settings(emu: Emulator) -> dict[str, Any]:
    return {
        "endpoint": emu.endpoint,
        "api_key": emu.api_key,
        "base_url": emu.base_url,
        "backoff": FAST,
    }


def assert_cold_start_and_retry(events: list[dict[str, Any]], endpoint: str) -> None:
    """The events of one request to the cold, failing emulator, in order."""
    assert events and all(set(e) == FIELDS for e in events)
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "waiting" and "Stopped" in events[0]["status"]  # the router's own words
    assert "retrying" in kinds and kinds[-3:] == ["routed", "verified", "answering"]
    retry = events[kinds.index("retrying")]
    assert retry["attempt"] == 1 and "500" in retry["error"]
    assert all(e["endpoint"] == endpoint for e in events)


class Recorded:
    """What a handler heard: custom events, and the runs of models that started."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any], UUID]] = []
        self.runs: list[UUID] = []

    def progress(self) -> list[dict[str, Any]]:
        assert {name for name, _, _ in self.events} == {"vast_progress"}
        return [data for _, data, _ in self.events]

    def on_the_model_run(self) -> bool:
        return len(self.runs) == 1 and {run for _, _, run in self.events} == set(self.runs)


class Custom(Recorded, BaseCallbackHandler):
    def on_custom_event(self, name: str, data: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.events.append((name, data, run_id))

    def on_chat_model_start(self, *args: Any, run_id: UUID, **kwargs: Any) -> None:
        self.runs.append(run_id)

    def on_llm_start(self, *args: Any, run_id: UUID, **kwargs: Any) -> None:
        self.runs.append(run_id)


class AsyncCustom(Recorded, AsyncCallbackHandler):
    async def on_custom_event(self, name: str, data: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.events.append((name, data, run_id))

    async def on_chat_model_start(self, *args: Any, run_id: UUID, **kwargs: Any) -> None:
        self.runs.append(run_id)


def custom_events(events: list[Any]) -> list[dict[str, Any]]:
    return [e["data"] for e in events if e["event"] == "on_custom_event"]


# -- the chat model ---------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["openai", "tgi"])
async def test_astream_events_shows_the_cold_start_and_the_retry(cold: Emulator, api: str) -> None:
    llm = ChatVast(**settings(cold), api=api, max_tokens=4)
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | llm | StrOutputParser()
    events = [e async for e in chain.astream_events({"q": "hi"}, version="v2")]
    assert_cold_start_and_retry(custom_events(events), cold.endpoint)
    (model_start,) = [e for e in events if e["event"] == "on_chat_model_start"]
    progress = [e for e in events if e["event"] == "on_custom_event"]
    # Each event belongs to the model's run, inside the chain's.
    assert {e["name"] for e in progress} == {"vast_progress"}
    assert {e["run_id"] for e in progress} == {model_start["run_id"]}
    assert {tuple(e["parent_ids"]) for e in progress} == {tuple(model_start["parent_ids"])}
    # ... and comes before the first token.
    first_token = next(i for i, e in enumerate(events) if e["event"] == "on_chat_model_stream")
    assert max(i for i, e in enumerate(events) if e["event"] == "on_custom_event") < first_token


async def test_astream_events_of_the_model_alone(cold: Emulator) -> None:
    llm = ChatVast(**settings(cold), max_tokens=4)
    events = [e async for e in llm.astream_events("hi", version="v2")]
    assert_cold_start_and_retry(custom_events(events), cold.endpoint)


@pytest.mark.parametrize("streaming", [False, True])
def test_invoke_tells_the_callbacks(cold: Emulator, streaming: bool) -> None:
    handler = Custom()
    llm = ChatVast(**settings(cold), max_tokens=4, streaming=streaming)
    assert llm.invoke("hi", config={"callbacks": [handler]}).content
    assert_cold_start_and_retry(handler.progress(), cold.endpoint)
    assert handler.on_the_model_run()


def test_stream_tells_the_callbacks_and_leaves_no_context_behind(cold: Emulator) -> None:
    handler = Custom()
    llm = ChatVast(**settings(cold), max_tokens=4)
    chunks = llm.stream("hi", config={"callbacks": [handler]})
    first = next(chunks)
    assert _RUN.get() is None  # set around each step only, never across a yield
    assert [first, *chunks]
    assert_cold_start_and_retry(handler.progress(), cold.endpoint)
    assert handler.on_the_model_run()


@pytest.mark.parametrize("stream", [False, True])
async def test_async_handlers_are_awaited(cold: Emulator, stream: bool) -> None:
    handler = AsyncCustom()
    llm = ChatVast(**settings(cold), max_tokens=4)
    config: Any = {"callbacks": [handler]}
    if stream:
        assert [c async for c in llm.astream("hi", config=config)]
    else:
        assert (await llm.ainvoke("hi", config=config)).content
    assert_cold_start_and_retry(handler.progress(), cold.endpoint)
    assert handler.on_the_model_run()


def test_the_users_own_observers_still_hear_every_event(cold: Emulator) -> None:
    heard: list[str] = []
    handler = Custom()
    llm = ChatVast(**settings(cold), max_tokens=4)
    with vast_llm.observe(lambda p: heard.append(p.kind)):
        list(llm.stream("hi", config={"callbacks": [handler]}))
    assert heard == [e["kind"] for e in handler.progress()]


def test_a_call_without_handlers_dispatches_nothing(cold: Emulator) -> None:
    from langchain_vast._progress import model_run

    llm = ChatVast(**settings(cold), max_tokens=4)
    config, run = model_run(llm, None, asynchronous=False)
    assert run is None and config is None  # the caller's config, untouched
    assert llm.invoke("hi").content  # and works


# -- the text LLM -----------------------------------------------------------------------------


def test_text_llm_invoke_and_stream(cold: Emulator) -> None:
    llm = VastLLM(**settings(cold), max_new_tokens=4)
    for call in (llm.invoke, lambda p, config: list(llm.stream(p, config=config))):
        cold.scale_to_zero()
        cold.inject("worker_500")
        handler = Custom()
        assert call("hi", config={"callbacks": [handler]})
        assert_cold_start_and_retry(handler.progress(), cold.endpoint)
        assert handler.on_the_model_run()


async def test_text_llm_astream_events(cold: Emulator) -> None:
    llm = VastLLM(**settings(cold), max_new_tokens=4)
    chain = PromptTemplate.from_template("Q: {q}\nA:") | llm
    events = [e async for e in chain.astream_events({"q": "hi"}, version="v2")]
    assert_cold_start_and_retry(custom_events(events), cold.endpoint)
    (start,) = [e for e in events if e["event"] == "on_llm_start"]
    assert {e["run_id"] for e in events if e["event"] == "on_custom_event"} == {start["run_id"]}


# -- embeddings and rerank: on the run they are called in ---------------------------------------


async def test_embeddings_in_a_chain(cold: Emulator) -> None:
    embeddings = VastEmbeddings(**settings(cold))

    async def embed(text: str) -> list[float]:
        return await embeddings.aembed_query(text)

    lookup = RunnableLambda(embed)
    events = [e async for e in lookup.astream_events("hi", version="v2")]
    assert_cold_start_and_retry(custom_events(events), cold.endpoint)
    (start,) = [e for e in events if e["event"] == "on_chain_start"]
    assert {e["run_id"] for e in events if e["event"] == "on_custom_event"} == {start["run_id"]}

    cold.scale_to_zero()
    handler = Custom()
    RunnableLambda(embeddings.embed_query).invoke("hi", config={"callbacks": [handler]})
    assert handler.progress()[0]["kind"] == "waiting"
    assert embeddings.embed_query("on its own")  # no run, nobody to tell: just the vector


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_rerank_in_a_chain(cold: Emulator, asynchronous: bool) -> None:
    reranker = VastRerank(**settings(cold), top_n=1)
    documents = [Document(page_content="cold workers"), Document(page_content="warm bread")]

    async def arerank(query: str) -> Any:
        return await reranker.acompress_documents(documents, query)

    def rerank(query: str) -> Any:
        return reranker.compress_documents(documents, query)

    handler = AsyncCustom() if asynchronous else Custom()
    step = RunnableLambda(arerank) if asynchronous else RunnableLambda(rerank)
    config: Any = {"callbacks": [handler]}
    best = (
        await step.ainvoke("cold", config=config) if asynchronous else step.invoke("cold", config)
    )
    assert best[0].page_content == "cold workers"
    assert_cold_start_and_retry(handler.progress(), cold.endpoint)
