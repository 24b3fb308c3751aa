"""Embeddings, rerank, score and any-route requests end to end: the clients (sync and async,
one test body) against the emulator's OpenAI workers over loopback."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import settings_for
from vast_llm import AsyncVastClient, VastClient, WorkerError
from vast_llm.emulator import Emulator, FakeEmbedder, fake_embedding

DOCS = [
    "The autoscaler signs every worker assignment; the client verifies the signature.",
    "A cold start happens when no worker is ready and one must load its model.",
    "Workers run model servers such as vLLM or TGI behind Vast's pyworker.",
    "Retries happen on a fresh route, before the first byte of the answer.",
]


@pytest.fixture(scope="module")
def emu_session() -> Iterator[Emulator]:
    with Emulator(api="openai", workers=2, embedding_max_tokens=40).serve() as emu:
        yield emu


@pytest.fixture
def emu(emu_session: Emulator) -> Iterator[Emulator]:
    emu_session.reset()
    for worker in emu_session.workers:
        assert worker.pooling is not None
        worker.pooling.tamper = None
    yield emu_session
    emu_session.reset()


class Client:
    """One async face over both clients (the sync one runs in a thread, as sync code would)."""

    def __init__(self, flavor: str, emu: Emulator, **overrides: Any) -> None:
        self.flavor = flavor
        kwargs = settings_for(emu, api="openai", **overrides)
        self.client: Any = VastClient(**kwargs) if flavor == "sync" else AsyncVastClient(**kwargs)

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.flavor == "sync":
            return await asyncio.to_thread(getattr(self.client, method), *args, **kwargs)
        return await getattr(self.client, method)(*args, **kwargs)

    async def close(self) -> None:
        if self.flavor == "sync":
            self.client.close()
        else:
            await self.client.aclose()


@pytest.fixture
async def make(flavor: str) -> Any:
    made: list[Client] = []

    def build(emu: Emulator, **overrides: Any) -> Client:
        made.append(Client(flavor, emu, **overrides))
        return made[-1]

    yield build
    for client in made:
        await client.close()


def inputs_answered(emu: Emulator, field: str = "input") -> list[str]:
    """Every input of every pooling request the workers answered 200, in order."""
    return [
        text for r in emu.worker_requests if r.status == 200 for text in r.json["payload"][field]
    ]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.hypot(*a) / math.hypot(*b)


async def test_vectors_in_order_batched_with_usage_and_route_facts(
    emu: Emulator, make: Any
) -> None:
    client = make(emu)
    texts = [f"text number {i}" for i in range(10)]
    result = await client.call("embed", texts, batch_size=4)
    assert result.vectors == [fake_embedding(t) for t in texts]
    assert result.dimensions == 128 and len(result) == 10
    assert len(result.routes) == 3 and all(r.verified for r in result.routes)
    assert result.usage.prompt_tokens == 30 and result.model == "fake-embedding"
    sent = [r.json["payload"]["input"] for r in emu.worker_requests]
    assert sorted(sent) == [texts[0:4], texts[4:8], texts[8:10]]  # async: any arrival order
    assert {r.worker for r in emu.worker_requests} == {0, 1}  # spread over the workers
    assert all(emu.api_key not in r.text for r in emu.worker_requests)
    # The route call carries the cost Vast's worker counts: 0.1 of a reference request.
    assert [r.json["cost"] for r in emu.route_requests] == [50.0, 50.0, 50.0]


async def test_retrieval_finds_the_document_that_shares_the_question_words(
    emu: Emulator, make: Any
) -> None:
    client = make(emu)
    docs = (await client.call("embed", DOCS)).vectors
    question = (await client.call("embed", ["How does the client verify a signature?"])).vectors[0]
    best = max(range(len(DOCS)), key=lambda i: cosine(question, docs[i]))
    assert best == 0
    ranked = await client.call("rerank", "why is there a cold start?", DOCS, top_n=2)
    assert ranked.indices[0] == 1 and len(ranked.results) == 2
    assert ranked.results[0].document == DOCS[1]
    assert ranked.results[0].score > ranked.results[1].score


async def test_rerank_and_score_merge_batches_as_one_call(emu: Emulator, make: Any) -> None:
    client = make(emu)
    whole = await client.call("rerank", "worker model route", DOCS)
    split = await client.call("rerank", "worker model route", DOCS, batch_size=1)
    assert [(r.index, r.score) for r in split.results] == [
        (r.index, r.score) for r in whole.results
    ]
    assert len(split.routes) == 4 and len(whole.routes) == 1
    assert all("top_n" not in r.json["payload"] for r in emu.worker_requests)  # cut client-side
    scores = await client.call("score", "worker model route", DOCS, batch_size=3)
    assert scores.scores == [whole.results[whole.indices.index(i)].score for i in range(4)]
    assert emu.worker_requests[-1].json["payload"]["text_1"] == "worker model route"


async def test_empty_inputs_make_no_request_and_empty_strings_are_sent(
    emu: Emulator, make: Any
) -> None:
    client = make(emu)
    empty = await client.call("embed", [])
    assert (empty.vectors, empty.routes, empty.usage, empty.dimensions) == ([], (), None, None)
    assert (await client.call("rerank", "q", [])).results == []
    assert not emu.requests
    blank = await client.call("embed", ["", "words"])
    assert blank.vectors[0] == fake_embedding("") and len(blank.vectors) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((["a", 3, "b"],), r"texts\[1\] is a int"),
        (("one string",), "not one string"),
        (([b"bytes"],), r"texts\[0\] is a bytes"),
    ],
)
async def test_bad_input_is_a_type_error_before_anything_is_sent(
    emu: Emulator, make: Any, args: Any, message: str
) -> None:
    client = make(emu)
    with pytest.raises(TypeError, match=message):
        await client.call("embed", *args)
    with pytest.raises(TypeError, match="documents"):
        await client.call("rerank", "q", ["fine", None])
    with pytest.raises(TypeError, match="query must be a str"):
        await client.call("rerank", None, ["fine"])
    with pytest.raises(ValueError, match="top_n"):
        await client.call("rerank", "q", ["fine"], top_n=0)
    with pytest.raises(ValueError, match="batch_size"):
        await client.call("embed", ["fine"], batch_size=0)
    with pytest.raises(TypeError, match="'input' is the call's input"):
        await client.call("embed", ["fine"], input=["other"])
    assert not emu.requests


async def test_a_batch_refused_as_too_large_is_halved_and_nothing_answered_is_resent(
    make: Any,
) -> None:
    with Emulator(api="openai", embedding_max_batch=5).serve() as emu:
        client = make(emu)
        texts = [f"sentence {i}" for i in range(20)]
        result = await client.call("embed", texts, batch_size=16)
        assert result.vectors == [fake_embedding(t) for t in texts]
        statuses = [r.status for r in emu.worker_requests]
        assert statuses.count(413) == 2  # 16 refused, then 8; the 4s fit (and the last 4)
        assert sorted(inputs_answered(emu)) == sorted(texts)  # each text answered once
        ranked = await client.call("rerank", "sentence 3", texts, top_n=1)
        assert ranked.indices == [3]


async def test_one_text_over_the_workers_limit_is_named(emu: Emulator, make: Any) -> None:
    client = make(emu)
    texts = ["short"] * 5 + ["word " * 60] + ["short too"] * 2
    with pytest.raises(WorkerError, match=r"texts\[5\] alone is more than the worker takes") as e:
        await client.call("embed", texts)
    assert e.value.status_code == 400 and "maximum context length" in str(e.value)
    answered = inputs_answered(emu)
    assert sorted(answered) == sorted(texts[:5]) or sorted(answered) == sorted(
        texts[:5] + texts[6:]
    )  # answered once each (async: the last batch may be answered too); never the long one
    # vLLM truncates when asked to.
    result = await client.call("embed", texts, truncate_prompt_tokens=-1)
    assert len(result.vectors) == 8


@pytest.mark.parametrize(
    ("kind", "tamper", "problem"),
    [
        ("embeddings", lambda b: {**b, "data": b["data"][:-1]}, "2 vectors for 3 texts"),
        (
            "embeddings",
            lambda b: {**b, "data": [{**d, "embedding": [math.nan] * 128} for d in b["data"]]},
            "NaN",
        ),
        (
            "embeddings",
            lambda b: {
                **b,
                "data": [{**d, "embedding": d["embedding"][: 4 + d["index"]]} for d in b["data"]],
            },
            "mixed dimensions",
        ),
        (
            "embeddings",
            lambda b: {**b, "data": [{**d, "embedding": ["x"] * 128} for d in b["data"]]},
            "not a number",
        ),
        (
            "rerank",
            lambda b: {**b, "results": [{**r, "index": r["index"] + 10} for r in b["results"]]},
            "out of range",
        ),
    ],
)
async def test_a_malformed_answer_is_a_worker_error(
    emu: Emulator, make: Any, kind: str, tamper: Any, problem: str
) -> None:
    for worker in emu.workers:
        worker.pooling.tamper = lambda k, body: tamper(body) if k == kind else body  # type: ignore[union-attr]
    client = make(emu)
    call = ("embed", ["a", "b", "c"]) if kind == "embeddings" else ("rerank", "q", ["a", "b", "c"])
    with pytest.raises(WorkerError, match=problem):
        await client.call(*call)


async def test_mixed_dimensions_across_batches_are_caught(emu: Emulator, make: Any) -> None:
    def shrink_later(kind: str, body: dict[str, Any]) -> dict[str, Any]:
        # The second batch (["c"]) gets shorter vectors. Told apart by its size, not by arrival:
        # async batches run concurrently and may be answered in either order.
        if len(body["data"]) == 1:
            return {**body, "data": [{**d, "embedding": d["embedding"][:64]} for d in body["data"]]}
        return body

    for worker in emu.workers:
        worker.pooling.tamper = shrink_later  # type: ignore[union-attr]
    client = make(emu)
    with pytest.raises(
        WorkerError, match="mixed dimensions: texts from 2 have 64, earlier ones 128"
    ):
        await client.call("embed", ["a", "b", "c"], batch_size=2)


async def test_without_the_routes_workers_answer_404(make: Any) -> None:
    with Emulator(api="openai", embeddings=False).serve() as emu:
        client = make(emu)
        with pytest.raises(WorkerError, match="HTTP 404") as caught:
            await client.call("embed", ["a"])
        assert caught.value.status_code == 404
        assert (await client.call("generate", "still generates", max_tokens=3)).text


async def test_request_reaches_any_route_with_route_facts(emu: Emulator, make: Any) -> None:
    client = make(emu)
    answer = await client.call("request", "/v1/embeddings", {"input": "hi"}, timeout=5)
    assert answer.data["data"][0]["embedding"] == fake_embedding("hi")
    assert answer.route.verified and answer.status_code == 200 and answer.json() is answer.data
    with pytest.raises(WorkerError, match="HTTP 404"):
        await client.call("request", "/generate/sync", {"workflow": {}})
    with pytest.raises(WorkerError, match="HTTP 400"):
        await client.call("request", "/v1/embeddings", {"input": []})


def test_request_streams_server_sent_events(emu: Emulator) -> None:
    with VastClient(**settings_for(emu, api="openai")) as client:
        payload = {"prompt": "hi", "max_tokens": 4, "stream": True}
        with client.request("/v1/completions", payload, stream=True) as events:
            assert events.route is None
            got = list(events)
            assert events.route is not None and events.route.verified
        assert got[-1].data == "[DONE]"
        assert got[0].json()["object"] == "text_completion"
    assert emu.worker_requests[-1].headers["accept"] == "text/event-stream"


async def test_async_request_streams_too(emu: Emulator) -> None:
    async with AsyncVastClient(**settings_for(emu, api="openai")) as client:
        payload = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True}
        events = await client.request("/v1/chat/completions", payload, stream=True)
        async with events:
            got = [event.data async for event in events]
        assert got[-1] == "[DONE]" and events.route is not None


def test_iter_embed_reads_one_batch_at_a_time(emu: Emulator) -> None:
    read: list[int] = []

    def texts() -> Iterator[str]:
        for i in range(25):
            read.append(i)
            yield f"t {i}"

    with VastClient(**settings_for(emu, api="openai")) as client:
        batches = client.iter_embed(texts(), batch_size=10)
        first = next(batches)
        assert (first.start, len(first.vectors), len(read)) == (0, 10, 10)
        assert len(emu.worker_requests) == 1
        rest = list(batches)
    assert [b.start for b in rest] == [10, 20] and len(rest[-1].vectors) == 5


class SlowEmbedder(FakeEmbedder):
    """The fake model, taking its time (in a thread, as a real model does)."""

    inline = False

    def embed(self, texts: Any) -> list[list[float]]:
        time.sleep(0.05)
        return super().embed(texts)


async def test_async_batches_run_concurrently_within_the_clients_limit() -> None:
    with Emulator(api="openai").serve() as emu:
        emu.workers[0].pooling.embedder = SlowEmbedder()  # type: ignore[union-attr]
        async with AsyncVastClient(**settings_for(emu, api="openai", max_concurrency=3)) as client:
            texts = [f"t {i}" for i in range(40)]
            result = await client.embed(texts, batch_size=4)
            assert result.vectors == [fake_embedding(t) for t in texts]
            assert emu.workers[0].peak_inflight == 3  # ten batches, three at a time
            got = [b.start async for b in client.iter_embed(texts, batch_size=8, concurrency=2)]
            assert got == [0, 8, 16, 24, 32]


async def test_an_async_failure_cancels_the_batches_in_flight() -> None:
    with Emulator(api="openai", embedding_max_tokens=5).serve() as emu:
        emu.workers[0].pooling.embedder = SlowEmbedder()  # type: ignore[union-attr]
        async with AsyncVastClient(**settings_for(emu, api="openai")) as client:
            texts = ["ok"] * 3 + ["much too long for this worker at all"] + ["ok"] * 60
            with pytest.raises(WorkerError, match=r"texts\[3\]"):
                await client.embed(texts, batch_size=1, concurrency=8)
            await asyncio.sleep(0.2)
            assert emu.workers[0].inflight == 0
            sent = len(emu.worker_requests)
            assert sent < 30  # the rest were never sent


async def test_a_failing_worker_is_retried_on_a_fresh_route(emu: Emulator, make: Any) -> None:
    emu.inject("worker_500")
    client = make(emu)
    result = await client.call("embed", ["a", "b"])
    assert result.vectors == [fake_embedding("a"), fake_embedding("b")]
    assert result.routes[0].attempts == 2
    assert [r.status for r in emu.worker_requests] == [500, 200]
    reqnums = [r.json["auth_data"]["reqnum"] for r in emu.worker_requests]
    assert len(set(zip(reqnums, [r.worker for r in emu.worker_requests], strict=True))) == 2


def test_request_headers_reach_the_worker_but_never_credentials(emu: Emulator) -> None:
    with VastClient(**settings_for(emu, api="openai")) as client:
        headers = {"X-Trace": "abc", "Authorization": f"Bearer {emu.api_key}", "Cookie": "s=1"}
        client.request("/v1/embeddings", {"input": ["x"]}, headers=headers)
    sent = emu.worker_requests[-1].headers
    assert sent["x-trace"] == "abc"
    assert "authorization" not in sent and "cookie" not in sent
    assert emu.api_key not in emu.worker_requests[-1].text
