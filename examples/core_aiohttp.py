"""The routing core on aiohttp: many requests from one process (``vast-llm[aiohttp]``).

python examples/core_aiohttp.py

Given an ``aiohttp.ClientSession``, ``AsyncVastClient`` runs the same flow (route, verify,
call, retry) on aiohttp directly, for about a third of httpx's client CPU per request.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
from _common import vast_endpoint

from vast_llm import AsyncVastClient

REQUESTS = 200


async def run() -> int:
    with vast_endpoint(api="tgi"):
        # The session is ours: its connector sets the connection limits, and we close it.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
            client = AsyncVastClient(api="tgi", http_client=session, max_concurrency=32)
            started = time.perf_counter()
            answers = await asyncio.gather(
                *(client.generate(f"Question {i}:", max_tokens=8) for i in range(REQUESTS))
            )
            elapsed = time.perf_counter() - started
            routes = [a.route for a in answers if a.route is not None]
            workers = {r.worker_url for r in routes}
            checks = {r.signature for r in routes}
            print(
                f"{len(answers)} answers in {elapsed:.2f} s from {len(workers)} workers; "
                f"signatures: {', '.join(sorted(checks))}"
            )
            async with client.stream("Once upon a time", max_tokens=16) as stream:
                async for chunk in stream:
                    print(chunk.text, end="", flush=True)
            print()
            return len(answers)


def main() -> int:
    return asyncio.run(run())


if __name__ == "__main__":
    main()
