"""This tree's benchmark rows against another commit's, measured side by side in one session.

    .venv/bin/python -m benchmarks.compare 506b7b2 [--rounds 5] [--requests 1000]

On a shared machine a figure from another day says little: this extracts the other commit's
code (``git archive``, into a temporary directory; the repository is not touched), starts one
emulator (this tree's, so both clients talk to the same server), and runs every case of
``benchmarks/cases.py`` once with each tree's code per round, alternating which goes first.
Each figure is the median over the rounds; each ratio the median of the rounds' ratios, this
tree's over the other's (above 1 is slower, or for req/s below 1). Cases the other commit
lacks are skipped.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.run import CASES, ROOT, ROWS, _get, _median_of


def extract(revision: str, into: Path) -> Path:
    """The tree of ``revision`` as plain files under ``into``."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def run_case(tree: Path, name: str, env: dict[str, str], sizes: dict[str, int]) -> dict[str, Any]:
    # `python -m` puts the working directory first on sys.path: the tree's own packages win
    # over the editable install of this one.
    command = [
        sys.executable,
        "-m",
        "benchmarks.cases",
        name,
        "--requests",
        str(sizes["requests"]),
        "--total",
        str(sizes["total"]),
    ]
    if name == "floor_no_reuse":
        command[command.index("--requests") + 1] = str(min(sizes["requests"], 300))
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tree, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{name} in {tree} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure(
    other: Path, cases: list[str], sizes: dict[str, int], rounds: int, save: Path | None = None
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every run of every case, by tree ("new", "old"), in round order; ``save`` gets them
    after each case (a long run interrupted keeps what it measured)."""
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.serve"],
        cwd=ROOT,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {"new": {}, "old": {}}
    try:
        assert server.stdout is not None
        env = {**os.environ, "BENCH_TARGET": server.stdout.readline().strip()}
        env.pop("PYTHONPATH", None)
        for round_ in range(rounds):
            for name in cases:
                order = [("new", ROOT), ("old", other)]
                if round_ % 2:
                    order.reverse()
                for label, tree in order:
                    print(
                        f"  round {round_ + 1}/{rounds}: {name} ({label})",
                        file=sys.stderr,
                        flush=True,
                    )
                    runs[label].setdefault(name, []).append(run_case(tree, name, env, sizes))
                if save is not None:
                    save.write_text(json.dumps(runs, indent=1))
    finally:
        if server.stdin:
            server.stdin.close()
        server.wait(timeout=30)
    return runs


def paired(
    runs: dict[str, dict[str, list[dict[str, Any]]]], case: str, mode: str, key: str
) -> float | None:
    """The median over rounds of new ÷ old, each round's two runs measured one after the other
    (the machine's drift between rounds cancels out)."""
    ratios = []
    for new, old in zip(runs["new"].get(case, []), runs["old"].get(case, []), strict=False):
        a, b = _get({case: old}, case, mode, key), _get({case: new}, case, mode, key)
        if a and b:
            ratios.append(b / a)
    return statistics.median(ratios) if ratios else None


def report(runs: dict[str, dict[str, list[dict[str, Any]]]], revision: str) -> list[str]:
    """A row per benchmark row: the medians of each tree's runs, and the median of the
    per-round ratios (now ÷ then)."""
    new = {n: _median_of(r) for n, r in runs["new"].items()}
    old = {n: _median_of(r) for n, r in runs["old"].items()}
    lines = [
        f"| row | median ms: {revision} → now | × | client CPU ms/req: {revision} → now | × "
        f"| req/s (c=64): {revision} → now | × |",
        "|---|---|---|---|---|---|---|",
    ]

    def cell(case: str, mode: str, key: str, digits: int = 2) -> tuple[str, str]:
        a, b = _get(old, case, mode, key), _get(new, case, mode, key)
        ratio = paired(runs, case, mode, key)
        if a is None or b is None or ratio is None:
            return "—", "—"
        return f"{a:.{digits}f} → {b:.{digits}f}", f"{ratio:.2f}×"

    for label, case, mode, _ in ROWS:
        if case not in old or case not in new:
            continue
        median, median_x = cell(case, mode, "median_ms")
        cpu, cpu_x = cell(case, mode, "cpu_ms")
        rps, rps_x = cell(case, mode, "throughput_rps", 0) if mode == "async" else ("—", "—")
        lines.append(f"| {label} | {median} | {median_x} | {cpu} | {cpu_x} | {rps} | {rps_x} |")
    for case in ("stream_raw", "stream_core"):
        if case in old and case in new:
            a, b = old[case]["per_token_us"], new[case]["per_token_us"]
            ratio = paired(runs, case, "", "per_token_us")
            lines.append(
                f"| {case}: µs of client CPU per token | — | — | {a:.1f} → {b:.1f} | "
                f"{ratio or 0:.2f}× | — | — |"
            )
    lines += [
        "",
        "Each ratio is the median over rounds of that round's now ÷ then (the two runs of a "
        "round are measured one after the other); above 1 is slower, for req/s below 1.",
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("revision", help="the commit to compare with")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=1000, help="sequential requests a row")
    parser.add_argument("--total", type=int, default=2000, help="requests at concurrency 64")
    parser.add_argument("--cases", help="comma-separated case names (default: every row's)")
    parser.add_argument("--json", help="write every run to this file (after each case)")
    args = parser.parse_args()
    sizes = {"requests": args.requests, "total": args.total}
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        other = extract(args.revision, Path(tmp))
        known = (other / "benchmarks" / "cases.py").read_text()
        wanted = args.cases.split(",") if args.cases else [c for c in CASES if c != "micro"]
        cases = [c for c in wanted if f'"{c}"' in known]
        runs = measure(other, cases, sizes, args.rounds, Path(args.json) if args.json else None)
    print("\n".join(report(runs, args.revision)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
