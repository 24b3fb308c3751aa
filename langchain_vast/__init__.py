"""LangChain models for Vast.ai Serverless endpoints: :class:`VastLLM` and :class:`ChatVast`."""

try:
    import langchain_core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError("langchain_vast needs LangChain: pip install 'vast-llm[langchain]'") from exc

from .chat_models import ChatVast
from .llms import VastLLM

__all__ = ["ChatVast", "VastLLM"]
