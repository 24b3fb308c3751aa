"""The pure parts of embeddings, rerank and score: answers checked, batches, sizes, costs."""

from __future__ import annotations

import base64
import json
from array import array
from typing import Any

import pytest

from vast_llm import ConfigError, WorkerError
from vast_llm._config import resolve_settings
from vast_llm._embed import (
    batches,
    parse_embeddings,
    parse_rerank,
    parse_scores,
    refused_as_too_large,
    route_workload,
)
from vast_llm._raw import raw_call

URL = "http://worker"


def answer(vectors: list[Any], **extra: Any) -> bytes:
    data = [{"index": i, "object": "embedding", "embedding": v} for i, v in enumerate(vectors)]
    return json.dumps({"object": "list", "data": data, "model": "m", **extra}).encode()


def test_vectors_come_back_in_input_order_whatever_the_answer_order() -> None:
    body = {
        "data": [{"index": 1, "embedding": [0.0, 1.0]}, {"index": 0, "embedding": [1.0, 0.0]}],
        "usage": {"prompt_tokens": 3, "total_tokens": 3},
        "model": "m",
    }
    vectors, usage, model = parse_embeddings(json.dumps(body).encode(), 2, URL)
    assert vectors == [[1.0, 0.0], [0.0, 1.0]]
    assert usage is not None and usage.prompt_tokens == 3 and model == "m"


def test_base64_vectors_are_decoded() -> None:
    raw = base64.b64encode(array("f", [0.5, -0.25]).tobytes()).decode()
    vectors, _, _ = parse_embeddings(answer([raw]), 1, URL)
    assert vectors == [[0.5, -0.25]]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (answer([[1.0], [2.0]]), "2 vectors for 3 texts"),
        (answer([[1.0], ["x"], [2.0]]), "not a number"),
        (answer([[1.0], [None], [2.0]]), "not a number"),
        (answer([[1.0], [[1.0]], [2.0]]), "not a number"),
        (answer([[1.0], [1.0, 2.0], [2.0]]), "mixed dimensions"),
        (answer([[], [], []]), "empty vector"),
        (
            b'{"data": [{"index": 0, "embedding": [NaN]}, {"index": 1, "embedding": [1]}, '
            b'{"index": 2, "embedding": [1]}]}',
            "NaN",
        ),
        (b'{"data": [{"index": 0, "embedding": [Infinity]}]}', "Infinity"),
        (
            b'{"data": [{"index": 0, "embedding": [1]}, {"index": 0, "embedding": [1]}, '
            b'{"index": 1, "embedding": [1]}]}',
            "index 0 given twice",
        ),
        (
            b'{"data": [{"index": 5, "embedding": [1]}, {"index": 0, "embedding": [1]}, '
            b'{"index": 1, "embedding": [1]}]}',
            "index 5 out of range",
        ),
        (b"<html>oops</html>", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"object": "error"}', "no 'data' list"),
    ],
)
def test_a_malformed_embeddings_answer_is_a_worker_error(content: bytes, problem: str) -> None:
    count = 1 if b"Infinity" in content else 3
    with pytest.raises(WorkerError, match="malformed answer") as caught:
        parse_embeddings(content, count, URL)
    assert problem in str(caught.value)
    assert caught.value.worker_url == URL


def test_a_base64_nan_is_caught() -> None:
    raw = base64.b64encode(array("f", [float("nan")]).tobytes()).decode()
    with pytest.raises(WorkerError, match="NaN or infinity"):
        parse_embeddings(answer([raw]), 1, URL)


def rerank_answer(pairs: list[tuple[Any, Any]]) -> bytes:
    results = [{"index": i, "relevance_score": s} for i, s in pairs]
    return json.dumps({"results": results, "usage": {"total_tokens": 7}}).encode()


def test_rerank_scores_land_on_their_documents() -> None:
    scores, usage, _ = parse_rerank(rerank_answer([(2, 0.9), (0, 0.5), (1, 0.1)]), 3, URL)
    assert scores == [0.5, 0.1, 0.9]
    assert usage is not None and usage.total_tokens == 7


@pytest.mark.parametrize(
    ("pairs", "problem"),
    [
        ([(0, 0.5), (3, 0.1)], "index 3 out of range"),
        ([(0, 0.5), (-1, 0.1)], "index -1 out of range"),
        ([(0, 0.5), (0, 0.1)], "given twice"),
        ([(0, 0.5)], "1 scores for 2 documents"),
        ([(0, "high"), (1, 0.1)], "not a finite number"),
        ([(0, True), (1, 0.1)], "not a finite number"),
        ([(0, None), (1, 0.1)], "not a finite number"),
    ],
)
def test_a_malformed_rerank_answer_is_a_worker_error(pairs: list[Any], problem: str) -> None:
    with pytest.raises(WorkerError, match=problem):
        parse_rerank(rerank_answer(pairs), 2, URL)


def test_score_answers_are_checked_too() -> None:
    good = json.dumps({"data": [{"index": 0, "score": 0.25}, {"index": 1, "score": 1}]}).encode()
    assert parse_scores(good, 2, URL)[0] == [0.25, 1.0]
    with pytest.raises(WorkerError, match="1 scores for 2 documents"):
        parse_scores(json.dumps({"data": [{"index": 0, "score": 1}]}).encode(), 2, URL)


def error(status: int, body: str) -> WorkerError:
    exc = WorkerError(f"HTTP {status}", status_code=status, body=body)
    exc.content = body.encode()
    return exc


@pytest.mark.parametrize(
    ("status", "body", "too_large"),
    [
        (413, "", True),
        (
            400,
            "This model's maximum context length is 512 tokens. However, you requested 900 "
            "tokens in the input for embedding generation. Please reduce the length of the "
            "input.",
            True,
        ),
        (422, "Input validation error: `inputs` must have less than 512 tokens", True),
        (500, "input is too large to process. increase the physical batch size", True),
        (400, "model 'x' does not exist", False),
        (404, "too long", False),
        (401, "", False),
    ],
)
def test_which_refusals_mean_too_large(status: int, body: str, too_large: bool) -> None:
    assert refused_as_too_large(error(status, body)) is too_large


def test_batches_read_the_input_lazily_and_check_every_item() -> None:
    taken: list[int] = []

    def texts() -> Any:
        for i in range(7):
            taken.append(i)
            yield f"t{i}"

    chunks = batches(texts(), 3)
    start, first = next(chunks)
    assert (start, first, len(taken)) == (0, ["t0", "t1", "t2"], 3)
    assert [s for s, _ in chunks] == [3, 6]
    with pytest.raises(TypeError, match=r"texts\[1\] is a int"):
        list(batches(["a", 1], 5))
    with pytest.raises(TypeError, match="not one string"):
        list(batches("a text", 5))
    with pytest.raises(ValueError, match="batch_size"):
        list(batches(["a"], 0))


def test_the_cost_is_what_vasts_openai_worker_counts() -> None:
    assert route_workload("/v1/embeddings", {"input": ["x" * 600]}) == 500.0
    assert route_workload("/v1/embeddings", {"input": "hi"}) == 50.0  # at least 0.1 of one
    assert route_workload("/v1/embeddings", {"input": ["x" * 10_000]}) == 4000.0  # at most 8
    assert route_workload("/v1/embeddings", {"input": [[1, 2, 3] * 50]}) == 500.0  # 4 per token
    assert route_workload("/v1/rerank", {"query": "q" * 60, "documents": ["d" * 250] * 16}) == 500
    assert route_workload("/v1/score", {"text_1": "q" * 60, "text_2": ["d" * 250] * 16}) == 500
    assert route_workload("/v1/chat/completions", {"max_tokens": 5}) is None


def test_a_requests_cost_and_path() -> None:
    settings = resolve_settings("ep", api_key="k")
    assert raw_call(settings, "/v1/embeddings", {"input": "x" * 1200}).cost == 1000.0
    assert raw_call(settings, "/v1/completions", {"max_tokens": 7}).cost == 7.0
    assert raw_call(settings, "/generate/sync", {"workflow": {}}).cost == 256.0
    assert raw_call(settings, "/x", {}, overrides={"cost": 3}).cost == 3.0
    assert raw_call(settings, "/x", {"n": 4}, overrides={"cost": lambda p: p["n"]}).cost == 4.0
    for bad in ("v1/embeddings", "//evil.example/x", "@evil.example/x", "/a b", "/x#y", 7):
        with pytest.raises(ConfigError, match="path"):
            raw_call(settings, bad, {})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown per-call setting"):
        raw_call(settings, "/x", {}, overrides={"base_url": "http://elsewhere"})
