"""The benchmark harness runs (a tiny smoke run: its numbers mean nothing, its working does)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_benchmark_smoke_run(tmp_path: pathlib.Path) -> None:
    out, png = tmp_path / "bench.md", tmp_path / "bench.png"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--smoke", "--out", str(out), "--png", str(png)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = out.read_text()
    rows = ("floor: raw httpx", "core: AsyncVastClient.generate", "langchain: ChatVast.invoke",
            "llamaindex: Vast.astream_complete", "official vastai SDK", "## Targets")  # fmt: skip
    for row in rows:
        assert row in report
    assert "not measured" not in report  # the official SDK's venv is part of make test
    assert png.stat().st_size > 10_000
