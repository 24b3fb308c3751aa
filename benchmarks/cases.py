"""One benchmark case, measured in a process of its own (``python -m benchmarks.cases NAME``).

Prints one JSON line of measurements: median and p99 latency at concurrency 1, client CPU per
request, throughput at concurrency 64 (async cases), per-token cost (stream cases), peak RSS and
RSS growth over many requests. The emulator runs in another process (benchmarks/serve.py); its
address comes in the BENCH_TARGET environment variable.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from httpx_sse import EventSource

TARGET = json.loads(os.environ.get("BENCH_TARGET", "{}"))
MAX_TOKENS = 16
PROMPT = "Benchmark prompt"
MESSAGES = [{"role": "user", "content": PROMPT}]
STREAM_TOKENS = 2000

SyncCall = Callable[[], Any]
AsyncCall = Callable[[], Awaitable[Any]]


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def tgi_payload(tokens: int = MAX_TOKENS) -> dict[str, Any]:
    return {"inputs": PROMPT, "parameters": {"max_new_tokens": tokens, "details": True}}


def route_body(endpoint: str, cost: float) -> dict[str, Any]:
    return {"endpoint": endpoint, "api_key": TARGET["api_key"], "cost": cost}


# -- the floor: raw httpx, route then worker, no verification, minimal parsing ---------------


def floor(
    api: str, reuse: bool = True, aiohttp: bool = False, stream: bool = False
) -> tuple[SyncCall, AsyncCall, Callable[[], Any]]:
    endpoint = TARGET[api]
    path = "/generate" if api == "tgi" else "/v1/chat/completions"
    payload = tgi_payload() if api == "tgi" else {"messages": MESSAGES, "max_tokens": MAX_TOKENS}
    base = TARGET["base_url"]
    # Plain httpx clients with httpx's defaults: what "raw httpx" means to its users.
    sync_client = httpx.Client()
    if aiohttp:
        from httpx_aiohttp import AiohttpTransport

        async_client = httpx.AsyncClient(transport=AiohttpTransport())
    else:
        async_client = httpx.AsyncClient()

    if stream:
        return (*_floor_stream(sync_client, async_client, endpoint), lambda: None)

    def call() -> Any:
        client = sync_client if reuse else httpx.Client()
        assignment = client.post(base + "/route/", json=route_body(endpoint, MAX_TOKENS)).json()
        body = {"auth_data": assignment, "session_id": None, "payload": payload}
        answer = client.post(assignment["url"] + path, json=body).json()
        if not reuse:
            client.close()
        return answer

    async def acall() -> Any:
        route = await async_client.post(base + "/route/", json=route_body(endpoint, MAX_TOKENS))
        assignment = route.json()
        body = {"auth_data": assignment, "session_id": None, "payload": payload}
        return (await async_client.post(assignment["url"] + path, json=body)).json()

    async def close() -> None:
        sync_client.close()  # noqa: ASYNC212 - once, at the end of the case
        await async_client.aclose()

    return call, acall, close


def _floor_stream(
    sync_client: httpx.Client, async_client: httpx.AsyncClient, endpoint: str
) -> tuple[SyncCall, AsyncCall]:
    """Route, then read a 16-token TGI stream with httpx-sse: the floor of a streamed answer."""
    base = TARGET["base_url"]

    def body(assignment: dict[str, Any]) -> dict[str, Any]:
        return {"auth_data": assignment, "session_id": None, "payload": tgi_payload()}

    def call() -> list[str]:
        assignment = sync_client.post(base + "/route/", json=route_body(endpoint, 16)).json()
        url = assignment["url"] + "/generate_stream"
        with sync_client.stream("POST", url, json=body(assignment)) as response:
            return [json.loads(e.data)["token"]["text"] for e in EventSource(response).iter_sse()]

    async def acall() -> list[str]:
        route = await async_client.post(base + "/route/", json=route_body(endpoint, 16))
        assignment = route.json()
        url = assignment["url"] + "/generate_stream"
        async with async_client.stream("POST", url, json=body(assignment)) as response:
            return [
                json.loads(e.data)["token"]["text"] async for e in EventSource(response).aiter_sse()
            ]

    return call, acall


def floor_aiohttp_raw() -> tuple[None, AsyncCall, Callable[[], Any]]:
    """Raw aiohttp, route then worker: the floor of the official SDK's own HTTP stack."""
    import aiohttp

    base, endpoint = TARGET["base_url"], TARGET["tgi"]
    sessions: list[aiohttp.ClientSession] = []  # made inside the event loop, on first use

    async def acall() -> Any:
        if not sessions:
            sessions.append(aiohttp.ClientSession())
        session = sessions[0]
        async with session.post(base + "/route/", json=route_body(endpoint, MAX_TOKENS)) as route:
            assignment = await route.json()
        body = {"auth_data": assignment, "session_id": None, "payload": tgi_payload()}
        async with session.post(assignment["url"] + "/generate", json=body) as answer:
            return await answer.json()

    async def close() -> None:
        if sessions:
            await sessions[0].close()

    return None, acall, close


def core_native() -> tuple[None, AsyncCall, Callable[[], Any]]:
    """AsyncVastClient with an aiohttp.ClientSession: the flow on aiohttp directly."""
    import aiohttp

    from vast_llm import AsyncVastClient

    clients: list[tuple[aiohttp.ClientSession, AsyncVastClient]] = []

    async def acall() -> Any:
        if not clients:
            session = aiohttp.ClientSession()
            clients.append(
                (
                    session,
                    AsyncVastClient(
                        TARGET["tgi"],
                        api_key=TARGET["api_key"],
                        base_url=TARGET["base_url"],
                        http_client=session,
                    ),
                )
            )
        return await clients[0][1].generate(PROMPT, max_tokens=MAX_TOKENS)

    async def close() -> None:
        if clients:
            await clients[0][0].close()

    return None, acall, close


def stream_raw() -> Callable[[], int]:
    """Raw httpx + httpx-sse + json.loads per event: the floor of per-token streaming cost."""
    client = httpx.Client()
    base, endpoint = TARGET["base_url"], TARGET["tgi"]

    def call() -> int:
        assignment = client.post(base + "/route/", json=route_body(endpoint, STREAM_TOKENS)).json()
        body = {"auth_data": assignment, "session_id": None, "payload": tgi_payload(STREAM_TOKENS)}
        tokens = 0
        with client.stream("POST", assignment["url"] + "/generate_stream", json=body) as response:
            for event in EventSource(response).iter_sse():
                tokens += bool(json.loads(event.data)["token"]["text"])
        return tokens

    return call


# -- ours ------------------------------------------------------------------------------------


def core(
    stream: bool, api: str = "tgi", aiohttp: bool = False
) -> tuple[SyncCall, AsyncCall, Callable[[], Any]]:
    from vast_llm import AsyncVastClient, VastClient

    kwargs: dict[str, Any] = {
        "api_key": TARGET["api_key"],
        "base_url": TARGET["base_url"],
        "api": api,
    }
    sync_client = VastClient(TARGET[api], **kwargs)
    if aiohttp:
        from httpx_aiohttp import AiohttpTransport

        kwargs["http_client"] = httpx.AsyncClient(transport=AiohttpTransport())
    async_client = AsyncVastClient(TARGET[api], **kwargs)

    def call() -> Any:
        if not stream:
            return sync_client.generate(PROMPT, max_tokens=MAX_TOKENS)
        with sync_client.stream(PROMPT, max_tokens=MAX_TOKENS) as chunks:
            return [c.text for c in chunks]

    async def acall() -> Any:
        if not stream:
            return await async_client.generate(PROMPT, max_tokens=MAX_TOKENS)
        async with async_client.stream(PROMPT, max_tokens=MAX_TOKENS) as chunks:
            return [c.text async for c in chunks]

    async def close() -> None:
        sync_client.close()
        await async_client.aclose()
        if "http_client" in kwargs:
            await kwargs["http_client"].aclose()

    return call, acall, close


def stream_core() -> Callable[[], int]:
    from vast_llm import VastClient

    client = VastClient(TARGET["tgi"], api_key=TARGET["api_key"], base_url=TARGET["base_url"])

    def call() -> int:
        with client.stream(PROMPT, max_tokens=STREAM_TOKENS) as chunks:
            return sum(1 for c in chunks if c.text)

    return call


def langchain(kind: str) -> tuple[SyncCall | None, AsyncCall, Callable[[], Any]]:
    from langchain_vast import ChatVast, VastLLM

    common = {"api_key": TARGET["api_key"], "base_url": TARGET["base_url"]}
    if kind == "chat":
        model: Any = ChatVast(endpoint=TARGET["openai"], max_tokens=MAX_TOKENS, **common)
    else:
        model = VastLLM(endpoint=TARGET["tgi"], max_new_tokens=MAX_TOKENS, **common)
    if kind == "abatch":

        async def batch() -> Any:
            return await model.abatch([PROMPT] * 64)

        return None, batch, lambda: None

    def call() -> Any:
        return model.invoke(PROMPT)

    async def acall() -> Any:
        return await model.ainvoke(PROMPT)

    return call, acall, lambda: None


def llamaindex(stream: bool) -> tuple[SyncCall, AsyncCall, Callable[[], Any]]:
    from llamaindex_vast import Vast

    llm = Vast(
        TARGET["tgi"],
        api_key=TARGET["api_key"],
        base_url=TARGET["base_url"],
        max_new_tokens=MAX_TOKENS,
    )

    def call() -> Any:
        if stream:
            return [r.delta for r in llm.stream_complete(PROMPT)]
        return llm.complete(PROMPT)

    async def acall() -> Any:
        if stream:
            return [r.delta async for r in await llm.astream_complete(PROMPT)]
        return await llm.acomplete(PROMPT)

    return call, acall, lambda: None


# -- HTTPS workers (issue 12): the same floor and core, workers under the emulator's CA -------


def floor_tls() -> tuple[SyncCall, AsyncCall, Callable[[], Any]]:
    """Raw httpx, route then an HTTPS worker: the router with httpx's default trust, the
    worker with the context the client uses (only the worker CA); connections reused."""
    from vast_llm import worker_ssl_context

    tls = TARGET["tls"]
    base, endpoint = tls["base_url"], tls["tgi"]
    verify = worker_ssl_context(tls["worker_ca"])
    router, worker = httpx.Client(), httpx.Client(verify=verify)
    arouter, aworker = httpx.AsyncClient(), httpx.AsyncClient(verify=verify)

    def route() -> dict[str, Any]:
        return {**route_body(endpoint, MAX_TOKENS), "api_key": tls["api_key"]}

    def call() -> Any:
        assignment = router.post(base + "/route/", json=route()).json()
        body = {"auth_data": assignment, "session_id": None, "payload": tgi_payload()}
        return worker.post(assignment["url"] + "/generate", json=body).json()

    async def acall() -> Any:
        assignment = (await arouter.post(base + "/route/", json=route())).json()
        body = {"auth_data": assignment, "session_id": None, "payload": tgi_payload()}
        return (await aworker.post(assignment["url"] + "/generate", json=body)).json()

    async def close() -> None:
        router.close()  # noqa: ASYNC212 - once, at the end of the case
        worker.close()  # noqa: ASYNC212
        await arouter.aclose()
        await aworker.aclose()

    return call, acall, close


def floor_aiohttp_raw_tls() -> tuple[None, AsyncCall, Callable[[], Any]]:
    """Raw aiohttp, route then an HTTPS worker verified against the worker CA."""
    import aiohttp

    from vast_llm import worker_ssl_context

    tls = TARGET["tls"]
    base, endpoint = tls["base_url"], tls["tgi"]
    verify = worker_ssl_context(tls["worker_ca"])
    sessions: list[aiohttp.ClientSession] = []

    async def acall() -> Any:
        if not sessions:
            sessions.append(aiohttp.ClientSession())
        session = sessions[0]
        route = {**route_body(endpoint, MAX_TOKENS), "api_key": tls["api_key"]}
        async with session.post(base + "/route/", json=route) as answer:
            assignment = await answer.json()
        body = {"auth_data": assignment, "session_id": None, "payload": tgi_payload()}
        async with session.post(assignment["url"] + "/generate", json=body, ssl=verify) as got:
            return await got.json()

    async def close() -> None:
        if sessions:
            await sessions[0].close()

    return None, acall, close


def core_tls(native: bool = False) -> tuple[SyncCall | None, AsyncCall, Callable[[], Any]]:
    """VastClient / AsyncVastClient with ``worker_ca`` (``native``: on an aiohttp session)."""
    from vast_llm import AsyncVastClient, VastClient

    tls = TARGET["tls"]
    kwargs = {"api_key": tls["api_key"], "base_url": tls["base_url"], "worker_ca": tls["worker_ca"]}
    sync_client = None if native else VastClient(tls["tgi"], **kwargs)
    clients: list[Any] = []

    async def acall() -> Any:
        if not clients:  # made inside the event loop (an aiohttp session must be)
            session = None
            if native:
                import aiohttp

                session = aiohttp.ClientSession()
            clients.append((session, AsyncVastClient(tls["tgi"], **kwargs, http_client=session)))
        return await clients[0][1].generate(PROMPT, max_tokens=MAX_TOKENS)

    def call() -> Any:
        assert sync_client is not None
        return sync_client.generate(PROMPT, max_tokens=MAX_TOKENS)

    async def close() -> None:
        if sync_client is not None:
            sync_client.close()
        if clients:
            await clients[0][1].aclose()
            if clients[0][0] is not None:
                await clients[0][0].close()

    return (None if native else call), acall, close


def tls_connections(requests: int) -> dict[str, Any]:
    """What a new connection to a worker costs, plain and over TLS, and what reuse saves.

    Sequential route + worker calls on raw sync httpx (the router's connection always reused);
    the worker's connection reused, or new for each request (``Connection: close``: the same
    client, so no client or TLS context is built), or a new client per request (with the
    worker context already built). Then what building the contexts costs, and a new
    ``VastClient``'s first and second request to HTTPS workers.
    """
    from vast_llm import VastClient, worker_ssl_context
    from vast_llm._tls import _combined_context, _worker_context, load_worker_ca

    tls = TARGET["tls"]
    verify = worker_ssl_context(tls["worker_ca"])
    out: dict[str, Any] = {"case": "tls_connections"}

    def variant(target: dict[str, Any], key: str, new: str | None) -> None:
        base, endpoint = target["base_url"], target["tgi"]
        router, worker = httpx.Client(), httpx.Client(verify=verify)
        headers = {"Connection": "close"} if new == "connection" else {}

        def call() -> Any:
            route = {**route_body(endpoint, MAX_TOKENS), "api_key": target["api_key"]}
            assignment = router.post(base + "/route/", json=route).json()
            body = {"auth_data": assignment, "session_id": None, "payload": tgi_payload()}
            client = httpx.Client(verify=verify) if new == "client" else worker
            try:
                url = assignment["url"] + "/generate"
                return client.post(url, json=body, headers=headers).json()
            finally:
                if new == "client":
                    client.close()

        out[key] = sequential(call, requests)
        router.close()
        worker.close()

    for key, target, new in (
        ("plain_reused", TARGET, None),
        ("plain_new_connection", TARGET, "connection"),
        ("tls_reused", tls, None),
        ("tls_new_connection", tls, "connection"),
        ("tls_new_client", tls, "client"),
    ):
        variant(target, key, new)

    def cost_ms(build: Callable[[], Any], n: int = 20) -> float:
        times = []
        for _ in range(n):
            started = time.perf_counter()
            build()
            times.append(time.perf_counter() - started)
        return statistics.median(times) * 1e3

    pem = load_worker_ca(tls["worker_ca"])
    cafile, capath = os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
    out["context_ms"] = {
        "worker": cost_ms(lambda: _worker_context.__wrapped__(pem)),
        "router": cost_ms(lambda: httpx.create_ssl_context(trust_env=True)),
        "combined": cost_ms(lambda: _combined_context.__wrapped__(pem, cafile, capath)),
    }
    firsts, seconds = [], []
    for _ in range(20):
        with VastClient(
            tls["tgi"], api_key=tls["api_key"], base_url=tls["base_url"], worker_ca=tls["worker_ca"]
        ) as client:
            started = time.perf_counter()
            client.generate(PROMPT, max_tokens=MAX_TOKENS)  # key fetch, new TLS connection
            firsts.append(time.perf_counter() - started)
            started = time.perf_counter()
            client.generate(PROMPT, max_tokens=MAX_TOKENS)
            seconds.append(time.perf_counter() - started)
    out["core_first_ms"] = statistics.median(firsts) * 1e3
    out["core_second_ms"] = statistics.median(seconds) * 1e3
    out["peak_rss_mb"] = peak_rss_mb()
    return out


CASES: dict[str, Callable[[], Any]] = {
    "floor": lambda: floor("tgi"),
    "floor_openai": lambda: floor("openai"),
    "floor_no_reuse": lambda: floor("tgi", reuse=False),
    "floor_stream": lambda: floor("tgi", stream=True),
    "floor_aiohttp": lambda: floor("tgi", aiohttp=True),
    "floor_aiohttp_raw": floor_aiohttp_raw,
    "core_generate": lambda: core(stream=False),
    "core_stream": lambda: core(stream=True),
    "core_chat": lambda: core(stream=False, api="openai"),
    "core_aiohttp": lambda: core(stream=False, aiohttp=True),
    "core_native": core_native,
    "lc_vastllm": lambda: langchain("llm"),
    "lc_vastllm_abatch": lambda: langchain("abatch"),
    "lc_chatvast": lambda: langchain("chat"),
    "li_complete": lambda: llamaindex(stream=False),
    "li_astream_complete": lambda: llamaindex(stream=True),
    "floor_tls": floor_tls,
    "floor_aiohttp_raw_tls": floor_aiohttp_raw_tls,
    "core_tls": core_tls,
    "core_native_tls": lambda: core_tls(native=True),
}
STREAM_CASES = {"stream_raw": stream_raw, "stream_core": stream_core}


# -- measuring -------------------------------------------------------------------------------


def summary(times: list[float], cpu: float) -> dict[str, float]:
    """Median and p99 latency (ms) of sequential requests, and client CPU (ms) per request."""
    return {
        "median_ms": statistics.median(times) * 1e3,
        "p99_ms": percentile(times, 0.99) * 1e3,
        "cpu_ms": cpu / len(times) * 1e3,
    }


def sequential(call: SyncCall, n: int) -> dict[str, float]:
    for _ in range(min(20, n)):
        call()
    times = []
    cpu = time.process_time()
    for _ in range(n):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return summary(times, time.process_time() - cpu)


async def asequential(call: AsyncCall, n: int) -> dict[str, float]:
    for _ in range(min(20, n)):
        await call()
    times = []
    cpu = time.process_time()
    for _ in range(n):
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    return summary(times, time.process_time() - cpu)


async def concurrent(call: AsyncCall, total: int, concurrency: int, per_call: int = 1) -> float:
    """Requests per second with ``concurrency`` requests in flight."""
    remaining = total

    async def lane() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= per_call
            await call()

    await asyncio.gather(*(lane() for _ in range(max(1, concurrency // per_call))))  # warm up
    remaining = total
    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(max(1, concurrency // per_call))))
    return total / (time.perf_counter() - started)


async def growth(call: AsyncCall, total: int, concurrency: int = 64) -> float:
    """RSS growth (MB) over ``total`` more requests, after a warm-up."""
    await concurrent(call, min(1000, total), concurrency)
    gc.collect()
    before = rss_mb()
    await concurrent(call, total, concurrency)
    gc.collect()
    return rss_mb() - before


async def run(name: str, requests: int, total: int, grow: int) -> dict[str, Any]:
    out: dict[str, Any] = {"case": name}
    if name in STREAM_CASES:
        call = STREAM_CASES[name]()
        call()  # warm up: connection, key
        cpu = time.process_time()
        started = time.perf_counter()
        tokens = sum(call() for _ in range(requests))
        out["per_token_us"] = (time.process_time() - cpu) / tokens * 1e6
        out["tokens_per_s"] = tokens / (time.perf_counter() - started)
        out["peak_rss_mb"] = peak_rss_mb()
        return out
    sync_call, async_call, close = CASES[name]()
    if name == "lc_vastllm_abatch":
        out["throughput_rps"] = await concurrent(async_call, total, 64, per_call=64)
    else:
        if sync_call is not None:
            out["sync"] = sequential(sync_call, requests)
        out["async"] = await asequential(async_call, requests)
        if name not in ("floor_no_reuse",):
            out["throughput_rps"] = await concurrent(async_call, total, 64)
        if grow and name in (
            "floor",
            "core_generate",
            "core_native",
            "lc_chatvast",
            "li_complete",
            "core_tls",
        ):
            out["rss_growth_mb"] = await growth(async_call, grow)
    out["peak_rss_mb"] = peak_rss_mb()
    result = close()
    if asyncio.iscoroutine(result):
        await result
    return out


def micro() -> dict[str, Any]:
    """Where the core can lose: signature verification, the key fetch, connection reuse."""
    from vast_llm import VastClient
    from vast_llm._signing import load_public_key, verify

    base = TARGET["base_url"]
    key = load_public_key(httpx.get(base + "/pubkey/").text)
    answer = httpx.post(base + "/route/", json=route_body(TARGET["tgi"], 16)).json()
    rounds = 2000
    started = time.perf_counter()
    for _ in range(rounds):
        verify(key, answer)
    verify_us = (time.perf_counter() - started) / rounds * 1e6
    memo: dict[Any, Any] = {}
    verify(key, answer, memo=memo)
    started = time.perf_counter()
    for _ in range(rounds):
        verify(key, answer, memo=memo)  # the check already made: what a client pays per call
    verify_memo_us = (time.perf_counter() - started) / rounds * 1e6
    firsts, steadies = [], []
    for _ in range(20):
        with VastClient(TARGET["tgi"], api_key=TARGET["api_key"], base_url=base) as client:
            started = time.perf_counter()
            client.generate(PROMPT, max_tokens=MAX_TOKENS)  # fetches /pubkey/, opens connections
            firsts.append(time.perf_counter() - started)
            started = time.perf_counter()
            client.generate(PROMPT, max_tokens=MAX_TOKENS)
            steadies.append(time.perf_counter() - started)
    return {
        "case": "micro",
        "verify_us": verify_us,
        "verify_memo_us": verify_memo_us,
        "first_request_ms": statistics.median(firsts) * 1e3,
        "second_request_ms": statistics.median(steadies) * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("case")
    parser.add_argument("--requests", type=int, default=300, help="sequential requests")
    parser.add_argument("--total", type=int, default=2000, help="requests at concurrency 64")
    parser.add_argument("--growth", type=int, default=0, help="requests for RSS growth")
    args = parser.parse_args()
    if args.case == "micro":
        print(json.dumps(micro()))
        return
    if args.case == "tls_connections":
        print(json.dumps(tls_connections(min(args.requests, 300))))
        return
    print(json.dumps(asyncio.run(run(args.case, args.requests, args.total, args.growth))))


if __name__ == "__main__":
    main()
