"""The official vastai SDK (CoroutineServerless) on the benchmark's emulator.

Run by .venv-vastai's python (the SDK's pins clash with ours); prints one JSON line with the
same measurements as benchmarks/cases.py. Not importable from the project's venv.
"""

import asyncio
import json
import os
import resource
import ssl
import statistics
import sys
import time

from vastai import CoroutineServerless

TARGET = json.loads(os.environ["BENCH_TARGET"])
PAYLOAD = {"inputs": "Benchmark prompt", "parameters": {"max_new_tokens": 16, "details": True}}


async def main(requests: int, total: int) -> dict:
    client = CoroutineServerless(
        api_key=TARGET["api_key"],
        autoscaler_url=TARGET["base_url"],
        webserver_url=TARGET["base_url"],
        connection_limit=256,
    )

    context = ssl.create_default_context()

    async def loopback_context() -> ssl.SSLContext:
        # The SDK downloads Vast's root CA once and caches the context; on loopback the
        # download is skipped, the caching kept (the SDK asks for the context on every call).
        return context

    client.get_ssl_context = loopback_context
    async with client:
        endpoint = await client.get_endpoint(TARGET["tgi"])

        async def call() -> None:
            result = await endpoint.request("/generate", PAYLOAD, cost=16)
            assert result["ok"], result

        for _ in range(20):
            await call()
        times = []
        cpu = time.process_time()
        for _ in range(requests):
            started = time.perf_counter()
            await call()
            times.append(time.perf_counter() - started)
        cpu = time.process_time() - cpu
        remaining = total

        async def lane() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await call()

        started = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(64)))
        throughput = total / (time.perf_counter() - started)
    ordered = sorted(times)
    return {
        "case": "official_sdk",
        "async": {
            "median_ms": statistics.median(times) * 1e3,
            "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1e3,
            "cpu_ms": cpu / requests * 1e3,
        },
        "throughput_rps": throughput,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))))
