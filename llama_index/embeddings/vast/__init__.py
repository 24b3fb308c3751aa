"""Vast.ai Serverless embeddings for LlamaIndex: ``from llama_index.embeddings.vast import
VastEmbedding``."""

from llamaindex_vast import VastEmbedding

__all__ = ["VastEmbedding"]
