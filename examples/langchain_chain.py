"""A LangChain chain on a Vast endpoint, streaming token by token.

python examples/langchain_chain.py       # the local emulator
VAST_ENDPOINT=my-endpoint VAST_API_KEY=... python examples/langchain_chain.py
"""

from __future__ import annotations

from _common import vast_endpoint
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from langchain_vast import ChatVast


def main() -> str:
    with vast_endpoint(api="openai") as where:
        llm = ChatVast(max_tokens=64, temperature=0)  # endpoint and key from the environment
        prompt = ChatPromptTemplate.from_messages(
            [
                ("system", "You are a helpful assistant. Answer in one short sentence."),
                ("human", "{question}"),
            ]
        )
        chain = prompt | llm | StrOutputParser()
        print(f"[{where}]")
        answer = ""
        for token in chain.stream({"question": "What is the capital of France?"}):
            print(token, end="", flush=True)
            answer += token
        print()
        return answer


if __name__ == "__main__":
    main()
