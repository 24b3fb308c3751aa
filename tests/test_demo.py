"""The demo (``make demo`` / ``vast-llm demo``, the vast_llm_demo package): every step runs and
says what happened, in production's shape (HTTPS workers, a cold start whose waiting shows, a
reasoning answer), from progress events rather than log text."""

from __future__ import annotations

import logging
import re
import sys

import pytest

from vast_llm.cli import main
from vast_llm.emulator import Emulator


@pytest.mark.system
def test_demo_on_the_emulator(capsys: pytest.CaptureFixture[str]) -> None:
    # Log records are not where the transcript comes from: silence them all.
    logging.disable(logging.CRITICAL)
    try:
        assert main(["demo", "--model", "fake"]) == 0
    finally:
        logging.disable(logging.NOTSET)
    out = capsys.readouterr().out
    steps = ("1. LangChain", "2. Reasoning", "3. LlamaIndex", "4. Security", "5. Reliability")
    assert all(step in out for step in steps)
    # TLS workers: every route fact names an https:// worker.
    workers = re.findall(r"worker (\S+) · reqnum", out)
    assert workers and all(w.startswith("https://127.0.0.1:") for w in workers)
    # The cold start, seen as the router reports it, from Progress events.
    assert "waiting for a worker of 'demo-tgi': no worker ready (2 Stopped)" in out
    assert re.search(r"no worker ready \(1 (Starting|Model Loading), 1 Stopped\)", out)
    assert "a cold worker woke and took the request after" in out
    assert re.search(r"reached LangChain's callbacks as (\d+) 'vast_progress' custom events", out)
    # The reasoning answer, apart from its text, and what produced it.
    thinking = out.split('additional_kwargs["reasoning_content"]:')[1].split("A: ")[0]
    assert "7 times 13 is 91" in " ".join(thinking.split())
    assert "A: No: 91 = 7 × 13, so it is not prime." in out
    assert "What produced it: a scripted turn of the emulator" in out
    # Four generations, and the RAG step's embeddings (documents, question) and rerank.
    assert out.count("signature g3 verified") == 7
    facts = ("embed 4 documents", "embed the question", "rerank 3 passages", "answer")
    assert all(f"{label}: worker https://" in out for label in facts)
    assert re.search(r"event handlers saw (1[2-9]|[2-9]\d) VastProgressEvents", out)
    assert "SignatureError" in out and "connections to 203.0.113.66:8080: 0" in out
    # The failure and the retry, from the retrying event.
    assert re.search(r"attempt 1 failed \(HTTP 500 from worker https://127\.0\.0\.1:\d+", out)
    assert "recovered on attempt 2" in out and "source: signatures.md" in out


@pytest.mark.system
def test_demo_against_a_named_endpoint(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The path `vast-llm demo --endpoint NAME` takes for Vast.ai, pointed at the emulator,
    # whose endpoint (as many do) does not serve /v1/embeddings, with HTTPS workers.
    with Emulator(api="openai", workers=2, embeddings=False, tls=True).serve() as emu:
        monkeypatch.setenv("VAST_API_KEY", emu.api_key)
        monkeypatch.setenv("VAST_BASE_URL", emu.base_url)
        assert emu.worker_ca is not None
        monkeypatch.setenv("VAST_WORKER_CA", emu.worker_ca)
        assert main(["demo", "--endpoint", emu.endpoint, "--api", "openai"]) == 0
    out = capsys.readouterr().out
    assert "connections to 203.0.113.66:8080: 0" in out
    assert "The first worker connection is refused" in out and "recovered on attempt 2" in out
    assert "does not serve /v1/embeddings" in out and "local lexical embeddings" in out
    assert "no reasoning in this answer" in out  # the fake model without reasoning= thinks not


def test_demo_against_vast_needs_a_key(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VAST_API_KEY", raising=False)
    assert main(["demo", "--endpoint", "my-endpoint"]) == 1
    assert capsys.readouterr().err.startswith("error: the demo against Vast.ai needs VAST_API_KEY")


@pytest.mark.parametrize(
    ("blocked", "args", "command"),
    [
        (["llama_index.core"], [], 'pip install "vast-llm[llamaindex]"'),
        (["langchain_core", "starlette"], [], 'pip install "vast-llm[langchain,emulator]"'),
        (["langchain_core", "llama_index.core", "starlette"], [], 'pip install "vast-llm[demo]"'),
        # Against Vast.ai the emulator is not needed.
        (["langchain_core", "starlette"], ["--endpoint", "x"], 'pip install "vast-llm[langchain]"'),
    ],
)
def test_a_missing_extra_is_named(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    blocked: list[str],
    args: list[str],
    command: str,
) -> None:
    for module in blocked:
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    monkeypatch.setenv("VAST_API_KEY", "k" * 20)
    assert main(["demo", *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the demo needs the ") and err.rstrip().endswith(command)
