"""The latency benchmark runs (a smoke run: its numbers mean nothing, its working does), and its
section replaces itself in docs/benchmarks.md."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from benchmarks.latency import SECTION, splice

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.system
def test_latency_smoke_run(tmp_path: pathlib.Path) -> None:
    out, png = tmp_path / "benchmarks.md", tmp_path / "benchmarks-latency.png"
    out.write_text("# Benchmarks\n\nthe rest of the report\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.latency",
            "--smoke",
            "--out",
            str(out),
            "--png",
            str(png),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = out.read_text()
    assert report.startswith("# Benchmarks\n\nthe rest of the report\n\n" + SECTION)
    rows = (
        "floor: raw httpx, route + worker",
        "session: VastSession.stream_chat",
        "A new client's first call",
        "session, prefix cache",
        "latency target",
    )
    for row in rows:
        assert row in report
    assert png.stat().st_size > 10_000
    assert (tmp_path / "benchmarks-latency.json").exists()


def test_the_section_replaces_itself(tmp_path: pathlib.Path) -> None:
    report = tmp_path / "b.md"
    report.write_text("# B\n\ntext\n")
    splice(report, [SECTION, "", "one"])
    splice(report, [SECTION, "", "two"])
    assert report.read_text() == f"# B\n\ntext\n\n{SECTION}\n\ntwo"
