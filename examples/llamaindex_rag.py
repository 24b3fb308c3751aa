"""A LlamaIndex RAG query engine where every model call goes through Vast: embeddings
(VastEmbedding), reranking (VastRerank) and the streamed answer (Vast), with sources.

python examples/llamaindex_rag.py

Against Vast.ai, VAST_ENDPOINT serves the chat model; VAST_EMBED_ENDPOINT and
VAST_RERANK_ENDPOINT name the endpoints of the embedding model and the reranker (each defaults
to VAST_ENDPOINT).
"""

from __future__ import annotations

import os

from _common import vast_endpoint
from llama_index.core import Document, Settings, VectorStoreIndex

from llamaindex_vast import Vast, VastEmbedding, VastRerank

DOCS = [
    "Vast.ai Serverless routes each request to a GPU worker through an autoscaler.",
    "The autoscaler signs every worker assignment with an RSA key; clients verify it.",
    "Workers run model servers such as TGI or vLLM behind Vast's pyworker.",
    "A cold start happens when no worker is ready and one must load its model first.",
]


def main() -> str:
    with vast_endpoint(api="openai"):
        chat_endpoint = os.environ["VAST_ENDPOINT"]
        Settings.llm = Vast(api="openai", max_new_tokens=64, temperature=0)
        Settings.embed_model = VastEmbedding(os.environ.get("VAST_EMBED_ENDPOINT", chat_endpoint))
        reranker = VastRerank(os.environ.get("VAST_RERANK_ENDPOINT", chat_endpoint), top_n=2)
        index = VectorStoreIndex.from_documents([Document(text=t) for t in DOCS])
        engine = index.as_query_engine(
            streaming=True, similarity_top_k=3, node_postprocessors=[reranker]
        )
        response = engine.query("How does a client know a worker is genuine?")
        answer = ""
        for token in response.response_gen:
            print(token, end="", flush=True)
            answer += token
        print()
        for source in response.source_nodes:
            print(f"  source ({source.score:.2f}): {source.node.get_content()}")
        route = reranker.last_routes[-1]
        print(f"  reranked on worker {route.worker_url} (signature {route.signature})")
        return answer


if __name__ == "__main__":
    main()
