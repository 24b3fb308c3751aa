"""Every example runs against the emulator (each also runs against Vast.ai when VAST_ENDPOINT
and VAST_API_KEY are set)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_"))


def test_the_examples_are_the_documented_ones() -> None:
    assert EXAMPLES == [
        "core_aiohttp.py",
        "core_async.py",
        "core_sync.py",
        "langchain_chain.py",
        "langchain_rag.py",
        "llamaindex_agent.py",
        "llamaindex_rag.py",
    ]


@pytest.mark.system
@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs_as_a_script(name: str) -> None:
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("VAST_")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip()
    assert "Traceback" not in result.stderr
