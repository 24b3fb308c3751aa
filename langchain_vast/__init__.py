"""LangChain models for Vast.ai Serverless endpoints: :class:`VastLLM`, :class:`ChatVast`,
:class:`VastEmbeddings` and :class:`VastRerank`."""

try:
    import langchain_core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError("langchain_vast needs LangChain: pip install 'vast-llm[langchain]'") from exc

from .chat_models import ChatVast
from .embeddings import VastEmbeddings
from .llms import VastLLM
from .rerank import VastRerank

__all__ = ["ChatVast", "VastEmbeddings", "VastLLM", "VastRerank"]
