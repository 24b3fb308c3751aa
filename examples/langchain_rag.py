"""An LCEL RAG chain: an in-memory vector store, a retriever and ChatVast, streaming the answer.

python examples/langchain_rag.py
"""

from __future__ import annotations

from _common import vast_endpoint
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore

from langchain_vast import ChatVast

DOCS = [
    "Vast.ai Serverless routes each request to a GPU worker through an autoscaler.",
    "The autoscaler signs every worker assignment with an RSA key; clients verify it.",
    "Workers run model servers such as TGI or vLLM behind Vast's pyworker.",
    "A cold start happens when no worker is ready and one must load its model first.",
]


def format_docs(docs: list[Document]) -> str:
    return "\n".join(f"- {d.page_content}" for d in docs)


def main() -> str:
    with vast_endpoint(api="openai"):
        # Deterministic embeddings keep the example offline; use a real embedding model in
        # production.
        store = InMemoryVectorStore.from_texts(DOCS, DeterministicFakeEmbedding(size=64))
        retriever = store.as_retriever(search_kwargs={"k": 2})
        prompt = ChatPromptTemplate.from_messages(
            [("system", "Answer from the context in one sentence.\nContext:\n{context}"),
             ("human", "{question}")]
        )  # fmt: skip
        chain = (
            {"context": retriever | format_docs, "question": RunnablePassthrough()}
            | prompt
            | ChatVast(max_tokens=64, temperature=0)
            | StrOutputParser()
        )
        answer = ""
        for token in chain.stream("How does a client know a worker is genuine?"):
            print(token, end="", flush=True)
            answer += token
        print()
        return answer


if __name__ == "__main__":
    main()
