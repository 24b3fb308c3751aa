"""A LlamaIndex FunctionAgent on an OpenAI-compatible (vLLM) Vast endpoint, calling a tool.

python examples/llamaindex_agent.py
"""

from __future__ import annotations

import asyncio

from _common import vast_endpoint
from llama_index.core.agent.workflow import FunctionAgent

from llamaindex_vast import Vast


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


async def run() -> str:
    with vast_endpoint(api="openai"):
        agent = FunctionAgent(
            tools=[multiply],
            llm=Vast(api="openai", max_new_tokens=128, temperature=0),
            system_prompt="Use the multiply tool for arithmetic.",
        )
        response = await agent.run(user_msg="What is 3 times 3?")
        print(response)
        return str(response)


def main() -> str:
    return asyncio.run(run())


if __name__ == "__main__":
    main()
