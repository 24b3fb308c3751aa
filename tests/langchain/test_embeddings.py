"""VastEmbeddings and VastRerank against the emulator: retrieval in a vector store, reranking in
a chain, settings and errors (LangChain's standard embeddings suites: test_standard.py)."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.exceptions import ModelInvalidRequestError
from langchain_core.runnables import RunnableLambda
from langchain_core.vectorstores import InMemoryVectorStore

from langchain_vast import VastEmbeddings, VastRerank
from tests.conftest import FAST
from vast_llm import ConfigError, WorkerError
from vast_llm.emulator import Emulator, fake_embedding

DOCS = [
    "The autoscaler signs every worker assignment and the client verifies the signature.",
    "A cold start happens when no worker is ready and one must load its model.",
    "Workers run model servers such as vLLM or TGI behind the pyworker.",
    "Retries happen on a fresh route before the first byte of the answer.",
]


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(api="openai", workers=2).serve() as emulator:
        yield emulator


def params(emu: Emulator, **extra: Any) -> dict[str, Any]:
    return {
        "endpoint": emu.endpoint,
        "api_key": emu.api_key,
        "base_url": emu.base_url,
        "backoff": FAST,
        **extra,
    }


def test_retrieval_in_a_vector_store_goes_through_vast(emu: Emulator) -> None:
    emu.reset()
    embeddings = VastEmbeddings(**params(emu))
    store = InMemoryVectorStore.from_texts(DOCS, embeddings)
    found = store.similarity_search("How is the signature verified?", k=1)
    assert found[0].page_content == DOCS[0]
    assert embeddings.last_routes[0].verified  # the query's request
    assert [len(r.json["payload"]["input"]) for r in emu.worker_requests] == [4, 1]


async def test_async_embeddings_batch_concurrently(emu: Emulator) -> None:
    embeddings = VastEmbeddings(**params(emu, embed_batch_size=2, model="served-model"))
    vectors = await embeddings.aembed_documents(DOCS)
    assert vectors == [fake_embedding(d) for d in DOCS]
    assert len(embeddings.last_routes) == 2
    assert await embeddings.aembed_query("x") == fake_embedding("x")
    assert emu.worker_requests[-1].json["payload"]["model"] == "served-model"


def test_model_kwargs_reach_the_worker_and_settings_are_checked(emu: Emulator) -> None:
    embeddings = VastEmbeddings(**params(emu, model_kwargs={"dimensions": 8}))
    assert len(embeddings.embed_query("short")) == 8
    with pytest.raises(ConfigError, match="has no field 'dimension'"):
        VastEmbeddings(**params(emu, dimension=8))
    with pytest.raises(ConfigError, match="embed_batch_size"):
        VastEmbeddings(**params(emu, embed_batch_size=0))
    assert "api_key" not in embeddings.model_dump()
    assert emu.api_key not in repr(embeddings)
    clone = pickle.loads(pickle.dumps(embeddings))
    assert clone.embed_query("short") == embeddings.embed_query("short")
    assert len(copy.deepcopy(embeddings).embed_query("x")) == 8


def test_worker_errors_arrive_as_langchain_model_errors(emu: Emulator) -> None:
    embeddings = VastEmbeddings(**params(emu, model_kwargs={"dimensions": 100_000}))
    with pytest.raises(ModelInvalidRequestError) as caught:
        embeddings.embed_documents(["a"])
    assert isinstance(caught.value, WorkerError) and caught.value.status_code == 400


def test_rerank_keeps_the_best_documents_with_their_scores(emu: Emulator) -> None:
    docs = [Document(page_content=t, metadata={"n": i}) for i, t in enumerate(DOCS)]
    reranker = VastRerank(**params(emu, top_n=2))
    kept = reranker.compress_documents(docs, "why a cold start?")
    assert kept[0].metadata["n"] == 1 and len(kept) == 2
    assert kept[0].metadata["relevance_score"] >= kept[1].metadata["relevance_score"]
    assert "relevance_score" not in docs[1].metadata  # the originals are left alone
    assert reranker.last_routes[0].verified


async def test_rerank_in_an_lcel_chain_async(emu: Emulator) -> None:
    store = InMemoryVectorStore.from_texts(DOCS, VastEmbeddings(**params(emu)))
    reranker = VastRerank(**params(emu, top_n=1))

    async def rerank(inputs: dict[str, Any]) -> Any:
        return await reranker.acompress_documents(inputs["docs"], inputs["question"])

    chain = {
        "docs": store.as_retriever(search_kwargs={"k": 3}),
        "question": RunnableLambda(lambda q: q),
    } | RunnableLambda(rerank)
    best = await chain.ainvoke("model servers behind the pyworker")
    assert [d.page_content for d in best] == [DOCS[2]]


def test_rerank_top_n_none_keeps_all_and_bad_top_n_is_refused(emu: Emulator) -> None:
    docs = [Document(page_content=t) for t in DOCS]
    assert len(VastRerank(**params(emu, top_n=None)).compress_documents(docs, "worker")) == 4
    with pytest.raises(ValueError, match="top_n"):
        VastRerank(**params(emu, top_n=0))


async def test_rerank_in_a_contextual_compression_retriever(emu: Emulator) -> None:
    # langchain-classic is not a dependency of this project: checked where it is installed.
    retrievers = pytest.importorskip("langchain_classic.retrievers")
    store = InMemoryVectorStore.from_texts(DOCS, VastEmbeddings(**params(emu)))
    retriever = retrievers.ContextualCompressionRetriever(
        base_compressor=VastRerank(**params(emu, top_n=1)),
        base_retriever=store.as_retriever(search_kwargs={"k": 3}),
    )
    assert [d.page_content for d in retriever.invoke("why a cold start")] == [DOCS[1]]
    best = await retriever.ainvoke("model servers behind the pyworker")
    assert best[0].page_content == DOCS[2] and "relevance_score" in best[0].metadata
