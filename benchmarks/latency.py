"""Latency on a realistic network: time to first token against the protocol floor, a new
client's first call, and an agent's ten turns routed per call or in one worker session.

    .venv/bin/python -m benchmarks.latency            # measure, rewrite docs/benchmarks.md's
                                                      # latency section and its plot
    .venv/bin/python -m benchmarks.latency --smoke    # a tiny run that only checks it works

``make bench`` runs it too (benchmarks/run.py). The emulator runs in a process of its own with
TLS workers and injected delays: 40 ms to the router, 80 ms to a worker (each answer leaves that
late, ±5 %), a fake model at 50 tokens/s whose first token takes one token's time. One endpoint
has no prefix cache; another spends 0.2 ms per prompt token its worker has not cached (5,000
tokens/s of prefill) with each worker caching its last prompt (``Emulator(prefill_delay=...)``).
The clients run in a second process, calls one at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

ROOT = pathlib.Path(__file__).resolve().parents[1]
ROUTER_RTT = 0.040
WORKER_RTT = 0.080
JITTER = float(os.environ.get("BENCH_JITTER", "0.05"))
TOKEN_DELAY = 0.020  # the fake model: 50 tokens/s, its first token one token's time
PREFILL = 0.0002  # seconds per uncached prompt token (5,000 tokens/s)
WORKERS = 4
MAX_TOKENS = 4
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
TURNS = 10
TURN_WORDS = 100  # what each agent turn adds: a tool result of about this many words
SECTION = "## Latency on a realistic network"

# (label, case) of the time-to-first-token table, each measured warm, calls interleaved.
TTFT_CASES = [
    ("floor: raw httpx, route + worker", "floor"),
    ("floor (async): raw httpx.AsyncClient", "floor_async"),
    ("core: VastClient.stream_chat", "core_sync"),
    ("core: AsyncVastClient.stream_chat", "core_async"),
    ("core: AsyncVastClient on an aiohttp.ClientSession", "core_aiohttp"),
    ("session: VastSession.stream_chat", "session_sync"),
    ("session: AsyncVastSession.stream_chat", "session_async"),
]
FLOOR_OF = {
    "floor_async": "floor_async",
    "core_async": "floor_async",
    "core_aiohttp": "floor_async",
    "session_async": "floor_async",
}


# -- the emulator's process ----------------------------------------------------------------------


def serve() -> None:
    """Run the emulator; print its address; answer ``stats ENDPOINT`` lines on stdin with the
    prefix-cache counts of that endpoint's workers (then reset them), until stdin closes."""
    from vast_llm.emulator import Emulator

    emu = Emulator(
        api="openai",
        workers=WORKERS,
        endpoint="lat",
        tls=True,
        router_delay=ROUTER_RTT,
        worker_delay=WORKER_RTT,
        jitter=JITTER,
        token_delay=TOKEN_DELAY,
        log_limit=1000,
        prefill_delay=1e-12,  # counts the cache without costing time: the no-cache endpoint
    )
    emu.add_endpoint(
        "lat-prefill", api="openai", workers=WORKERS, token_delay=TOKEN_DELAY, prefill_delay=PREFILL
    )
    with emu.serve():
        print(
            json.dumps(
                {"base_url": emu.base_url, "api_key": emu.api_key, "worker_ca": emu.worker_ca}
            ),
            flush=True,
        )
        for line in sys.stdin:
            _, _, endpoint = line.strip().partition(" ")
            counts = {"prefilled": 0, "cached": 0}
            for worker in emu.workers:
                if worker.endpoint == endpoint and worker.prefix is not None:
                    counts["prefilled"] += worker.prefix.prefilled_tokens
                    counts["cached"] += worker.prefix.cached_tokens
                    worker.prefix.prefilled_tokens = worker.prefix.cached_tokens = 0
            print(json.dumps(counts), flush=True)


class Server:
    """The emulator's process, seen from the client's."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.latency", "--serve"],
            cwd=ROOT,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        self.target: dict[str, Any] = json.loads(self.process.stdout.readline())

    def stats(self, endpoint: str) -> dict[str, int]:
        assert self.process.stdout is not None
        assert self.process.stdin is not None
        self.process.stdin.write(f"stats {endpoint}\n")
        self.process.stdin.flush()
        counts: dict[str, int] = json.loads(self.process.stdout.readline())
        return counts

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        self.process.wait(timeout=30)


# -- what is timed ------------------------------------------------------------------------------


def _first_token(lines: Iterator[str]) -> bool:
    """Read an OpenAI stream until a token with text (True), or its end (False)."""
    for line in lines:
        if not line.startswith("data:") or line[5:].strip() == "[DONE]":
            continue
        choices = json.loads(line[5:]).get("choices") or [{}]
        if (choices[0].get("delta") or {}).get("content"):
            return True
    return False


def _chat_body(assignment: dict[str, Any], messages: list[dict[str, str]]) -> dict[str, Any]:
    payload = {"messages": messages, "max_tokens": MAX_TOKENS, "stream": True}
    return {"auth_data": assignment, "session_id": None, "payload": payload}


class Floor:
    """Raw httpx: ``POST /route/`` then the worker's stream; no verification, no retry."""

    def __init__(self, target: dict[str, Any], endpoint: str) -> None:
        from vast_llm import worker_ssl_context

        self.route = target["base_url"] + "/route/"
        self.route_body = {"endpoint": endpoint, "api_key": target["api_key"], "cost": MAX_TOKENS}
        self.verify = worker_ssl_context(target["worker_ca"])
        self.client = httpx.Client(verify=self.verify)

    def ttft(
        self, messages: list[dict[str, str]] = MESSAGES, started: float | None = None
    ) -> float:
        started = time.perf_counter() if started is None else started
        assignment = self.client.post(self.route, json=self.route_body).json()
        url = assignment["url"] + "/v1/chat/completions"
        with self.client.stream("POST", url, json=_chat_body(assignment, messages)) as response:
            lines = response.iter_lines()
            assert _first_token(lines), "no token"
            elapsed = time.perf_counter() - started
            for _ in lines:  # read to the end: the connection goes back to the pool
                pass
        return elapsed


class AsyncFloor(Floor):
    def __init__(self, target: dict[str, Any], endpoint: str) -> None:
        super().__init__(target, endpoint)
        self.aclient = httpx.AsyncClient(verify=self.verify)

    async def attft(self, messages: list[dict[str, str]] = MESSAGES) -> float:
        started = time.perf_counter()
        assignment = (await self.aclient.post(self.route, json=self.route_body)).json()
        url = assignment["url"] + "/v1/chat/completions"
        body = _chat_body(assignment, messages)
        async with self.aclient.stream("POST", url, json=body) as response:
            elapsed = None
            async for line in response.aiter_lines():  # read to the end, as the sync floor
                if elapsed is None and _first_token(iter([line])):
                    elapsed = time.perf_counter() - started
        assert elapsed is not None, "no token"
        return elapsed


def sync_ttft(stream: Any, started: float | None = None) -> float:
    """Time to the first chunk with text of a client's stream (read to its end after), from
    ``started`` (default: now)."""
    started = time.perf_counter() if started is None else started
    ttft = None
    with stream:
        for chunk in stream:
            if ttft is None and chunk.text:
                ttft = time.perf_counter() - started
    assert ttft is not None, "no token"
    return ttft


async def async_ttft(stream: Any) -> float:
    started = time.perf_counter()
    ttft = None
    async with stream:
        async for chunk in stream:
            if ttft is None and chunk.text:
                ttft = time.perf_counter() - started
    assert ttft is not None, "no token"
    return ttft


# -- the measurements -------------------------------------------------------------------------


def _options(target: dict[str, Any]) -> dict[str, Any]:
    return {
        "api_key": target["api_key"],
        "base_url": target["base_url"],
        "api": "openai",
        "worker_ca": target["worker_ca"],
    }


def measure_ttft(
    target: dict[str, Any], loop: asyncio.AbstractEventLoop, rounds: int, per_round: int
) -> dict[str, list[float]]:
    """Warm time to first token of every case, ``per_round`` calls a case a round."""
    import aiohttp

    from vast_llm import AsyncVastClient, VastClient

    run = loop.run_until_complete
    options = _options(target)
    floor = AsyncFloor(target, "lat")
    sync_client = VastClient("lat", **options)
    async_client = AsyncVastClient("lat", **options)

    async def make_aiohttp() -> aiohttp.ClientSession:
        return aiohttp.ClientSession()

    http = run(make_aiohttp())
    aio_client = AsyncVastClient("lat", http_client=http, **options)
    session = sync_client.session(lifetime=600).open()
    asession = run(async_client.session(lifetime=600).open())
    cases: dict[str, Callable[[], float]] = {
        "floor": floor.ttft,
        "floor_async": lambda: run(floor.attft()),
        "core_sync": lambda: sync_ttft(sync_client.stream_chat(MESSAGES, max_tokens=MAX_TOKENS)),
        "core_async": lambda: run(
            async_ttft(async_client.stream_chat(MESSAGES, max_tokens=MAX_TOKENS))
        ),
        "core_aiohttp": lambda: run(
            async_ttft(aio_client.stream_chat(MESSAGES, max_tokens=MAX_TOKENS))
        ),
        "session_sync": lambda: sync_ttft(session.stream_chat(MESSAGES, max_tokens=MAX_TOKENS)),
        "session_async": lambda: run(
            async_ttft(asession.stream_chat(MESSAGES, max_tokens=MAX_TOKENS))
        ),
    }
    for case in cases.values():  # warm: connections, keys, verified signatures
        case()
        case()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, case in cases.items():
            times[name] += [case() for _ in range(per_round)]
    session.close()
    run(asession.close())
    sync_client.close()
    run(async_client.aclose())
    run(aio_client.aclose())
    run(http.close())
    run(floor.aclient.aclose())
    floor.client.close()
    return times


def measure_first_calls(target: dict[str, Any], runs: int) -> dict[str, list[float]]:
    """A new client's first call, timed from its construction (pools, key fetch, new
    connections, TLS), and its second; the same for raw httpx; and what building a client's
    pools costs."""
    from vast_llm import VastClient

    out: dict[str, list[float]] = {
        "core_first": [],
        "core_second": [],
        "core_pools": [],
        "floor_first": [],
        "floor_second": [],
    }
    for _ in range(runs):
        started = time.perf_counter()
        with VastClient("lat", **_options(target)) as client:
            stream = client.stream_chat(MESSAGES, max_tokens=MAX_TOKENS)
            out["core_first"].append(sync_ttft(stream, started))
            out["core_second"].append(
                sync_ttft(client.stream_chat(MESSAGES, max_tokens=MAX_TOKENS))
            )
        with VastClient("lat", **_options(target)) as fresh:
            started = time.perf_counter()
            fresh._pools()
            out["core_pools"].append(time.perf_counter() - started)
        started = time.perf_counter()
        floor = Floor(target, "lat")
        out["floor_first"].append(floor.ttft(started=started))
        out["floor_second"].append(floor.ttft())
        floor.client.close()
    return out


_WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
    "november oscar papa quebec romeo sierra tango uniform victor whiskey xray"
).split()


def _tool_result(turn: int, nonce: str) -> str:
    words = [_WORDS[(turn * 7 + i * 3 + len(nonce)) % len(_WORDS)] for i in range(TURN_WORDS)]
    return f"Result of step {turn}: " + " ".join(words)


def agent_run(call: Callable[[list[dict[str, str]]], Any], turns: int) -> list[float]:
    """``turns`` growing turns: each sends the whole conversation, plus a new tool result; the
    answer joins the conversation. Returns each turn's time to first token."""
    nonce = secrets.token_hex(4)  # no run finds another's prompts in a worker's cache
    messages = [{"role": "system", "content": f"Agent {nonce}. Use the tools, then answer."}]
    ttfts = []
    for turn in range(turns):
        messages.append({"role": "user", "content": _tool_result(turn, nonce)})
        ttft, text = call(messages)
        ttfts.append(ttft)
        messages.append({"role": "assistant", "content": text})
    return ttfts


def _turn(stream: Any) -> tuple[float, str]:
    started = time.perf_counter()
    ttft = None
    with stream:
        for chunk in stream:
            if ttft is None and chunk.text:
                ttft = time.perf_counter() - started
    assert ttft is not None
    return ttft, stream.text


def measure_agent(
    server: Server, target: dict[str, Any], reps: int, turns: int = TURNS
) -> dict[str, Any]:
    """The agent routed per call and in one session, on both endpoints, ``reps`` times each."""
    from vast_llm import VastClient

    out: dict[str, Any] = {}
    for endpoint in ("lat", "lat-prefill"):
        client = VastClient(endpoint, **_options(target))

        def routed(messages: list[dict[str, str]]) -> tuple[float, str]:
            return _turn(client.stream_chat(messages, max_tokens=MAX_TOKENS))  # noqa: B023

        _turn(client.stream_chat(MESSAGES, max_tokens=MAX_TOKENS))  # warm
        server.stats(endpoint)
        runs: dict[str, list[list[float]]] = {"routed": [], "session": []}
        counts: dict[str, list[dict[str, int]]] = {"routed": [], "session": []}
        setup: list[float] = []
        ending: list[float] = []
        wall: dict[str, list[float]] = {"routed": [], "session": []}
        for _ in range(reps):
            started = time.perf_counter()
            runs["routed"].append(agent_run(routed, turns))
            wall["routed"].append(time.perf_counter() - started)
            counts["routed"].append(server.stats(endpoint))
            started = time.perf_counter()
            session = client.session(lifetime=600).open()
            setup.append(time.perf_counter() - started)

            def pinned(messages: list[dict[str, str]]) -> tuple[float, str]:
                return _turn(session.stream_chat(messages, max_tokens=MAX_TOKENS))  # noqa: B023

            runs["session"].append(agent_run(pinned, turns))
            closing = time.perf_counter()
            session.close()
            ending.append(time.perf_counter() - closing)
            wall["session"].append(time.perf_counter() - started)
            counts["session"].append(server.stats(endpoint))
        client.close()
        out[endpoint] = {
            "runs": runs,
            "counts": counts,
            "setup": setup,
            "end": ending,
            "wall": wall,
        }
    return out


def client_main(smoke: bool) -> dict[str, Any]:
    server = Server()
    try:
        target = server.target
        load_before = os.getloadavg()
        loop = asyncio.new_event_loop()
        started = time.perf_counter()
        ttft = measure_ttft(target, loop, rounds=1 if smoke else 6, per_round=2 if smoke else 10)
        first = measure_first_calls(target, runs=1 if smoke else 5)
        turns = 3 if smoke else TURNS
        agent = measure_agent(server, target, reps=1 if smoke else 5, turns=turns)
        loop.close()
        return {
            "ttft": ttft,
            "first": first,
            "agent": agent,
            "load": [load_before, os.getloadavg()],
            "seconds": time.perf_counter() - started,
            "settings": {
                "router_rtt": ROUTER_RTT,
                "worker_rtt": WORKER_RTT,
                "jitter": JITTER,
                "token_delay": TOKEN_DELAY,
                "prefill": PREFILL,
                "workers": WORKERS,
                "turns": turns,
                "smoke": smoke,
            },
        }
    finally:
        server.close()


def measure(smoke: bool = False) -> dict[str, Any]:
    """Run the latency section's measurements in a process of their own (run.py's hook)."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.latency", "--client"] + (["--smoke"] if smoke else []),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the latency benchmark failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- the report ---------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def _med(values: list[float]) -> float:
    return statistics.median(values)


def _per_turn(runs: list[list[float]]) -> list[float]:
    return [statistics.median(turn) for turn in zip(*runs, strict=True)]


def targets(results: dict[str, Any]) -> list[tuple[str, bool, str]]:
    ttft = results["ttft"]
    out = []
    for case in ("core_sync", "core_async", "core_aiohttp"):
        floor = FLOOR_OF.get(case, "floor")
        ratio = _med(ttft[case]) / _med(ttft[floor])
        out.append(
            (f"{case}: time to first token ≤ 1.02× floor ({floor})", ratio <= 1.02, f"{ratio:.3f}×")
        )
    rtt = results["settings"]["router_rtt"]
    for endpoint, label in (("lat", "no prefix cache"), ("lat-prefill", "prefix cache")):
        runs = results["agent"][endpoint]["runs"]
        cut = statistics.mean(_per_turn(runs["routed"])) - statistics.mean(
            _per_turn(runs["session"])
        )
        out.append(
            (
                f"agent, {label}: the session cuts per-turn time to first token by ≥ the "
                f"route round trip ({rtt * 1000:.0f} ms)",
                cut >= rtt,
                f"{cut * 1000:.1f} ms",
            )
        )
    return out


def section(results: dict[str, Any], png: pathlib.Path) -> list[str]:
    """The latency section of docs/benchmarks.md (and its plot, written to ``png``)."""
    s = results["settings"]
    ttft, first, agent = results["ttft"], results["first"], results["agent"]
    nominal = s["router_rtt"] + s["worker_rtt"] + s["token_delay"]
    lines = [
        SECTION,
        "",
        f"`python -m benchmarks.latency` (part of `make bench`): the emulator with TLS workers "
        f"and injected delays, {s['router_rtt'] * 1000:.0f} ms to the router and "
        f"{s['worker_rtt'] * 1000:.0f} ms to a worker (each answer leaves that late, "
        f"±{s['jitter'] * 100:.0f} %), {s['workers']} workers, a fake model at "
        f"{1 / s['token_delay']:.0f} tokens/s whose first token takes one token's time. The "
        "**floor** is raw `httpx` doing the least the protocol needs: `POST /route/`, then the "
        "worker's stream read to its first token, connections warm, no verification: "
        f"{nominal * 1000:.0f} ms nominal ({s['router_rtt'] * 1000:.0f} + "
        f"{s['worker_rtt'] * 1000:.0f} + {s['token_delay'] * 1000:.0f}). Streamed chat calls of "
        f"{MAX_TOKENS} tokens, one at a time; medians of {len(ttft['floor'])} calls a case, "
        "cases interleaved. Load average of the machine (2 CPUs, shared with other work) "
        f"before and after: {results['load'][0][0]:.1f} and {results['load'][1][0]:.1f}: "
        "the numbers carry its noise.",
        "",
        "| case | time to first token, median ms | × floor | p90 ms |",
        "|---|---|---|---|",
    ]
    for label, case in TTFT_CASES:
        floor = FLOOR_OF.get(case, "floor")
        values = sorted(ttft[case])
        p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
        lines.append(
            f"| {label} | {_ms(_med(values))} | "
            f"{_med(values) / _med(ttft[floor]):.3f}× | {_ms(p90)} |"
        )
    lines += [
        "",
        "Async cases are compared with the async floor. A session's calls skip the route round "
        "trip: they cost one worker round trip and the model.",
        "",
        f"**A new client's first call** (median of {len(first['core_first'])}, timed from the "
        f"client's construction): {_ms(_med(first['core_first']))} ms to the first token, its "
        f"second {_ms(_med(first['core_second']))} ms. The first builds the connection pools "
        f"({_ms(_med(first['core_pools']))} ms; the first client of a process also loads "
        "the router's TLS trust, certifi, once: some 20 ms more), fetches the autoscaler's "
        "public key (`GET /pubkey/`, one router round trip) and opens new connections, TLS "
        "with the worker. Raw httpx, from "
        f"`httpx.Client()`: {_ms(_med(first['floor_first']))} ms, its second "
        f"{_ms(_med(first['floor_second']))} ms. The emulator delays answers, not connection "
        "set-up: on a real network each new connection adds a TCP round trip and TLS 1.3 one "
        f"more, about {2 * s['router_rtt'] * 1000:.0f} ms to the router (HTTPS there) and "
        f"{2 * s['worker_rtt'] * 1000:.0f} ms to the worker, for this client and the floor alike.",
        "",
        f"**An agent's {s['turns']} turns.** Each turn sends the whole conversation plus a new "
        f"tool result of about {TURN_WORDS} words, and the answer joins the conversation: "
        "routed per call (`client.stream_chat`) or in one worker session "
        "(`with client.session() as s: s.stream_chat(...)`). Time to first token per turn, "
        f"median of {len(agent['lat']['runs']['routed'])} runs; the prefix-cache endpoint's "
        f"model spends {s['prefill'] * 1e3:.1f} ms per prompt token its worker has not cached "
        "(5,000 tokens/s), and each worker caches its last prompt. Routed calls go round the "
        f"{s['workers']} workers, so a worker has seen the conversation as it was "
        f"{s['workers']} turns ago at best.",
        "",
        "| turn | " + " | ".join(str(i + 1) for i in range(s["turns"])) + " | mean |",
        "|---|" + "---|" * (s["turns"] + 1),
    ]
    per_turn: dict[str, list[float]] = {}
    for endpoint, name in (("lat", "no cache"), ("lat-prefill", "prefix cache")):
        for mode in ("routed", "session"):
            turns = _per_turn(agent[endpoint]["runs"][mode])
            per_turn[f"{mode}, {name}"] = turns
            cells = " | ".join(_ms(t) for t in turns)
            lines.append(f"| {mode}, {name} (ms) | {cells} | {_ms(statistics.mean(turns))} |")
    lines.append("")
    for endpoint, name in (("lat", "Without a prefix cache"), ("lat-prefill", "With one")):
        data = agent[endpoint]
        routed, pinned = (statistics.mean(per_turn_of(data, m)) for m in ("routed", "session"))
        prefilled = {
            m: statistics.mean(c["prefilled"] for c in data["counts"][m]) / s["turns"]
            for m in ("routed", "session")
        }
        cached = {
            m: statistics.mean(c["cached"] for c in data["counts"][m]) / s["turns"]
            for m in ("routed", "session")
        }
        lines.append(
            f"- {name}: the session's turns take {_ms(pinned)} ms to the first token against "
            f"{_ms(routed)} ms routed, {_ms(routed - pinned)} ms less (the route round trip is "
            f"{s['router_rtt'] * 1000:.0f} ms). Prompt tokens computed per turn: "
            f"{prefilled['session']:.0f} in the session, {prefilled['routed']:.0f} routed "
            f"(found in the worker's cache: {cached['session']:.0f} and "
            f"{cached['routed']:.0f}). Making the session cost {_ms(_med(data['setup']))} ms "
            f"once (a route and `/session/create`), ending it {_ms(_med(data['end']))} ms; the "
            f"{s['turns']} turns took {_med(data['wall']['session']):.2f} s in all in the "
            f"session, making and ending it included, {_med(data['wall']['routed']):.2f} s "
            "routed."
        )
    lines += [
        "",
        "| latency target | met | measured |",
        "|---|---|---|",
        *[
            f"| {name} | {'yes' if met else 'no'} | {detail} |"
            for name, met, detail in targets(results)
        ],
        "",
        f"![time to first token, and an agent's turns routed or in a session]({png.name})",
        "",
    ]
    plot(results, per_turn, png)
    return lines


def per_turn_of(data: dict[str, Any], mode: str) -> list[float]:
    return _per_turn(data["runs"][mode])


def plot(results: dict[str, Any], per_turn: dict[str, list[float]], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ttft = results["ttft"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(14, 4.8))
    labels = [label for label, _ in TTFT_CASES]
    values = [_med(ttft[case]) * 1000 for _, case in TTFT_CASES]
    colors = [
        "#888"
        if case.startswith("floor")
        else "#2a9d5c"
        if case.startswith("session")
        else "#3b7dd8"
        for _, case in TTFT_CASES
    ]
    left.barh(labels, values, color=colors)
    for y, value in enumerate(values):
        left.text(value + 2, y, f"{value:.1f}", va="center", fontsize=8)
    left.axvline(_med(ttft["floor"]) * 1000, color="black", linewidth=0.8)
    left.set_xlabel("time to first token, median ms (warm)")
    left.set_title("one call: routed vs the floor, and in a session", fontsize=10)
    left.invert_yaxis()
    styles = {
        "routed, no cache": ("#3b7dd8", "--"),
        "session, no cache": ("#2a9d5c", "--"),
        "routed, prefix cache": ("#3b7dd8", "-"),
        "session, prefix cache": ("#2a9d5c", "-"),
    }
    turns = range(1, results["settings"]["turns"] + 1)
    for name, values_ in per_turn.items():
        color, style = styles[name]
        right.plot(
            turns,
            [v * 1000 for v in values_],
            style,
            color=color,
            marker="o",
            markersize=3,
            label=name,
        )
    right.set_xlabel("agent turn (the conversation grows each turn)")
    right.set_ylabel("time to first token, median ms")
    right.set_title("an agent's turns: routed per call vs one worker session", fontsize=10)
    right.set_ylim(bottom=0)
    right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def splice(report: pathlib.Path, lines: list[str]) -> None:
    """Put the latency section in ``report``, replacing the one there (it comes last)."""
    text = report.read_text() if report.exists() else ""
    head = text.split("\n" + SECTION, 1)[0].rstrip("\n")
    report.write_text((head + "\n\n" if head else "") + "\n".join(lines))


def report_section(
    report: pathlib.Path, png: pathlib.Path, *, smoke: bool = False, saved_only: bool = False
) -> list[str]:
    """Measure (or, with ``saved_only``, reread the measurements saved next to ``report``)
    and return the section's lines; the plot goes to ``png``. benchmarks/run.py's hook."""
    saved = report.with_name("benchmarks-latency.json")
    if saved_only:
        results = json.loads(saved.read_text())
    else:
        results = measure(smoke)
        saved.write_text(json.dumps(results, indent=1))
    return section(results, png)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a tiny run that only checks it works")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--png", default=str(ROOT / "docs" / "benchmarks-latency.png"))
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite the section from the saved measurements (no new run)",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return 0
    if args.client:
        print(json.dumps(client_main(args.smoke)))
        return 0
    out = pathlib.Path(args.out)
    lines = report_section(
        out, pathlib.Path(args.png), smoke=args.smoke, saved_only=args.report_only
    )
    splice(out, lines)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
