"""Where the slow requests are: a trace of sequential requests, to read p99 at c=1 by.

    .venv/bin/python -m benchmarks.tail [--requests 3000] [--stack aiohttp|httpx]

Starts the benchmark's emulator in its own process, sends sequential requests through
``AsyncVastClient`` and prints the percentiles and the longest burst of consecutive slow
requests (slower than 1.5 × the median). Slow requests that come in bursts, every request of a
burst alike, point at the machine (another process, the hypervisor), not at the client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from typing import Any

from benchmarks.run import ROOT


async def trace(target: dict[str, Any], requests: int, stack: str) -> list[float]:
    import aiohttp

    from vast_llm import AsyncVastClient

    session = aiohttp.ClientSession() if stack == "aiohttp" else None
    client = AsyncVastClient(
        target["tgi"], api_key=target["api_key"], base_url=target["base_url"], http_client=session
    )
    try:
        for _ in range(20):
            await client.generate("Benchmark prompt", max_tokens=16)
        times = []
        for _ in range(requests):
            started = time.perf_counter()
            await client.generate("Benchmark prompt", max_tokens=16)
            times.append(time.perf_counter() - started)
        return times
    finally:
        await client.aclose()
        if session is not None:
            await session.close()


def bursts(times: list[float], factor: float = 1.5) -> list[tuple[int, int]]:
    """(start index, length) of each run of consecutive requests slower than factor × median."""
    limit = statistics.median(times) * factor
    runs: list[tuple[int, int]] = []
    start = None
    for index, value in enumerate([*times, 0.0]):
        if value > limit and start is None:
            start = index
        elif value <= limit and start is not None:
            runs.append((start, index - start))
            start = None
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--stack", choices=["aiohttp", "httpx"], default="aiohttp")
    args = parser.parse_args()
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.serve"],
        cwd=ROOT,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        target = json.loads(server.stdout.readline())
        times = asyncio.run(trace(target, args.requests, args.stack))
    finally:
        if server.stdin:
            server.stdin.close()
        server.wait(timeout=30)
    ordered = sorted(times)
    for q in (0.5, 0.9, 0.99, 0.999):
        print(f"p{q * 100:g}: {ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3:.3f} ms")
    runs = bursts(times)
    slow = sum(length for _, length in runs)
    longest = max(runs, key=lambda run: run[1], default=(0, 0))
    print(
        f"{slow} requests slower than 1.5 × the median, in {len(runs)} runs; the longest: "
        f"{longest[1]} in a row from request {longest[0]}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
