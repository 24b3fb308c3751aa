"""The demo (``make demo`` / ``vast-llm demo``): every step runs and says what happened."""

from __future__ import annotations

import pytest

from vast_llm.cli import main
from vast_llm.emulator import Emulator


def test_demo_on_the_emulator(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--model", "fake"]) == 0
    out = capsys.readouterr().out
    for step in ("1. LangChain", "2. LlamaIndex", "3. Security", "4. Reliability"):
        assert step in out
    assert "no worker ready (1 Creating)" in out or "no worker ready (2 Creating)" in out
    # Three generations, and the RAG step's embeddings (documents, question) and rerank.
    assert out.count("signature g3 verified") == 6
    for step in ("embed 4 documents: worker", "embed the question: worker",
                 "rerank 3 passages: worker", "answer: worker"):  # fmt: skip
        assert step in out
    assert "SignatureError" in out and "connections to 203.0.113.66:8080: 0" in out
    assert "recovered on attempt 2" in out and "source: signatures.md" in out


def test_demo_against_a_named_endpoint(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The path `vast-llm demo --endpoint NAME` takes for Vast.ai, pointed at the emulator,
    # whose endpoint (as many do) does not serve /v1/embeddings.
    with Emulator(api="openai", workers=2, embeddings=False).serve() as emu:
        monkeypatch.setenv("VAST_API_KEY", emu.api_key)
        monkeypatch.setenv("VAST_BASE_URL", emu.base_url)
        assert main(["demo", "--endpoint", emu.endpoint, "--api", "openai"]) == 0
    out = capsys.readouterr().out
    assert "connections to 203.0.113.66:8080: 0" in out
    assert "The first worker connection is refused" in out and "recovered on attempt 2" in out
    assert "does not serve /v1/embeddings" in out and "local lexical embeddings" in out


def test_demo_against_vast_needs_a_key(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VAST_API_KEY", raising=False)
    assert main(["demo", "--endpoint", "my-endpoint"]) == 1
    assert capsys.readouterr().err.startswith("error: the demo against Vast.ai needs VAST_API_KEY")
