"""VastRerank: a LangChain document compressor that reranks through a Vast.ai endpoint."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import Field

from vast_llm import Reranking
from vast_llm.integration import observing

from ._common import lc_errors
from ._pooling import PoolingFields
from ._progress import call_listener

__all__ = ["VastRerank"]


class VastRerank(PoolingFields, BaseDocumentCompressor):
    """Reranks retrieved documents with a reranker model on a Vast.ai Serverless endpoint
    (its ``/v1/rerank`` route, vLLM's shape), keeping the ``top_n`` most relevant.

    A ``BaseDocumentCompressor``: use it in ``ContextualCompressionRetriever`` (from
    ``langchain-classic``) or call it in a chain. Each kept document is a copy of the original
    with ``metadata["relevance_score"]`` added.

    Instantiate:
        .. code-block:: python

            from langchain_vast import VastRerank

            reranker = VastRerank(endpoint="my-reranker-endpoint", top_n=3)
            best = reranker.compress_documents(documents, "the question")

    Documents go in batches of ``embed_batch_size``, scored on every batch before ``top_n``
    is applied; each answer is checked (every index once and in range, finite scores). Each
    request's progress reaches the calling run's callbacks (``callbacks``, or the run it is
    called in) as ``vast_progress`` custom events.
    """

    top_n: int | None = Field(default=3, ge=1)
    """How many documents to keep (None: all of them, reordered)."""

    def _documents(self, documents: Sequence[Document], ranking: Reranking) -> list[Document]:
        self._routes = ranking.routes
        kept = []
        for ranked in ranking.results:
            original = documents[ranked.index]
            metadata: dict[str, Any] = {**original.metadata, "relevance_score": ranked.score}
            kept.append(original.model_copy(update={"metadata": metadata}))
        return kept

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """The ``top_n`` documents most relevant to ``query``, best first."""
        texts = [d.page_content for d in documents]
        with lc_errors(), observing(call_listener(callbacks, asynchronous=False)):
            ranking = self.client.rerank(query, texts, top_n=self.top_n, **self._call_params())
        return self._documents(documents, ranking)

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """The ``top_n`` documents most relevant to ``query``, best first."""
        texts = [d.page_content for d in documents]
        with lc_errors(), observing(call_listener(callbacks, asynchronous=True)):
            ranking = await self.async_client.rerank(
                query, texts, top_n=self.top_n, **self._call_params()
            )
        return self._documents(documents, ranking)
