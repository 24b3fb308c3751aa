"""LlamaIndex models for Vast.ai Serverless endpoints: the LLM :class:`Vast`, the embedding
model :class:`VastEmbedding` and the reranker :class:`VastRerank`.

Also importable as ``from llama_index.llms.vast import Vast``, ``from llama_index.embeddings.vast
import VastEmbedding`` and ``from llama_index.postprocessor.vast_rerank import VastRerank``.
"""

try:
    import llama_index.core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "llamaindex_vast needs LlamaIndex: pip install 'vast-llm[llamaindex]'"
    ) from exc

from ._progress import VastProgressEvent
from .base import Vast, chatml_messages_to_prompt
from .embeddings import VastEmbedding
from .rerank import VastRerank

__all__ = ["Vast", "VastEmbedding", "VastProgressEvent", "VastRerank", "chatml_messages_to_prompt"]
