"""The emulated OpenAI worker's pooling routes: ``/v1/embeddings``, ``/v1/rerank``, ``/v1/score``.

Request and answer shapes are vLLM's (what Vast's OpenAI worker passes through when
``OPENAI_ROUTES`` lists these routes); a worker without them answers 404, as a real one does.

The fake model's vectors are deterministic and mean something: a text's words are
case-folded, stripped of common suffixes ("verifies" → "verify", "signing" → "sign") and of
function words ("the", "is"...); each word is hashed (BLAKE2b) to two of ``dimensions``
coordinates, each with a sign, counted there, and the vector is normalised to length 1. Texts that
share words share coordinates, so their cosine similarity is high; texts with no word in common
are near 0 (hash collisions aside). A text with no content word is the first unit vector.
Rerank and score use those words too: the share of the query's words a document contains
(0.75 of the score) plus their cosine similarity (0.25), in [0, 1].

With ``model="smollm2"`` the vectors come from the real SmolLM2-135M through llama-cpp-python
(``Llama(embedding=True)``, mean pooling, normalised): the chat model's own hidden states, not
a trained embedding model (no PyPI wheel ships a GGUF embedding model that we found), so they
retrieve worse than a real embedding model would; rerank scores are their cosine similarity.

Limits, as real servers have them: a text longer than ``max_tokens`` is refused with vLLM's
400 ("maximum context length"), unless the request asks for truncation
(``truncate_prompt_tokens``); more than ``max_batch`` inputs in one request is refused with 413,
as Text Embeddings Inference does (vLLM itself has no such limit; None: none here either).

The worker's checks and status faults (``worker_500``, ``worker_429``...) apply to these routes
as to any; scripts play generation turns only, so a pooling request never uses a turn.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import math
import os
import re
import secrets
import sys
import threading
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._models import count_tokens, smollm2_path

__all__ = [
    "POOLING_KINDS",
    "POOLING_ROUTES",
    "Embedder",
    "FakeEmbedder",
    "Pooling",
    "SmolLM2Embedder",
    "fake_embedding",
    "pooling_answer",
]

POOLING_ROUTES = (
    ("/v1/embeddings", "embeddings"),
    ("/v1/rerank", "rerank"),
    ("/v1/score", "score"),
)
POOLING_KINDS = frozenset(kind for _, kind in POOLING_ROUTES)

_WORD = re.compile(r"\w+")
_FUNCTION_WORDS = frozenset(
    "a an and are as at be but by can did do does for from had has have how i if in into is it its "
    "of on or so than that the their them then there these they this to was we were what when "
    "where which who why will with you your".split()
)


_SUFFIXES = (("ies", "y"), ("ied", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", ""))


def _stem(word: str) -> str:
    word = word.casefold()
    for suffix, replacement in _SUFFIXES:
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)] + replacement
    return word


def content_words(text: str) -> list[str]:
    """The words the fake model reads: stemmed, case-folded, function words left out."""
    return [_stem(w) for w in _WORD.findall(text) if w.casefold() not in _FUNCTION_WORDS]


def fake_embedding(text: str, dimensions: int = 128) -> list[float]:
    """The fake model's vector for ``text`` (see the module's docstring)."""
    vector = [0.0] * dimensions
    for word in content_words(text):
        # Two coordinates per word: a collision between two words then rarely cancels both.
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        for at in (0, 4):
            slot = int.from_bytes(digest[at : at + 3], "big") % dimensions
            vector[slot] += 1.0 if digest[at + 3] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0.0:
        vector[0] = 1.0
        return vector
    # Six decimals: float32 precision, as models answer, and a third of the JSON.
    return [round(v / norm, 6) for v in vector]


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


class Embedder:
    """A model behind the pooling routes."""

    name = "embedder"
    dimensions = 0
    inline = False  # quick enough to run in the event loop; otherwise it runs in a thread

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        raise NotImplementedError

    def tokens(self, text: str) -> int:
        return count_tokens(text)

    def truncate(self, text: str, limit: int) -> str:
        """``text`` cut to ``limit`` tokens (vLLM's ``truncate_prompt_tokens``)."""
        words = text.split()
        while words and count_tokens(" ".join(words)) > limit:
            words.pop()
        return " ".join(words)

    def relevance(self, query: str, documents: Sequence[str]) -> list[float]:
        vectors = self.embed([query, *documents])
        return [max(0.0, round(_cosine(vectors[0], v), 6)) for v in vectors[1:]]

    def close(self) -> None:
        """Release the model."""


class FakeEmbedder(Embedder):
    """Hashed bag of words (deterministic, microseconds per text)."""

    name = "fake-embedding"
    inline = True

    def __init__(self, dimensions: int = 128) -> None:
        self.dimensions = dimensions

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [fake_embedding(t, self.dimensions) for t in texts]

    def relevance(self, query: str, documents: Sequence[str]) -> list[float]:
        wanted = set(content_words(query))
        base = fake_embedding(query, self.dimensions)
        scores = []
        for document in documents:
            found = set(content_words(document))
            share = len(wanted & found) / len(wanted) if wanted else 0.0
            cosine = max(0.0, _cosine(base, fake_embedding(document, self.dimensions)))
            scores.append(round(0.75 * share + 0.25 * cosine, 6))
        return scores


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class SmolLM2Embedder(Embedder):
    """SmolLM2-135M's own hidden states, mean-pooled and normalised (llama-cpp-python).

    Loaded on first use (a second ``Llama`` instance, built with ``embedding=True``: the
    generating one cannot pool); one thread embeds at a time.
    """

    name = "SmolLM2-135M-Instruct"
    context = 512

    def __init__(self, model_path: str | None = None) -> None:
        path = model_path or smollm2_path()
        if path is None:
            raise RuntimeError("the SmolLM2 model is not installed: run `make model`")
        self._path = path
        self._llm: Any = None
        self._lock = threading.Lock()
        self.dimensions = 576

    def _model(self) -> Any:
        if self._llm is None:
            import llama_cpp

            with (
                _quiet_stderr()
            ):  # llama.cpp notes the pooling choice on fd 2 whatever verbose says
                self._llm = llama_cpp.Llama(
                    model_path=self._path,
                    embedding=True,
                    n_ctx=self.context,
                    n_batch=self.context,
                    n_ubatch=self.context,
                    pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                    n_threads=1,
                    verbose=False,
                )
            self.dimensions = int(self._llm.n_embd())
        return self._llm

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        with self._lock:
            model = self._model()
            return [[round(v, 6) for v in model.embed(t, normalize=True)] for t in texts]

    def tokens(self, text: str) -> int:
        with self._lock:
            return len(self._model().tokenize(text.encode(), add_bos=True))

    def close(self) -> None:
        with self._lock:
            if self._llm is not None:
                self._llm.close()
                self._llm = None


@dataclass
class Pooling:
    """What a worker's pooling routes run on, and their limits.

    ``tamper``, if set, gets ``(kind, answer)`` and returns the answer to send: a test seam for
    malformed answers (a vector too few, NaN, an index out of range).
    """

    embedder: Embedder
    max_tokens: int = 512
    max_batch: int | None = None
    tamper: Callable[[str, dict[str, Any]], dict[str, Any]] | None = field(default=None, repr=False)


def _error(status: int, message: str) -> tuple[int, dict[str, Any]]:
    # vLLM's error body (an ErrorResponse).
    kinds = {400: "BadRequestError", 404: "NotFoundError", 413: "RequestEntityTooLarge"}
    return status, {
        "object": "error",
        "message": message,
        "type": kinds.get(status, "Error"),
        "param": None,
        "code": status,
    }


def _usage(tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": tokens,
        "total_tokens": tokens,
        "completion_tokens": 0,
        "prompt_tokens_details": None,
    }


def _texts(value: Any, name: str) -> list[str] | str:
    """A list of strings from a request field, or the problem with it."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return [" ".join(f"t{v}" for v in value)]  # token ids: one input
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        return [" ".join(f"t{v}" for v in item) for item in value]
    if isinstance(value, list) and not value:
        return f"{name} must not be empty"
    return f"{name} must be a string or a list of strings"


def _fit(
    pooling: Pooling, texts: list[str], truncate: Any, what: str
) -> list[str] | tuple[int, dict[str, Any]]:
    """The texts within the model's length (cut if asked), or vLLM's 400 for the first that
    is too long."""
    limit = pooling.max_tokens
    if isinstance(truncate, int) and not isinstance(truncate, bool) and truncate != 0:
        cut = limit if truncate < 0 else min(truncate, limit)
        return [
            pooling.embedder.truncate(t, cut) if pooling.embedder.tokens(t) > cut else t
            for t in texts
        ]
    for text in texts:
        tokens = pooling.embedder.tokens(text)
        if tokens > limit:
            return _error(
                400,
                f"This model's maximum context length is {limit} tokens. However, "
                f"you requested {tokens} tokens in the input for {what}. Please "
                "reduce the length of the input.",
            )
    return texts


def _batch_limit(pooling: Pooling, count: int) -> tuple[int, dict[str, Any]] | None:
    if pooling.max_batch is not None and count > pooling.max_batch:
        return 413, {
            "error": f"batch size {count} > maximum allowed batch size {pooling.max_batch}",
            "error_type": "Validation",
        }
    return None


def _embeddings(
    pooling: Pooling, payload: dict[str, Any], model: str
) -> tuple[int, dict[str, Any]]:
    texts = _texts(payload.get("input"), "input")
    if isinstance(texts, str):
        return _error(400, texts)
    refused = _batch_limit(pooling, len(texts))
    if refused is not None:
        return refused
    fitted = _fit(pooling, texts, payload.get("truncate_prompt_tokens"), "embedding generation")
    if isinstance(fitted, tuple):
        return fitted
    vectors = pooling.embedder.embed(fitted)
    dimensions = payload.get("dimensions")
    if dimensions is not None:
        size = len(vectors[0]) if vectors else 0
        if (
            isinstance(dimensions, bool)
            or not isinstance(dimensions, int)
            or not 0 < dimensions <= size
        ):
            return _error(400, f"dimensions must be between 1 and {size}, got {dimensions!r}")
        vectors = [_renormed(v[:dimensions]) for v in vectors]
    base64_out = payload.get("encoding_format") == "base64"
    data = [
        {"index": i, "object": "embedding", "embedding": _base64(v) if base64_out else v}
        for i, v in enumerate(vectors)
    ]
    tokens = sum(pooling.embedder.tokens(t) for t in fitted)
    return 200, {
        "id": f"embd-{secrets.token_hex(8)}",
        "object": "list",
        "created": int(time.time()),
        "model": model,
        "data": data,
        "usage": _usage(tokens),
    }


def _renormed(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [round(v / norm, 6) for v in vector]


def _base64(vector: list[float]) -> str:
    return base64.b64encode(array("f", vector).tobytes()).decode()


def _rerank(pooling: Pooling, payload: dict[str, Any], model: str) -> tuple[int, dict[str, Any]]:
    query = payload.get("query")
    if not isinstance(query, str):
        return _error(400, "query must be a string")
    documents = _texts(payload.get("documents"), "documents")
    if isinstance(documents, str):
        return _error(400, documents)
    refused = _batch_limit(pooling, len(documents))
    if refused is not None:
        return refused
    fitted = _fit(
        pooling,
        [query + " " + d for d in documents],
        payload.get("truncate_prompt_tokens"),
        "scoring",
    )
    if isinstance(fitted, tuple):
        return fitted
    scores = pooling.embedder.relevance(query, documents)
    order = sorted(range(len(documents)), key=lambda i: -scores[i])
    top_n = payload.get("top_n") or 0
    if isinstance(top_n, int) and not isinstance(top_n, bool) and top_n > 0:
        order = order[:top_n]
    results = [
        {"index": i, "document": {"text": documents[i]}, "relevance_score": scores[i]}
        for i in order
    ]
    tokens = sum(pooling.embedder.tokens(t) for t in fitted)
    return 200, {
        "id": f"rerank-{secrets.token_hex(8)}",
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        "results": results,
    }


def _first(payload: dict[str, Any], *names: str) -> Any:
    return next((payload[n] for n in names if payload.get(n) is not None), None)


def _score(pooling: Pooling, payload: dict[str, Any], model: str) -> tuple[int, dict[str, Any]]:
    first = _texts(_first(payload, "queries", "text_1", "data_1"), "text_1")
    second = _texts(_first(payload, "documents", "items", "text_2", "data_2"), "text_2")
    for texts in (first, second):
        if isinstance(texts, str):
            return _error(400, texts)
    assert isinstance(first, list)
    assert isinstance(second, list)
    if len(first) != 1 and len(first) != len(second):
        return _error(400, "text_1 must be one text, or as many as text_2")
    refused = _batch_limit(pooling, len(second))
    if refused is not None:
        return refused
    pairs = [(first[0] if len(first) == 1 else first[i], d) for i, d in enumerate(second)]
    fitted = _fit(
        pooling, [q + " " + d for q, d in pairs], payload.get("truncate_prompt_tokens"), "scoring"
    )
    if isinstance(fitted, tuple):
        return fitted
    scores = [pooling.embedder.relevance(q, [d])[0] for q, d in pairs]
    data = [{"index": i, "object": "score", "score": s} for i, s in enumerate(scores)]
    tokens = sum(pooling.embedder.tokens(t) for t in fitted)
    return 200, {
        "id": f"score-{secrets.token_hex(8)}",
        "object": "list",
        "created": int(time.time()),
        "model": model,
        "data": data,
        "usage": _usage(tokens),
    }


_KINDS = {"embeddings": _embeddings, "rerank": _rerank, "score": _score}


def _answer(pooling: Pooling, kind: str, payload: Any) -> tuple[int, dict[str, Any]]:
    if not isinstance(payload, dict):
        return _error(400, "the request must be a JSON object")
    model = payload.get("model") or pooling.embedder.name
    status, body = _KINDS[kind](pooling, payload, str(model))
    if status == 200 and pooling.tamper is not None:
        body = pooling.tamper(kind, body)
    return status, body


async def pooling_answer(pooling: Pooling, kind: str, payload: Any) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) for a pooling request; a real model runs in a thread."""
    if pooling.embedder.inline:
        return _answer(pooling, kind, payload)
    return await asyncio.to_thread(_answer, pooling, kind, payload)
