"""A LlamaIndex LLM for Vast.ai Serverless endpoints: :class:`Vast`.

Also importable as ``from llama_index.llms.vast import Vast``.
"""

try:
    import llama_index.core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "llamaindex_vast needs LlamaIndex: pip install 'vast-llm[llamaindex]'"
    ) from exc

from .base import Vast, chatml_messages_to_prompt

__all__ = ["Vast", "chatml_messages_to_prompt"]
