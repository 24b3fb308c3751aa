"""The embeddings benchmark: 10,000 short texts through ``/v1/embeddings``, batched.

    .venv/bin/python -m benchmarks.embed            # the full run (part of `make bench`)
    .venv/bin/python -m benchmarks.embed --smoke    # a tiny run that only checks it works

Cases, each in a process of its own (so client CPU time and peak RSS are the case's alone),
against an emulator in another process (benchmarks/serve.py: fake embedding model, 128
dimensions):

- ``floor``: raw ``httpx``, the same route + worker calls with the same batching (64 texts a
  request), no verification, ``json.loads`` and the vectors picked out;
- ``core``: ``VastClient.embed`` / ``AsyncVastClient.embed`` (route, verification, checks of
  every answer, order kept);
- ``lc_openai``: LangChain's ``OpenAIEmbeddings`` (``langchain-openai``) on the same endpoint
  through ``VastTransport`` (measured only when ``langchain-openai`` is installed);
- ``lc_vast``: ``VastEmbeddings.embed_documents``;
- ``rss_iter`` / ``rss_whole``: peak RSS growth over the 10,000 texts for
  ``VastClient.iter_embed`` over a generator (vectors dropped as they come) and for
  ``VastClient.embed`` (all vectors kept), from a baseline taken after one batch.

Sync cases run the batches one after another; async cases run 8 batches at once (the floor
through ``asyncio.gather`` under a semaphore). Numbers are medians of interleaved rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
BATCH = 64
CONCURRENCY = 8
CASES = ("floor", "core", "lc_vast", "lc_openai")
WORDS = (
    "route worker signature vector model answer cold start retry deadline batch text "
    "query document rerank embedding endpoint"
).split()


def texts(n: int) -> list[str]:
    """Short texts, 30-50 characters, all different."""
    return [
        f"text {i}: {WORDS[i % len(WORDS)]} and {WORDS[(i * 7) % len(WORDS)]}" for i in range(n)
    ]


def target() -> dict[str, Any]:
    return dict(json.loads(os.environ["BENCH_TARGET"]))


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


# -- the floor: raw httpx -------------------------------------------------------------------


def _floor_payloads(items: list[str]) -> tuple[float, dict[str, Any]]:
    from vast_llm._embed import route_workload

    payload = {"input": items}
    return route_workload("/v1/embeddings", payload) or 50.0, payload


def floor() -> tuple[Any, Any, Any]:
    """Raw httpx: one client per process (as an application keeps one), route then worker."""
    import httpx

    t = target()
    sync_client = httpx.Client()
    clients: list[httpx.AsyncClient] = []  # made in the event loop that uses it

    def call(data: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for at in range(0, len(data), BATCH):
            cost, payload = _floor_payloads(data[at : at + BATCH])
            route = {"endpoint": t["openai"], "api_key": t["api_key"], "cost": cost}
            assignment = sync_client.post(t["base_url"] + "/route/", json=route).json()
            body = {"auth_data": assignment, "session_id": None, "payload": payload}
            answer = sync_client.post(assignment["url"] + "/v1/embeddings", json=body).json()
            vectors.extend(d["embedding"] for d in answer["data"])
        return vectors

    async def acall(data: list[str]) -> list[list[float]]:
        if not clients:
            clients.append(httpx.AsyncClient())
        client, gate = clients[0], asyncio.Semaphore(CONCURRENCY)

        async def one(at: int) -> list[list[float]]:
            async with gate:
                cost, payload = _floor_payloads(data[at : at + BATCH])
                route = {"endpoint": t["openai"], "api_key": t["api_key"], "cost": cost}
                assignment = (await client.post(t["base_url"] + "/route/", json=route)).json()
                body = {"auth_data": assignment, "session_id": None, "payload": payload}
                answer = await client.post(assignment["url"] + "/v1/embeddings", json=body)
                return [d["embedding"] for d in answer.json()["data"]]

        parts = await asyncio.gather(*(one(at) for at in range(0, len(data), BATCH)))
        return [v for part in parts for v in part]

    return call, acall, sync_client.close


# -- the cases --------------------------------------------------------------------------------


def _settings() -> dict[str, Any]:
    t = target()
    return {
        "endpoint": t["openai"],
        "api_key": t["api_key"],
        "base_url": t["base_url"],
        "api": "openai",
    }


def case_calls(name: str) -> tuple[Any, Any, Any]:
    """(sync call, async call, close) embedding a list of texts, or a reason it cannot run."""
    if name == "floor":
        return floor()
    if name == "core":
        from vast_llm import AsyncVastClient, VastClient

        sync, aio = VastClient(**_settings()), AsyncVastClient(**_settings())

        async def acall(data: list[str]) -> Any:
            return (await aio.embed(data, concurrency=CONCURRENCY)).vectors

        return (lambda data: sync.embed(data).vectors), acall, sync.close
    if name == "lc_vast":
        from langchain_vast import VastEmbeddings

        model = VastEmbeddings(**_settings(), max_concurrency=CONCURRENCY)
        return model.embed_documents, model.aembed_documents, model.close
    if name == "lc_openai":
        try:
            from langchain_openai import OpenAIEmbeddings
        except ImportError:
            return (
                "langchain-openai is not installed (not a dependency of this project)",
                None,
                None,
            )
        import httpx

        from vast_llm import AsyncVastTransport, VastTransport

        s = {k: v for k, v in _settings().items() if k != "api"}
        endpoint = s.pop("endpoint")
        # check_embedding_ctx_length=False: otherwise tiktoken downloads its tables at run time.
        model = OpenAIEmbeddings(
            model="fake-embedding",
            base_url="http://vast/v1",
            api_key="unused",
            max_retries=0,
            chunk_size=BATCH,
            check_embedding_ctx_length=False,
            http_client=httpx.Client(transport=VastTransport(endpoint, **s)),
            http_async_client=httpx.AsyncClient(transport=AsyncVastTransport(endpoint, **s)),
        )
        return model.embed_documents, model.aembed_documents, None
    raise ValueError(name)


def run_case(name: str, n: int) -> dict[str, Any]:
    sync, aio, close = case_calls(name)
    if isinstance(sync, str):
        return {"case": name, "missing": sync}
    data = texts(n)
    sync(data[:BATCH])  # warm: key fetch, connections, imports
    out: dict[str, Any] = {"case": name}
    cpu, wall = time.process_time(), time.perf_counter()
    vectors = sync(data)
    out["sync"] = _measured(n, time.process_time() - cpu, time.perf_counter() - wall)
    assert len(vectors) == n
    assert len(vectors[0]) == 128

    async def run_async() -> dict[str, float]:
        await aio(data[:BATCH])
        cpu, wall = time.process_time(), time.perf_counter()
        got = await aio(data)
        assert len(got) == n
        return _measured(n, time.process_time() - cpu, time.perf_counter() - wall)

    out["async"] = asyncio.run(run_async())
    if close is not None:
        close()
    return out


def _measured(n: int, cpu: float, wall: float) -> dict[str, float]:
    return {"cpu_us_per_text": cpu / n * 1e6, "texts_per_s": n / wall}


def run_rss(name: str, n: int) -> dict[str, Any]:
    from vast_llm import VastClient

    client = VastClient(**_settings())
    client.embed(texts(BATCH))  # warm, and one batch's worth of everything allocated once
    base = peak_mb()

    def lazy() -> Iterator[str]:
        for i in range(n):
            yield f"text {i}: {WORDS[i % len(WORDS)]} and {WORDS[(i * 7) % len(WORDS)]}"

    if name == "rss_iter":
        count = sum(len(batch.vectors) for batch in client.iter_embed(lazy()))
    else:
        count = len(client.embed(list(lazy())).vectors)
    assert count == n
    client.close()
    return {"case": name, "peak_growth_mb": peak_mb() - base}


# -- the driver -------------------------------------------------------------------------------


def _subprocess(name: str, n: int, env: dict[str, str]) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.embed", "--case", name, "--texts", str(n)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"embedding case {name} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _median(runs: list[Any]) -> Any:
    first = runs[0]
    if isinstance(first, dict):
        return {k: _median([r[k] for r in runs if k in r]) for k in first}
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        return statistics.median(runs)
    return first


def measure(n: int, rounds: int, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Start the benchmark's emulator (unless ``env`` names one) and run every case."""
    server = None
    if env is None:
        server = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.serve"],
            cwd=ROOT,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert server.stdout is not None
        env = {**os.environ, "BENCH_TARGET": server.stdout.readline().strip()}
    try:
        runs: dict[str, list[dict[str, Any]]] = {}
        for round_ in range(rounds):
            for name in (*CASES, "rss_iter", "rss_whole"):
                print(
                    f"  embeddings round {round_ + 1}/{rounds}: {name}", file=sys.stderr, flush=True
                )
                runs.setdefault(name, []).append(_subprocess(name, n, env))
        return {name: _median(results) for name, results in runs.items()}
    finally:
        if server is not None:
            assert server.stdin is not None
            server.stdin.close()
            server.wait(timeout=30)


def _get(results: dict[str, Any], case: str, mode: str, key: str) -> float | None:
    value = results.get(case, {}).get(mode, {}).get(key)
    return float(value) if isinstance(value, (int, float)) else None


def report(
    results: dict[str, Any], n: int, rounds: int
) -> tuple[list[str], list[tuple[str, bool | None, str]]]:
    """The report's section (Markdown lines) and the targets: (target, met?, numbers)."""
    labels = {
        "floor": "floor: raw httpx, route + worker per batch",
        "core": "core: embed",
        "lc_vast": "langchain: VastEmbeddings.embed_documents",
        "lc_openai": "langchain: OpenAIEmbeddings over VastTransport",
    }
    lines = [
        "## Embeddings",
        "",
        f"{n:,} short texts (30-50 characters) through `/v1/embeddings`, {BATCH} a request "
        f"(the default `embed_batch_size`), 128-dimension vectors from the emulator's fake "
        f"model; sync: batches one after another, async: {CONCURRENCY} at once. Medians of "
        f"{rounds} interleaved rounds, every case in a process of its own.",
        "",
        "| case | mode | client CPU µs / text | × floor | texts / s | × floor |",
        "|---|---|---|---|---|---|",
    ]
    for case in CASES:
        entry = results.get(case, {})
        if entry.get("missing"):
            lines.append(f"| {labels[case]} | — | skipped: {entry['missing']} | | | |")
            continue
        for mode in ("sync", "async"):
            cpu, rate = (_get(results, case, mode, k) for k in ("cpu_us_per_text", "texts_per_s"))
            fcpu, frate = (
                _get(results, "floor", mode, k) for k in ("cpu_us_per_text", "texts_per_s")
            )
            lines.append(
                f"| {labels[case]} | {mode} | {cpu:.1f} | {cpu / fcpu:.2f}× | {rate:,.0f} | "
                f"{rate / frate:.2f}× |"
                if cpu and fcpu and rate and frate
                else f"| {case} | {mode} | — | | | |"
            )
    grow_iter = results.get("rss_iter", {}).get("peak_growth_mb")
    grow_whole = results.get("rss_whole", {}).get("peak_growth_mb")
    lines += [
        "",
        f"Peak RSS growth over the {n:,} texts, from a baseline taken after one batch: "
        f"**{grow_iter:.1f} MB** for `iter_embed` over a generator (memory of a batch at a "
        f"time), **{grow_whole:.1f} MB** for `embed` (every vector kept, as it must).",
        "",
    ]
    checks: list[tuple[str, bool | None, str]] = []
    for mode in ("sync", "async"):
        cpu = [_get(results, c, mode, "cpu_us_per_text") for c in ("core", "floor")]
        rate = [_get(results, c, mode, "texts_per_s") for c in ("core", "floor")]
        if all(cpu) and all(rate):
            r_cpu, r_rate = cpu[0] / cpu[1], rate[0] / rate[1]  # type: ignore[operator]
            checks.append(
                (f"embed ({mode}) client CPU ≤ 1.3× floor", r_cpu <= 1.3, f"{r_cpu:.2f}×")
            )
            checks.append(
                (f"embed ({mode}) texts/s ≥ 0.85× floor", r_rate >= 0.85, f"{r_rate:.2f}×")
            )
    lc = results.get("lc_openai", {})
    if lc.get("missing"):
        checks.append(("embed ahead of OpenAIEmbeddings over VastTransport", None, lc["missing"]))
    else:
        for mode in ("sync", "async"):
            ours, theirs = (
                _get(results, c, mode, "cpu_us_per_text") for c in ("lc_vast", "lc_openai")
            )
            if ours and theirs:
                checks.append(
                    (
                        f"VastEmbeddings ({mode}) CPU below OpenAIEmbeddings over VastTransport",
                        ours < theirs,
                        f"{ours:.1f} vs {theirs:.1f} µs/text",
                    )
                )
    if grow_iter is not None and grow_whole is not None:
        checks.append(
            (
                "iter_embed peak RSS stays that of a batch (growth < 5 MB)",
                grow_iter < 5,
                f"{grow_iter:.1f} MB (embed: {grow_whole:.1f} MB)",
            )
        )
    return lines, checks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case", help="run one case in this process (the driver uses it)")
    parser.add_argument("--texts", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="a tiny run that only checks it works")
    args = parser.parse_args()
    if args.case:
        runner = run_rss if args.case.startswith("rss_") else run_case
        print(json.dumps(runner(args.case, args.texts)))
        return 0
    n, rounds = (256, 1) if args.smoke else (args.texts, args.rounds)
    results = measure(n, rounds)
    lines, checks = report(results, n, rounds)
    print("\n".join(lines))
    for name, met, detail in checks:
        print(f"- {name}: {'yes' if met else 'no' if met is not None else 'n/a'} ({detail})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
