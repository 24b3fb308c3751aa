"""VastRerank: a LlamaIndex node postprocessor that reranks through a Vast.ai endpoint."""

from __future__ import annotations

from typing import Any

from llama_index.core.bridge.pydantic import Field
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from vast_llm import Reranking
from vast_llm.integration import observing

from ._pooling import PoolingFields
from ._progress import listener

__all__ = ["VastRerank"]

dispatcher = get_dispatcher(__name__)


class VastRerank(PoolingFields, BaseNodePostprocessor):
    """Reranks retrieved nodes with a reranker on a Vast.ai Serverless endpoint (its
    ``/v1/rerank`` route, vLLM's shape), keeping the ``top_n`` most relevant, each scored.

    Examples:
        .. code-block:: python

            from llama_index.postprocessor.vast_rerank import VastRerank

            engine = index.as_query_engine(
                similarity_top_k=10,
                node_postprocessors=[VastRerank("my-reranker-endpoint", top_n=3)],
            )

    Fires LlamaIndex's ``ReRankStartEvent`` and ``ReRankEndEvent``, and a ``VastProgressEvent``
    for each step of each request. Nodes go in batches of
    ``embed_batch_size``, all scored before ``top_n`` is applied; every answer is checked
    (each index once and in range, finite scores).
    """

    top_n: int = Field(default=3, gt=0, description="How many nodes to keep.")
    model: str | None = Field(default=None, description="The reranker's name, sent to the worker.")

    def __init__(self, endpoint: str | None = None, **kwargs: Any) -> None:
        """``endpoint`` (``VAST_ENDPOINT``) and any field by name."""
        super().__init__(endpoint, **kwargs)

    @classmethod
    def class_name(cls) -> str:
        return "VastRerank"

    def _start(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None) -> list[str]:
        dispatcher.event(
            ReRankStartEvent(
                query=query_bundle,
                nodes=nodes,
                top_n=self.top_n,
                model_name=self.model or self.endpoint or "vast",
            )
        )
        if query_bundle is None:
            raise ValueError("VastRerank needs the query (postprocess_nodes(..., query_str=...))")
        return [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]

    def _end(self, nodes: list[NodeWithScore], ranking: Reranking) -> list[NodeWithScore]:
        self._routes = ranking.routes
        kept = [NodeWithScore(node=nodes[r.index].node, score=r.score) for r in ranking.results]
        dispatcher.event(ReRankEndEvent(nodes=kept))
        return kept

    def _params(self) -> dict[str, Any]:
        return {**self._call_params(self.model), "top_n": self.top_n}

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        texts = self._start(nodes, query_bundle)
        assert query_bundle is not None  # _start raised otherwise
        with observing(listener()):
            ranking = self.client.rerank(query_bundle.query_str, texts, **self._params())
        return self._end(nodes, ranking)

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        texts = self._start(nodes, query_bundle)
        assert query_bundle is not None
        with observing(listener()):
            ranking = await self.async_client.rerank(
                query_bundle.query_str, texts, **self._params()
            )
        return self._end(nodes, ranking)
