"""The benchmark harness runs (a tiny smoke run: its numbers mean nothing, its working does)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.system
@pytest.mark.vastai_sdk  # the report compares against the official SDK (make sdk)
def test_benchmark_smoke_run(tmp_path: pathlib.Path) -> None:
    out, png = tmp_path / "bench.md", tmp_path / "bench.png"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--smoke", "--out", str(out), "--png", str(png)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = out.read_text()
    rows = (
        "floor: raw httpx",
        "core: AsyncVastClient.generate",
        "langchain: ChatVast.invoke",
        "llamaindex: Vast.astream_complete",
        "official vastai SDK",
        "## Targets",
        "floor on aiohttp: raw aiohttp",
        "on an aiohttp.ClientSession",
        "## Embeddings",
        "core: embed",
        "HTTPS workers, core: AsyncVastClient.generate",
        "## HTTPS workers",
        "HTTPS, a new connection per request",
        "HTTPS workers: core (sync) median latency",
        "## Latency on a realistic network",
    )
    for row in rows:
        assert row in report
    assert "not measured" not in report  # the official SDK's venv is part of make test
    assert png.stat().st_size > 10_000


@pytest.mark.system
def test_embedding_benchmark_smoke_run() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.embed", "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for row in (
        "| floor: raw httpx",
        "| core: embed | sync",
        "| core: embed | async",
        "VastEmbeddings.embed_documents",
        "OpenAIEmbeddings over VastTransport",
        "for `iter_embed` over a generator",
        "embed (async) client CPU",
    ):
        assert row in result.stdout


@pytest.mark.system
def test_tail_trace_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.tail", "--requests", "20"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "p99:" in result.stdout and "slower than 1.5" in result.stdout


def test_bursts_are_runs_of_slow_requests() -> None:
    from benchmarks.tail import bursts

    times = [1.0, 1.0, 1.0, 1.0, 3.0, 3.0, 3.0, 1.0, 1.0, 2.0, 1.0, 3.0, 1.0, 1.0]  # median 1.0
    assert bursts(times) == [(4, 3), (9, 1), (11, 1)]
