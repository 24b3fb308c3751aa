"""The routing core, asynchronously: a concurrent batch, then a stream.

python examples/core_async.py
"""

from __future__ import annotations

import asyncio

from _common import vast_endpoint

from vast_llm import AsyncVastClient

PROMPTS = ["Name a color.", "Name a fruit.", "Name a planet.", "Name a river."]


async def run() -> list[str]:
    with vast_endpoint(api="openai"):
        async with AsyncVastClient(api="openai") as client:
            # Each request gets its own verified worker assignment; they run concurrently.
            answers = await asyncio.gather(
                *(client.chat([{"role": "user", "content": p}], max_tokens=16) for p in PROMPTS)
            )
            for prompt, answer in zip(PROMPTS, answers, strict=True):
                print(f"{prompt} -> {answer.text}  [{answer.route.worker_url}]")
            async with client.stream_chat(
                [{"role": "user", "content": "Tell a story."}], max_tokens=24
            ) as stream:
                async for chunk in stream:
                    print(chunk.text, end="", flush=True)
            print()
            return [a.text for a in answers]


def main() -> list[str]:
    return asyncio.run(run())


if __name__ == "__main__":
    main()
