"""VastEmbedding and VastRerank for LlamaIndex against the emulator: import paths, batches,
events, retrieval in an index, reranking, settings."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.bridge.pydantic import Field
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.schema import NodeWithScore, TextNode

from tests.conftest import FAST
from vast_llm import ConfigError
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


def settings(emu: Emulator, **extra: Any) -> dict[str, Any]:
    return {
        "endpoint": emu.endpoint,
        "api_key": emu.api_key,
        "base_url": emu.base_url,
        "backoff": FAST,
        **extra,
    }


class Events(BaseEventHandler):
    names: list[str] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "Events"

    def handle(self, event: Any, **kwargs: Any) -> None:
        self.names.append(event.class_name())


@pytest.fixture
def events() -> Iterator[list[str]]:
    handler = Events(names=[])
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(handler)
    yield handler.names
    dispatcher.event_handlers.remove(handler)


def test_the_conventional_import_paths() -> None:
    import llamaindex_vast
    from llama_index.embeddings.vast import VastEmbedding
    from llama_index.postprocessor.vast_rerank import VastRerank

    assert VastEmbedding is llamaindex_vast.VastEmbedding
    assert VastRerank is llamaindex_vast.VastRerank


def test_batched_embeddings_with_events(emu: Emulator, events: list[str]) -> None:
    from llamaindex_vast import VastEmbedding

    emu.reset()
    model = VastEmbedding(**settings(emu, embed_batch_size=3, model_name="served"))
    vectors = model.get_text_embedding_batch(DOCS)
    assert vectors == [fake_embedding(d) for d in DOCS]
    assert [len(r.json["payload"]["input"]) for r in emu.worker_requests] == [3, 1]
    assert emu.worker_requests[0].json["payload"]["model"] == "served"
    assert model.get_query_embedding("x") == fake_embedding("x")
    assert len(model.last_routes) == 1 and model.last_routes[0].verified
    assert events.count("EmbeddingStartEvent") == 3 and events.count("EmbeddingEndEvent") == 3


async def test_async_embeddings(emu: Emulator, events: list[str]) -> None:
    from llamaindex_vast import VastEmbedding

    model = VastEmbedding(**settings(emu))
    assert await model.aget_text_embedding_batch(DOCS) == [fake_embedding(d) for d in DOCS]
    assert await model.aget_query_embedding("y") == fake_embedding("y")
    assert "EmbeddingEndEvent" in events


def test_an_index_retrieves_through_vast(emu: Emulator) -> None:
    from llamaindex_vast import VastEmbedding, VastRerank

    model = VastEmbedding(**settings(emu))
    index = VectorStoreIndex.from_documents([Document(text=d) for d in DOCS], embed_model=model)
    found = index.as_retriever(similarity_top_k=1).retrieve("How is the signature verified?")
    assert found[0].node.get_content() == DOCS[0]
    reranker = VastRerank(**settings(emu, top_n=1))
    nodes = index.as_retriever(similarity_top_k=4).retrieve("why a cold start")
    best = reranker.postprocess_nodes(nodes, query_str="why a cold start")
    assert [n.node.get_content() for n in best] == [DOCS[1]]


def test_rerank_scores_and_events(emu: Emulator, events: list[str]) -> None:
    from llamaindex_vast import VastRerank

    nodes = [NodeWithScore(node=TextNode(text=d), score=0.0) for d in DOCS]
    reranker = VastRerank(**settings(emu, top_n=2))
    kept = reranker.postprocess_nodes(nodes, query_str="model servers behind the pyworker")
    assert kept[0].node.get_content() == DOCS[2] and len(kept) == 2
    assert kept[0].score is not None and kept[1].score is not None
    assert kept[0].score >= kept[1].score
    assert events.count("ReRankStartEvent") == 1 and events.count("ReRankEndEvent") == 1
    with pytest.raises(ValueError, match="needs the query"):
        reranker.postprocess_nodes(nodes)


async def test_async_rerank(emu: Emulator) -> None:
    from llamaindex_vast import VastRerank

    nodes = [NodeWithScore(node=TextNode(text=d)) for d in DOCS]
    reranker = VastRerank(**settings(emu, top_n=1, embed_batch_size=1))
    kept = await reranker.apostprocess_nodes(nodes, query_str="fresh route retries")
    assert [n.node.get_content() for n in kept] == [DOCS[3]]
    assert len(reranker.last_routes) == 4


def test_settings_are_checked_and_the_key_stays_out(emu: Emulator) -> None:
    from llamaindex_vast import VastEmbedding, VastRerank

    with pytest.raises(ConfigError, match="has no field 'top_k'"):
        VastRerank(**settings(emu, top_k=2))
    with pytest.raises(ConfigError, match="no endpoint"):
        VastEmbedding(api_key="k", endpoint=None, base_url=None)
    model = VastEmbedding(**settings(emu))
    assert emu.api_key not in model.to_json() and emu.api_key not in repr(model)
    assert VastEmbedding(emu.endpoint, api_key=emu.api_key, base_url=emu.base_url).endpoint
