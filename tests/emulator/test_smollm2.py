"""The real model behind the emulator: SmolLM2-135M-Instruct answers through router + worker."""

from __future__ import annotations

import pytest

from vast_llm import VastClient
from vast_llm.emulator import Emulator, smollm2_available

pytestmark = pytest.mark.model

QUESTION = [
    {"role": "system", "content": "You are a helpful assistant. Answer in one short sentence."},
    {"role": "user", "content": "What is the capital of France?"},
]


@pytest.fixture(scope="module")
def real() -> Emulator:
    if not smollm2_available():
        pytest.fail("the real model is not installed: run `make model` (make test does)")
    emu = Emulator(api="openai", model="smollm2")
    emu.add_endpoint("tgi", api="tgi", model="smollm2")
    emu.start()
    yield emu
    emu.stop()


def test_streamed_chat_answer_names_paris(real: Emulator) -> None:
    with VastClient(
        real.endpoint, api_key=real.api_key, base_url=real.base_url, api="openai"
    ) as client:
        with client.stream_chat(QUESTION, max_tokens=40, temperature=0) as stream:
            chunks = [c.text for c in stream if c.text]
        assert "Paris" in stream.text and len(chunks) > 1  # it really streamed
        assert stream.usage is not None and stream.usage.completion_tokens == len(chunks)
        assert stream.route.verified


def test_tgi_worker_with_the_chatml_template(real: Emulator) -> None:
    with VastClient("tgi", api_key=real.api_key, base_url=real.base_url) as client:
        with client.stream_chat(QUESTION, max_tokens=40, temperature=0) as stream:
            for _ in stream:
                pass
        assert "Paris" in stream.text
        assert "<|im_start|>assistant\n" in real.worker_requests[-1].json["payload"]["inputs"]


def test_real_embeddings_and_rerank(real: Emulator) -> None:
    # SmolLM2's own hidden states, mean-pooled (no PyPI wheel ships a GGUF embedding model).
    docs = [
        "Paris is the capital of France.",
        "Bananas are a yellow fruit.",
        "The stock market fell sharply today.",
    ]
    with VastClient(
        real.endpoint, api_key=real.api_key, base_url=real.base_url, api="openai"
    ) as client:
        result = client.embed([*docs, "What is the capital of France?"], batch_size=2)
        assert result.dimensions == 576 and result.model == "SmolLM2-135M-Instruct"
        assert all(abs(sum(v * v for v in vector) - 1) < 1e-3 for vector in result.vectors)
        assert result.usage is not None and result.usage.prompt_tokens > 10
        ranked = client.rerank("capital of France", docs)
        assert sorted(ranked.indices) == [0, 1, 2]
        assert all(0 <= r.score <= 1 for r in ranked.results)
