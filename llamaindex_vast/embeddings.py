"""VastEmbedding: LlamaIndex embeddings from a Vast.ai Serverless endpoint."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import Field

from vast_llm.integration import observing

from ._pooling import PoolingFields
from ._progress import listener

__all__ = ["VastEmbedding"]


class VastEmbedding(PoolingFields, BaseEmbedding):
    """Embeddings served by a Vast.ai Serverless endpoint's ``/v1/embeddings`` route.

    Every request is routed by the autoscaler, its assignment verified before the worker is
    contacted, and retried on a fresh route when it fails before answering. Texts go in batches
    of ``embed_batch_size`` (64; a batch a worker refuses as too large is halved); the async
    methods run batches concurrently. Every answer is checked (one vector per text, in order,
    one dimension, no NaN). LlamaIndex's embedding events (``EmbeddingStartEvent``,
    ``EmbeddingEndEvent``) fire as for any ``BaseEmbedding``, and a ``VastProgressEvent`` for
    each step of each request (waiting for a worker, routed, verified, retrying, answering).

    Examples:
        .. code-block:: python

            from llama_index.core import Settings
            from llama_index.embeddings.vast import VastEmbedding  # or: from llamaindex_vast

            Settings.embed_model = VastEmbedding("my-embedding-endpoint")
            vector = Settings.embed_model.get_query_embedding("What is in the report?")

    Every client setting of ``vast_llm.VastClient`` is a field with the same name; unknown
    arguments are an error; fields for the model server go in ``additional_kwargs``.
    ``last_routes`` holds the route facts of the last call.
    """

    model_name: str = Field(
        default="unknown", description="The model name sent to the worker ('unknown': none)."
    )
    embed_batch_size: int | None = Field(  # type: ignore[assignment]
        default=None,
        gt=0,
        le=2048,
        description="Texts per request: the client's embed_batch_size (64 by default). "
        "LlamaIndex hands each call's texts to the client whole, which batches them (the async "
        "methods run the batches concurrently) and shares its pools with equal models.",
    )

    def __init__(self, endpoint: str | None = None, **kwargs: Any) -> None:
        """``endpoint`` (``VAST_ENDPOINT``) and any field by name."""
        super().__init__(endpoint, **kwargs)

    @classmethod
    def class_name(cls) -> str:
        return "VastEmbedding"

    def _model(self) -> str | None:
        return None if self.model_name == "unknown" else self.model_name

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        with observing(listener()):
            result = self.client.embed(texts, **self._call_params(self._model()))
        self._routes = result.routes
        return result.vectors

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        with observing(listener()):
            result = await self.async_client.embed(texts, **self._call_params(self._model()))
        self._routes = result.routes
        return result.vectors

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([text])[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return (await self._aget_text_embeddings([text]))[0]

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._get_text_embeddings([query])[0]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return (await self._aget_text_embeddings([query]))[0]
