"""A LlamaIndex RAG query engine on a Vast endpoint, streaming its answer with sources.

python examples/llamaindex_rag.py
"""

from __future__ import annotations

from _common import vast_endpoint
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding

from llamaindex_vast import Vast

DOCS = [
    "Vast.ai Serverless routes each request to a GPU worker through an autoscaler.",
    "The autoscaler signs every worker assignment with an RSA key; clients verify it.",
    "Workers run model servers such as TGI or vLLM behind Vast's pyworker.",
    "A cold start happens when no worker is ready and one must load its model first.",
]


def main() -> str:
    with vast_endpoint(api="openai"):
        Settings.llm = Vast(api="openai", max_new_tokens=64, temperature=0)
        # Deterministic embeddings keep the example offline; use a real model in production.
        Settings.embed_model = MockEmbedding(embed_dim=32)
        index = VectorStoreIndex.from_documents([Document(text=t) for t in DOCS])
        engine = index.as_query_engine(streaming=True, similarity_top_k=2)
        response = engine.query("How does a client know a worker is genuine?")
        answer = ""
        for token in response.response_gen:
            print(token, end="", flush=True)
            answer += token
        print()
        for source in response.source_nodes:
            print(f"  source: {source.node.get_content()}")
        return answer


if __name__ == "__main__":
    main()
