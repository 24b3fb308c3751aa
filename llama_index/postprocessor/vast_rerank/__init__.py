"""Vast.ai Serverless reranking for LlamaIndex: ``from llama_index.postprocessor.vast_rerank
import VastRerank``."""

from llamaindex_vast import VastRerank

__all__ = ["VastRerank"]
