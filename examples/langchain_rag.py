"""An LCEL RAG chain where every model call goes through Vast: embeddings (VastEmbeddings),
reranking (VastRerank) and the answer (ChatVast), streamed.

python examples/langchain_rag.py

Against Vast.ai, VAST_ENDPOINT serves the chat model; VAST_EMBED_ENDPOINT and
VAST_RERANK_ENDPOINT name the endpoints of the embedding model and the reranker (each defaults
to VAST_ENDPOINT). With ``langchain-classic`` installed, ``ContextualCompressionRetriever(
base_compressor=reranker, base_retriever=retriever)`` does what the ``rerank`` step does here.
"""

from __future__ import annotations

import os
from typing import Any

from _common import vast_endpoint
from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore

from langchain_vast import ChatVast, VastEmbeddings, VastRerank

DOCS = [
    "Vast.ai Serverless routes each request to a GPU worker through an autoscaler.",
    "The autoscaler signs every worker assignment with an RSA key; clients verify it.",
    "Workers run model servers such as TGI or vLLM behind Vast's pyworker.",
    "A cold start happens when no worker is ready and one must load its model first.",
]
QUESTION = "How does a client know a worker is genuine?"


def format_docs(docs: list[Document]) -> str:
    return "\n".join(f"- {d.page_content}" for d in docs)


def main() -> str:
    with vast_endpoint(api="openai"):
        chat_endpoint = os.environ["VAST_ENDPOINT"]
        embeddings = VastEmbeddings(endpoint=os.environ.get("VAST_EMBED_ENDPOINT", chat_endpoint))
        reranker = VastRerank(
            endpoint=os.environ.get("VAST_RERANK_ENDPOINT", chat_endpoint), top_n=2
        )
        store = InMemoryVectorStore.from_texts(DOCS, embeddings)
        retriever = store.as_retriever(search_kwargs={"k": 3})

        def rerank(inputs: dict[str, Any]) -> list[Document]:
            return list(reranker.compress_documents(inputs["docs"], inputs["question"]))

        prompt = ChatPromptTemplate.from_messages(
            [
                ("system", "Answer from the context in one sentence.\nContext:\n{context}"),
                ("human", "{question}"),
            ]
        )
        chain = (
            {"docs": retriever, "question": RunnablePassthrough()}
            | RunnablePassthrough.assign(context=RunnableLambda(rerank) | format_docs)
            | prompt
            | ChatVast(max_tokens=64, temperature=0)
            | StrOutputParser()
        )
        answer = ""
        for token in chain.stream(QUESTION):
            print(token, end="", flush=True)
            answer += token
        print()
        for label, model in (("embedded the question", embeddings), ("reranked", reranker)):
            route = model.last_routes[-1]
            print(f"  {label} on worker {route.worker_url} (signature {route.signature})")
        return answer


if __name__ == "__main__":
    main()
