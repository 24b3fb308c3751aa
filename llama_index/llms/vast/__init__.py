"""Vast.ai Serverless as a LlamaIndex LLM: ``from llama_index.llms.vast import Vast``."""

from llamaindex_vast import Vast

__all__ = ["Vast"]
