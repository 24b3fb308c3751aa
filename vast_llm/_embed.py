"""Embeddings, rerank and score on the routing core: batching, splitting, checking answers.

The routes are the OpenAI-compatible worker's (vLLM's shapes, served by Vast's OpenAI worker
when ``OPENAI_ROUTES`` lists them): ``/v1/embeddings`` (``input`` → ``data[].embedding``),
``/v1/rerank`` (``query``, ``documents`` → ``results[].relevance_score``) and ``/v1/score``
(``text_1``, ``text_2`` → ``data[].score``).

- Inputs go in batches of ``embed_batch_size`` (a client setting; ``batch_size=`` per call),
  in order. The async client runs batches concurrently, at most ``concurrency`` at once (the
  client's ``max_concurrency`` by default), and hands them back in input order.
- A batch the worker refuses as too large (HTTP 413, or a 400/422/500 whose body says the
  input is too long or the batch too big) is halved and each half sent again; the refused
  request produced nothing, and no batch that was answered is ever sent twice. A single text
  still refused alone is a :class:`WorkerError` naming its index (vLLM truncates when the call
  passes ``truncate_prompt_tokens=-1``).
- Every answer is checked before it is handed out: as many vectors (or scores) as inputs, each
  index once and in range, numbers only, no NaN or infinity, one dimension for every vector of
  a call. Anything else is a :class:`WorkerError`: never a silently misaligned vector.
- Empty input (``[]``) makes no request and returns an empty result; empty strings are sent
  as they are (the model embeds them; OpenAI's own API refuses them). A ``str`` where a list
  is expected, and non-string items, are a ``TypeError`` before anything is sent.

The load estimate sent to ``/route/`` is what Vast's OpenAI worker counts for the request
(in its unit, one benchmark request = 500): characters against its reference size (600 for
embeddings; 16 documents of 250 characters and a 60-character query for rerank and score),
clamped between 0.1 and 8 reference requests. The ``cost`` setting overrides it.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import math
import re
import sys
from array import array
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ._config import PER_CALL
from ._errors import WorkerError, excerpt
from ._raw import Fetched, fetch_async, fetch_sync, raw_call
from ._types import RouteInfo, Usage

if TYPE_CHECKING:
    from ._client import AsyncVastClient, VastClient

__all__ = [
    "EMBEDDINGS_PATH",
    "RERANK_PATH",
    "SCORE_PATH",
    "EmbeddingBatch",
    "Embeddings",
    "Ranked",
    "Reranking",
    "Scores",
    "batches",
    "embed_async",
    "embed_sync",
    "iter_embed_async",
    "iter_embed_sync",
    "parse_embeddings",
    "parse_rerank",
    "parse_scores",
    "refused_as_too_large",
    "rerank_async",
    "rerank_sync",
    "route_workload",
    "score_async",
    "score_sync",
]

T = TypeVar("T")

EMBEDDINGS_PATH = "/v1/embeddings"
RERANK_PATH = "/v1/rerank"
SCORE_PATH = "/v1/score"
DEFAULT_ITER_CONCURRENCY = 4


# -- results --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Embeddings:
    """The vectors of a call, in input order.

    Attributes:
        vectors: one vector per input text.
        usage: token counts summed over the requests (None if no worker reported any).
        routes: the route facts of every worker request, in input order (one per batch, or
            more when a batch was halved).
        model: the model name the worker reported.
    """

    vectors: list[list[float]]
    usage: Usage | None
    routes: tuple[RouteInfo, ...]
    model: str | None = None

    @property
    def dimensions(self) -> int | None:
        """The length of every vector (None for an empty call)."""
        return len(self.vectors[0]) if self.vectors else None

    def __len__(self) -> int:
        return len(self.vectors)


@dataclass(frozen=True, slots=True)
class EmbeddingBatch:
    """One batch of an iterated call: the vectors of ``texts[start : start + len(vectors)]``."""

    start: int
    vectors: list[list[float]]
    usage: Usage | None
    routes: tuple[RouteInfo, ...]
    model: str | None = None


@dataclass(frozen=True, slots=True)
class Ranked:
    """One document of a reranking: its index in the input, its score, its text."""

    index: int
    score: float
    document: str


@dataclass(frozen=True, slots=True)
class Reranking:
    """Documents by relevance to the query, best first (at most ``top_n``)."""

    results: list[Ranked]
    usage: Usage | None
    routes: tuple[RouteInfo, ...]
    model: str | None = None

    @property
    def indices(self) -> list[int]:
        """The documents' input indices, best first."""
        return [r.index for r in self.results]


@dataclass(frozen=True, slots=True)
class Scores:
    """One relevance score per document, in input order (``/v1/score``)."""

    scores: list[float]
    usage: Usage | None
    routes: tuple[RouteInfo, ...]
    model: str | None = None


# -- cost: what Vast's OpenAI worker counts --------------------------------------------------

_REFERENCE_REQUEST = 500.0  # the worker's unit: one benchmark request
_EMBED_REFERENCE_CHARS = 600
_PAIRS_REFERENCE_CHARS = 16 * (60 + 250)
_CHARS_PER_TOKEN = 4


def _units(chars: float, reference: float) -> float:
    return _REFERENCE_REQUEST * min(max(chars / reference, 0.1), 8.0)


def _input_chars(value: Any) -> int:
    items = value if isinstance(value, (list, tuple)) else [value]
    chars = 0
    for item in items:
        if isinstance(item, str):
            chars += len(item)
        elif isinstance(item, (list, tuple)):
            chars += len(item) * _CHARS_PER_TOKEN
        elif isinstance(item, int):
            chars += _CHARS_PER_TOKEN
    return chars


def _pair_chars(queries: Any, documents: Any) -> int:
    docs = documents if isinstance(documents, list) else [documents]
    qs = queries if isinstance(queries, list) else [queries]
    pairs = [(qs[0], d) for d in docs] if len(qs) == 1 else list(zip(qs, docs, strict=False))

    def size(value: Any) -> int:
        return len(value) if isinstance(value, str) else 250

    return sum(size(q) + size(d) for q, d in pairs)


def route_workload(path: str, payload: Any) -> float | None:
    """The workload Vast's OpenAI worker counts for a request to ``path`` (None: a route it
    does not count this way)."""
    if not isinstance(payload, Mapping):
        return None
    if path == EMBEDDINGS_PATH:
        return _units(_input_chars(payload.get("input")), _EMBED_REFERENCE_CHARS)
    if path == RERANK_PATH:
        return _units(
            _pair_chars(payload.get("query"), payload.get("documents")), _PAIRS_REFERENCE_CHARS
        )
    if path == SCORE_PATH:
        first = next(
            (payload[k] for k in ("queries", "text_1", "data_1") if payload.get(k) is not None),
            None,
        )
        second = next(
            (
                payload[k]
                for k in ("documents", "items", "text_2", "data_2")
                if payload.get(k) is not None
            ),
            None,
        )
        return _units(_pair_chars(first, second), _PAIRS_REFERENCE_CHARS)
    return None


# -- inputs ---------------------------------------------------------------------------------


def _not_a_list(what: str) -> TypeError:
    return TypeError(f"{what} must be a list of strings, not one string (wrap it: [text])")


def _check_texts(texts: Sequence[Any], what: str) -> None:
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{what}[{index}] is a {type(text).__name__}, not a str")


def batches(
    texts: Iterable[Any], size: int, what: str = "texts"
) -> Iterator[tuple[int, list[str]]]:
    """``(start, texts)`` in batches of ``size``, read lazily (an iterator is consumed batch
    by batch); a non-string item is a ``TypeError`` naming its index."""
    if isinstance(texts, (str, bytes)):
        raise _not_a_list(what)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {size!r}")
    batch: list[str] = []
    start = 0
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{what}[{index}] is a {type(text).__name__}, not a str")
        batch.append(text)
        if len(batch) == size:
            yield start, batch
            start += size
            batch = []
    if batch:
        yield start, batch


# -- answers --------------------------------------------------------------------------------


class _NonFinite(ValueError):
    pass


def _no_constant(name: str) -> Any:
    # json.loads accepts NaN, Infinity and -Infinity; a vector or score must not hold them.
    raise _NonFinite(name)


def malformed(url: str, problem: str, content: bytes = b"") -> WorkerError:
    """The error for an answer that cannot be used as it is."""
    detail = f": {excerpt(content, limit=200)}" if content else ""
    error = WorkerError(
        f"worker {url} sent a malformed answer ({problem}); nothing of it was used{detail}",
        status_code=200,
        body=excerpt(content),
        worker_url=url,
    )
    error.content = content
    return error


def _load(content: bytes, url: str) -> dict[str, Any]:
    try:
        body = json.loads(content, parse_constant=_no_constant)
    except _NonFinite as exc:
        raise malformed(url, f"a {exc} where a number belongs") from None
    except ValueError:
        raise malformed(url, "not JSON", content) from None
    if not isinstance(body, dict):
        raise malformed(url, "not a JSON object", content)
    return body


def _usage(body: Mapping[str, Any]) -> Usage | None:
    usage = body.get("usage")
    if not isinstance(usage, Mapping):
        return None

    def count(name: str) -> int | None:
        value = usage.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    return Usage(count("prompt_tokens"), count("completion_tokens"), count("total_tokens"))


def _model(body: Mapping[str, Any]) -> str | None:
    model = body.get("model")
    return model if isinstance(model, str) else None


def _from_base64(text: str, url: str) -> list[float]:
    # OpenAI's base64 encoding: little-endian float32.
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raise malformed(url, "an embedding that is neither a list nor base64") from None
    if len(raw) % 4:
        raise malformed(url, "a base64 embedding whose length is not a whole number of floats")
    values = array("f", raw)
    if sys.byteorder == "big":  # pragma: no cover - x86 and ARM are little-endian
        values.byteswap()
    return values.tolist()


def _index(item: Mapping[str, Any], position: int, count: int, seen: list[Any], url: str) -> int:
    index = item.get("index", position)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
        raise malformed(url, f"index {index!r} out of range for {count} inputs")
    if seen[index] is not None:
        raise malformed(url, f"index {index} given twice")
    return index


def parse_embeddings(
    content: bytes, count: int, url: str
) -> tuple[list[list[float]], Usage | None, str | None]:
    """The vectors of an ``/v1/embeddings`` answer for ``count`` inputs, in input order."""
    body = _load(content, url)
    data = body.get("data")
    if not isinstance(data, list):
        raise malformed(url, "no 'data' list", content)
    if len(data) != count:
        raise malformed(url, f"{len(data)} vectors for {count} texts")
    vectors: list[Any] = [None] * count
    dimensions = -1
    for position, item in enumerate(data):
        if not isinstance(item, dict):
            raise malformed(url, f"data[{position}] is not an object")
        index = _index(item, position, count, vectors, url)
        vector = item.get("embedding")
        if isinstance(vector, str):
            vector = _from_base64(vector, url)
        elif not isinstance(vector, list):
            raise malformed(url, f"data[{position}].embedding is not a list of numbers")
        if len(vector) != dimensions:
            if dimensions >= 0 or not vector:
                raise malformed(
                    url,
                    f"mixed dimensions: {len(vector)} and {dimensions}"
                    if dimensions >= 0
                    else "an empty vector",
                )
            dimensions = len(vector)
        try:
            # One pass in C: non-numbers raise TypeError. NaN and infinities never parse
            # (_no_constant), so a non-finite sum means an overflow or a base64 NaN.
            total = sum(vector)
        except TypeError:
            raise malformed(
                url, f"data[{position}].embedding holds something not a number"
            ) from None
        if not math.isfinite(total) and not all(map(math.isfinite, vector)):
            raise malformed(url, f"data[{position}].embedding holds NaN or infinity")
        vectors[index] = vector
    return vectors, _usage(body), _model(body)


def _score(value: Any, url: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise malformed(url, f"{where} is {value!r}, not a finite number")
    return float(value)


def parse_rerank(
    content: bytes, count: int, url: str
) -> tuple[list[float], Usage | None, str | None]:
    """The scores of a ``/v1/rerank`` answer for ``count`` documents, in document order."""
    body = _load(content, url)
    results = body.get("results")
    if not isinstance(results, list):
        raise malformed(url, "no 'results' list", content)
    if len(results) != count:
        raise malformed(url, f"{len(results)} scores for {count} documents")
    scores: list[Any] = [None] * count
    for position, item in enumerate(results):
        if not isinstance(item, dict) or "index" not in item:
            raise malformed(url, f"results[{position}] has no index")
        index = _index(item, position, count, scores, url)
        scores[index] = _score(
            item.get("relevance_score"), url, f"results[{position}].relevance_score"
        )
    return scores, _usage(body), _model(body)


def parse_scores(
    content: bytes, count: int, url: str
) -> tuple[list[float], Usage | None, str | None]:
    """The scores of a ``/v1/score`` answer for ``count`` documents, in document order."""
    body = _load(content, url)
    data = body.get("data")
    if not isinstance(data, list):
        raise malformed(url, "no 'data' list", content)
    if len(data) != count:
        raise malformed(url, f"{len(data)} scores for {count} documents")
    scores: list[Any] = [None] * count
    for position, item in enumerate(data):
        if not isinstance(item, dict):
            raise malformed(url, f"data[{position}] is not an object")
        index = _index(item, position, count, scores, url)
        scores[index] = _score(item.get("score"), url, f"data[{position}].score")
    return scores, _usage(body), _model(body)


# -- refused as too large: halve --------------------------------------------------------------

_TOO_LARGE = re.compile(
    r"maximum context length|context length|too (?:long|large|many)|reduce the length"
    r"|exceed|maximum allowed|max_client_batch_size|batch size|must have less than \d+ tokens",
    re.IGNORECASE,
)


def refused_as_too_large(error: WorkerError) -> bool:
    """True when the worker refused a request for its size: 413, or a 400/422/500 saying so."""
    if error.status_code == 413:
        return True
    if error.status_code not in (400, 422, 500):
        return False
    text = error.content.decode("utf-8", "replace") if error.content else error.body
    return bool(_TOO_LARGE.search(text))


def _alone_too_large(error: WorkerError, index: int, what: str) -> WorkerError:
    alone = WorkerError(
        f"{what}[{index}] alone is more than the worker takes ({error.message}); shorten it, "
        "or pass truncate_prompt_tokens=-1 to have vLLM cut it to the model's length",
        status_code=error.status_code,
        body=error.body,
        worker_url=error.worker_url,
    )
    alone.content = error.content
    return alone


@dataclass(frozen=True, slots=True)
class _Job:
    """One kind of pooling call: its route, its request for a batch, its answer's parser."""

    path: str
    what: str
    build: Callable[[list[str]], dict[str, Any]]
    parse: Callable[[bytes, int, str], tuple[list[Any], Usage | None, str | None]]


@dataclass(frozen=True, slots=True)
class _Part:
    """One answered request: values for ``items`` from ``start``."""

    start: int
    values: list[Any]
    usage: Usage | None
    route: RouteInfo
    model: str | None


Send = Callable[[str, dict[str, Any]], Fetched]
ASend = Callable[[str, dict[str, Any]], Awaitable[Fetched]]


class _Fit:
    """The most inputs a worker took in one request, as learnt during a call: once a batch
    was refused as too large, later batches go in pieces of the size that was answered."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size

    def pieces(self, start: int, items: list[str]) -> list[tuple[int, list[str]]]:
        step = self.size
        return [(start + at, items[at : at + step]) for at in range(0, len(items), step)]

    def refused(self, count: int) -> int:
        half = (count + 1) // 2
        self.size = min(self.size, half)
        return half


def _run_sync(send: Send, job: _Job, start: int, items: list[str], fit: _Fit) -> list[_Part]:
    if len(items) > fit.size:
        return [
            part for s, i in fit.pieces(start, items) for part in _run_sync(send, job, s, i, fit)
        ]
    try:
        fetched = send(job.path, job.build(items))
    except WorkerError as exc:
        if not refused_as_too_large(exc):
            raise
        if len(items) == 1:
            raise _alone_too_large(exc, start, job.what) from exc
        half = fit.refused(len(items))
        return _run_sync(send, job, start, items[:half], fit) + _run_sync(
            send, job, start + half, items[half:], fit
        )
    values, usage, model = job.parse(fetched.content, len(items), fetched.route.worker_url)
    return [_Part(start, values, usage, fetched.route, model)]


async def _run_async(
    send: ASend, job: _Job, start: int, items: list[str], fit: _Fit
) -> list[_Part]:
    if len(items) > fit.size:
        parts: list[_Part] = []
        for s, i in fit.pieces(start, items):
            parts += await _run_async(send, job, s, i, fit)
        return parts
    try:
        fetched = await send(job.path, job.build(items))
    except WorkerError as exc:
        if not refused_as_too_large(exc):
            raise
        if len(items) == 1:
            raise _alone_too_large(exc, start, job.what) from exc
        half = fit.refused(len(items))
        first = await _run_async(send, job, start, items[:half], fit)
        return first + await _run_async(send, job, start + half, items[half:], fit)
    values, usage, model = job.parse(fetched.content, len(items), fetched.route.worker_url)
    return [_Part(start, values, usage, fetched.route, model)]


async def _ordered(
    limit: int, thunks: Iterable[Callable[[], Awaitable[T]]]
) -> AsyncGenerator[T, None]:
    """Run the thunks with at most ``limit`` at once; results in order. A failure cancels the
    rest (nothing is left running)."""
    pending: collections.deque[asyncio.Future[T]] = collections.deque()
    try:
        for thunk in thunks:
            pending.append(asyncio.ensure_future(thunk()))
            if len(pending) >= limit:
                yield await pending.popleft()
        while pending:
            yield await pending.popleft()
    finally:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


def _sum_usage(usages: Iterable[Usage | None]) -> Usage | None:
    known = [u for u in usages if u is not None]
    if not known:
        return None

    def total(name: str) -> int | None:
        values = [getattr(u, name) for u in known]
        return sum(values) if all(v is not None for v in values) else None

    return Usage(total("prompt_tokens"), total("completion_tokens"), total("total_tokens"))


# -- call parameters ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Params:
    overrides: dict[str, Any]  # per-call settings: timeout, deadline, max_retries, cost
    extra: dict[str, Any]  # sent to the model server with every batch
    batch_size: int


def _params(client: VastClient | AsyncVastClient, params: Mapping[str, Any]) -> _Params:
    extra = {k: v for k, v in params.items() if v is not None}
    overrides = {k: extra.pop(k) for k in list(extra) if k in PER_CALL}
    size = extra.pop("batch_size", None)
    if size is None:
        size = client.settings.embed_batch_size
    elif isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {size!r}")
    for reserved in ("input", "query", "documents", "text_1", "text_2"):
        if reserved in extra:
            raise TypeError(f"{reserved!r} is the call's input: pass it as the first arguments")
    return _Params(overrides, extra, size)


def _send_sync(client: VastClient, overrides: Mapping[str, Any]) -> Send:
    settings = client.settings

    def send(path: str, payload: dict[str, Any]) -> Fetched:
        return fetch_sync(client, raw_call(settings, path, payload, overrides=overrides))

    return send


def _send_async(client: AsyncVastClient, overrides: Mapping[str, Any]) -> ASend:
    settings = client.settings

    async def send(path: str, payload: dict[str, Any]) -> Fetched:
        return await fetch_async(client, raw_call(settings, path, payload, overrides=overrides))

    return send


def _concurrency(client: AsyncVastClient, value: int | None, default: int | None = None) -> int:
    if value is None:
        return default or client.settings.max_concurrency
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"concurrency must be an int >= 1, got {value!r}")
    return value


# -- embeddings -----------------------------------------------------------------------------


def _embeddings_job(extra: Mapping[str, Any]) -> _Job:
    def build(items: list[str]) -> dict[str, Any]:
        return {"input": items, **extra}

    return _Job(EMBEDDINGS_PATH, "texts", build, parse_embeddings)


class _Dimensions:
    """Every vector of one call has the same length (batches are answered separately)."""

    def __init__(self) -> None:
        self.value: int | None = None

    def check(self, part: _Part) -> None:
        if not part.values:
            return
        size = len(part.values[0])
        if self.value is None:
            self.value = size
        elif size != self.value:
            raise malformed(
                part.route.worker_url,
                f"mixed dimensions: texts from {part.start} have {size}, earlier ones "
                f"{self.value} (were the workers serving different models?)",
            )


def _batch(parts: list[_Part], dimensions: _Dimensions) -> EmbeddingBatch:
    vectors: list[list[float]] = []
    for part in parts:
        dimensions.check(part)
        vectors.extend(part.values)
    return EmbeddingBatch(
        parts[0].start,
        vectors,
        _sum_usage(p.usage for p in parts),
        tuple(p.route for p in parts),
        next((p.model for p in parts if p.model), None),
    )


def _whole(batches_: list[EmbeddingBatch]) -> Embeddings:
    vectors: list[list[float]] = []
    routes: list[RouteInfo] = []
    for batch in batches_:
        vectors.extend(batch.vectors)
        routes.extend(batch.routes)
    model = next((b.model for b in batches_ if b.model), None)
    return Embeddings(vectors, _sum_usage(b.usage for b in batches_), tuple(routes), model)


def iter_embed_sync(
    client: VastClient, texts: Iterable[str], params: Mapping[str, Any]
) -> Iterator[EmbeddingBatch]:
    """Embed ``texts`` batch by batch (memory: one batch at a time)."""
    p = _params(client, params)
    send, job, dimensions = _send_sync(client, p.overrides), _embeddings_job(p.extra), _Dimensions()
    fit = _Fit(p.batch_size)
    for start, items in batches(texts, p.batch_size):
        yield _batch(_run_sync(send, job, start, items, fit), dimensions)


def embed_sync(client: VastClient, texts: Sequence[str], params: Mapping[str, Any]) -> Embeddings:
    if isinstance(texts, (str, bytes)):
        raise _not_a_list("texts")
    texts = list(texts)
    _check_texts(texts, "texts")  # before any request: a bad item must not cost half a call
    return _whole(list(iter_embed_sync(client, texts, params)))


async def iter_embed_async(
    client: AsyncVastClient,
    texts: Iterable[str],
    params: Mapping[str, Any],
    concurrency: int | None = None,
) -> AsyncIterator[EmbeddingBatch]:
    """Embed ``texts`` with up to ``concurrency`` batches in flight (4 by default), yielding
    them in order (memory: ``concurrency`` batches)."""
    p = _params(client, params)
    send, job, dimensions = (
        _send_async(client, p.overrides),
        _embeddings_job(p.extra),
        _Dimensions(),
    )
    limit = _concurrency(client, concurrency, DEFAULT_ITER_CONCURRENCY)
    fit = _Fit(p.batch_size)
    thunks = (
        (lambda s=start, i=items: _run_async(send, job, s, i, fit))
        for start, items in batches(texts, p.batch_size)
    )
    results = _ordered(limit, thunks)
    try:
        async for parts in results:
            yield _batch(parts, dimensions)
    finally:
        await results.aclose()


async def embed_async(
    client: AsyncVastClient,
    texts: Sequence[str],
    params: Mapping[str, Any],
    concurrency: int | None = None,
) -> Embeddings:
    if isinstance(texts, (str, bytes)):
        raise _not_a_list("texts")
    texts = list(texts)
    _check_texts(texts, "texts")
    limit = _concurrency(client, concurrency)
    return _whole([b async for b in iter_embed_async(client, texts, params, limit)])


# -- rerank and score -----------------------------------------------------------------------


def _pairs_input(query: Any, documents: Any) -> list[str]:
    if not isinstance(query, str):
        raise TypeError(f"query must be a str, got {type(query).__name__}")
    if isinstance(documents, (str, bytes)):
        raise _not_a_list("documents")
    docs: list[str] = list(documents)
    _check_texts(docs, "documents")
    return docs


def _top_n(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"top_n must be an int >= 1 (or None for every document), got {value!r}")
    return value


def _rerank_job(query: str, extra: Mapping[str, Any]) -> _Job:
    # top_n is applied here, after every batch is scored: sent to the worker it would cut
    # each batch on its own (and halves of a refused batch).
    def build(items: list[str]) -> dict[str, Any]:
        return {"query": query, "documents": items, **extra}

    return _Job(RERANK_PATH, "documents", build, parse_rerank)


def _score_job(query: str, extra: Mapping[str, Any]) -> _Job:
    def build(items: list[str]) -> dict[str, Any]:
        return {"text_1": query, "text_2": items, **extra}

    return _Job(SCORE_PATH, "documents", build, parse_scores)


def _scores(
    parts: list[_Part],
) -> tuple[list[float], Usage | None, tuple[RouteInfo, ...], str | None]:
    scores: list[float] = []
    for part in parts:
        scores.extend(part.values)
    model = next((p.model for p in parts if p.model), None)
    return scores, _sum_usage(p.usage for p in parts), tuple(p.route for p in parts), model


def _ranking(documents: list[str], parts: list[_Part], top_n: int | None) -> Reranking:
    scores, usage, routes, model = _scores(parts)
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:top_n]
    return Reranking([Ranked(i, scores[i], documents[i]) for i in order], usage, routes, model)


def _drop_top_n(extra: dict[str, Any]) -> int | None:
    return _top_n(extra.pop("top_n", None))


def rerank_sync(
    client: VastClient, query: str, documents: Sequence[str], params: Mapping[str, Any]
) -> Reranking:
    docs = _pairs_input(query, documents)
    p = _params(client, params)
    top_n = _drop_top_n(p.extra)
    send, job, fit = (
        _send_sync(client, p.overrides),
        _rerank_job(query, p.extra),
        _Fit(p.batch_size),
    )
    parts = [
        part
        for s, i in batches(docs, p.batch_size, "documents")
        for part in _run_sync(send, job, s, i, fit)
    ]
    return _ranking(docs, parts, top_n)


def score_sync(
    client: VastClient, query: str, documents: Sequence[str], params: Mapping[str, Any]
) -> Scores:
    docs = _pairs_input(query, documents)
    p = _params(client, params)
    send, job, fit = _send_sync(client, p.overrides), _score_job(query, p.extra), _Fit(p.batch_size)
    parts = [
        part
        for s, i in batches(docs, p.batch_size, "documents")
        for part in _run_sync(send, job, s, i, fit)
    ]
    return Scores(*_scores(parts))


async def _pairs_async(
    client: AsyncVastClient, job: _Job, docs: list[str], p: _Params, concurrency: int | None
) -> list[_Part]:
    send, fit = _send_async(client, p.overrides), _Fit(p.batch_size)
    thunks = (
        (lambda s=start, i=items: _run_async(send, job, s, i, fit))
        for start, items in batches(docs, p.batch_size, "documents")
    )
    results = _ordered(_concurrency(client, concurrency), thunks)
    found: list[_Part] = []
    try:
        async for parts in results:
            found.extend(parts)
    finally:
        await results.aclose()  # a failure cancels the batches still in flight
    return found


async def rerank_async(
    client: AsyncVastClient,
    query: str,
    documents: Sequence[str],
    params: Mapping[str, Any],
    concurrency: int | None = None,
) -> Reranking:
    docs = _pairs_input(query, documents)
    p = _params(client, params)
    top_n = _drop_top_n(p.extra)
    parts = await _pairs_async(client, _rerank_job(query, p.extra), docs, p, concurrency)
    return _ranking(docs, parts, top_n)


async def score_async(
    client: AsyncVastClient,
    query: str,
    documents: Sequence[str],
    params: Mapping[str, Any],
    concurrency: int | None = None,
) -> Scores:
    docs = _pairs_input(query, documents)
    p = _params(client, params)
    parts = await _pairs_async(client, _score_job(query, p.extra), docs, p, concurrency)
    return Scores(*_scores(parts))
