"""VastEmbeddings: LangChain embeddings from a Vast.ai Serverless endpoint."""

from __future__ import annotations

from langchain_core.embeddings import Embeddings

from vast_llm.integration import observing

from ._common import lc_errors
from ._pooling import PoolingFields
from ._progress import call_listener

__all__ = ["VastEmbeddings"]


class VastEmbeddings(PoolingFields, Embeddings):
    """Embeddings served by a Vast.ai Serverless endpoint's ``/v1/embeddings`` route.

    Every request is routed by the autoscaler, its assignment verified before the worker is
    contacted, and retried on a fresh route when it fails before answering. Documents go in
    batches of ``embed_batch_size`` (64; a batch a worker refuses as too large is halved); each
    answer is checked (one vector per text, in order, one dimension, no NaN) before use.

    Setup:
        ``pip install "vast-llm[langchain]"``; a vLLM (or SGLang, llama.cpp) endpoint serving an
        embedding model with ``/v1/embeddings`` in its ``OPENAI_ROUTES``.

    Instantiate:
        .. code-block:: python

            from langchain_vast import VastEmbeddings

            embeddings = VastEmbeddings(endpoint="my-embedding-endpoint")  # VAST_API_KEY

    Embed:
        .. code-block:: python

            vectors = embeddings.embed_documents(["first text", "second text"])
            query = embeddings.embed_query("what is in the first text?")
            vectors = await embeddings.aembed_documents(texts)  # batches run concurrently

    Every client setting of ``vast_llm.VastClient`` is a field with the same name (``timeout``,
    ``deadline``, ``max_retries``, ``embed_batch_size``...); unknown arguments are an error;
    fields for the model server (``dimensions``, ``truncate_prompt_tokens``) go in
    ``model_kwargs``. ``last_routes`` holds the route facts of the last call. Called inside a
    run (a chain, a retriever), each request's progress reaches that run's callbacks as
    ``vast_progress`` custom events.
    """

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, in order."""
        with lc_errors(), observing(call_listener(asynchronous=False)):
            result = self.client.embed(texts, **self._call_params())
        self._routes = result.routes
        return result.vectors

    def embed_query(self, text: str) -> list[float]:
        """The vector of one text."""
        return self.embed_documents([text])[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, in order; batches run concurrently (up to the client's
        ``max_concurrency``)."""
        with lc_errors(), observing(call_listener(asynchronous=True)):
            result = await self.async_client.embed(texts, **self._call_params())
        self._routes = result.routes
        return result.vectors

    async def aembed_query(self, text: str) -> list[float]:
        """The vector of one text."""
        return (await self.aembed_documents([text]))[0]
