"""The demo's steps and its transcript (see the package's docstring).

Everything shown about what the client is doing before an answer starts (waiting for a cold
worker, the worker states the router reports, a retry on a fresh route) comes from the core's
:class:`vast_llm.Progress` events, heard through :func:`vast_llm.observe`; the frameworks' own
views of the same events (LangChain ``vast_progress`` custom events, LlamaIndex
``VastProgressEvent``) are counted beside them.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import json
import math
import os
import re
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from vast_llm import (
    Backoff,
    Progress,
    RouteInfo,
    SignatureError,
    VastClient,
    VastError,
    observe,
    ssl_context,
)

__all__ = ["run"]

QUESTION = "What is the capital of France?"
RAG_QUESTION = "How does vast-llm know that a worker address is genuine?"
REASONING_QUESTION = "Is 91 a prime number?"
SYSTEM = "You are a helpful assistant. Answer in one short sentence."
IMPOSTOR = "http://203.0.113.66:8080"  # TEST-NET-3: an address nobody should ever be sent to
# The emulator's cold start: a woken worker is "Starting", then "Model Loading", then ready.
ACTIVATION_DELAY = 2.0
# What the emulator's OpenAI endpoint thinks and answers for REASONING_QUESTION (a scripted
# turn: SmolLM2-135M does not reason, and the fake model's own thoughts are random words).
THOUGHT = (
    "91 is odd, so 2 does not divide it. Its digits add up to 10, so 3 does not either, and it "
    "does not end in 0 or 5. 7 times 13 is 91, so 91 has divisors other than 1 and itself."
)
ANSWER = "No: 91 = 7 × 13, so it is not prime."


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

    def wrapped(self, label: str, text: str) -> None:
        lines = textwrap.wrap(
            text, width=96, initial_indent=label, subsequent_indent=" " * len(label)
        )
        for line in lines:
            self.dim(line)

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
            f"worker {facts['worker_url']}",
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


class _Progress:
    """Prints what a request is doing before its answer starts, from its Progress events: one
    line per worker state the router reports while no worker is ready, and one per retry."""

    def __init__(self, out: _Out) -> None:
        self.out = out
        self.events: list[Progress] = []
        self._statuses: set[str] = set()

    def __call__(self, event: Progress) -> None:
        self.events.append(event)
        at = f"[{event.elapsed:4.1f}s]"
        if event.kind == "waiting":
            status = str(event.status)
            if status not in self._statuses:
                self._statuses.add(status)
                self.out.dim(f"… {at} waiting for a worker of {event.endpoint!r}: {status}")
        elif event.kind == "retrying":
            self.out.dim(
                f"… {at} attempt {event.attempt} failed ({event.error}); a fresh "
                f"route in {event.retry_in or 0:.2f}s"
            )

    def kinds(self, kind: str) -> list[Progress]:
        return [e for e in self.events if e.kind == kind]


@contextlib.contextmanager
def _show_progress(out: _Out) -> Iterator[_Progress]:
    listener = _Progress(out)
    with observe(listener):
        yield listener


# -- a network in the middle, for steps 4 and 5 (works against the emulator and Vast.ai) -------


def _transport(worker_ca: str | None) -> httpx.HTTPTransport:
    # One HTTP client for the router and the workers: the usual roots plus the worker CA (Vast's
    # root by default), as the README tells users who bring their own httpx.Client.
    return httpx.HTTPTransport(verify=ssl_context(worker_ca))


class _Tamperer(httpx.BaseTransport):
    """A proxy that rewrites the worker address in /route/ answers, and notes every host the
    client asks it to reach."""

    def __init__(self, worker_ca: str | None) -> None:
        self.inner = _transport(worker_ca)
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

    def __init__(self, worker_ca: str | None) -> None:
        self.inner = _transport(worker_ca)
        self.refused: str | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.refused is None and not request.url.path.endswith(("/route/", "/pubkey/")):
            self.refused = str(request.url.copy_with(path="/"))
            raise httpx.ConnectError("connection refused (simulated dead worker)", request=request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


# -- retrieval for the LlamaIndex step when an endpoint serves no embeddings ------------------


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

    folder = importlib.resources.files("vast_llm_demo") / "docs"
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
    chat_endpoint: str  # the LangChain steps'
    chat_api: Any  # "tgi" or "openai"
    rag_endpoint: str  # the LlamaIndex step's answers, and the reasoning step's
    rag_api: Any
    embed_endpoint: str = ""  # the LlamaIndex step's embeddings and rerank (rag_endpoint if "")
    local: Any = None  # the emulator, when local
    model: str = ""  # the emulator's model, when local
    backoff: Backoff | None = None
    worker_ca: str | None = None

    def client_kwargs(self) -> dict[str, Any]:
        given = {
            "api_key": self.api_key,
            "base_url": self.base_url,
            "backoff": self.backoff,
            "worker_ca": self.worker_ca,
        }
        return {k: v for k, v in given.items() if v is not None}


def _langchain_step(out: _Out, target: _Target) -> None:
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.prompts import ChatPromptTemplate

    from langchain_vast import ChatVast

    class CustomEvents(BaseCallbackHandler):
        def __init__(self) -> None:
            self.names: list[str] = []

        def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
            self.names.append(name)

    out.step(
        1, f"LangChain: a chain streams its answer token by token  [ChatVast, {target.chat_api}]"
    )
    if target.local is not None:
        out.line(
            'The endpoint has scaled to zero: its workers are "Stopped" (cold) until a '
            "request wakes one."
        )
    llm = ChatVast(
        endpoint=target.chat_endpoint,
        api=target.chat_api,
        max_tokens=48,
        temperature=0,
        **target.client_kwargs(),
    )
    chain = ChatPromptTemplate.from_messages([("system", SYSTEM), ("human", "{question}")]) | llm
    out.line(f"Q: {QUESTION}")
    started = time.monotonic()
    last: Any = None
    custom = CustomEvents()
    with _show_progress(out) as progress:
        first = True
        for chunk in chain.stream({"question": QUESTION}, config={"callbacks": [custom]}):
            if first and chunk.content:
                out.stream("A: ")
                first = False
            out.token(str(chunk.content))
            last = chunk
    out.end_stream()
    elapsed = time.monotonic() - started
    usage = last.usage_metadata if last is not None else None
    out.facts(
        last.response_metadata.get("vast") if last is not None else None,
        usage["output_tokens"] if usage else None,
        elapsed,
    )
    waits, routed = progress.kinds("waiting"), progress.kinds("routed")
    if waits and routed:
        out.ok(
            f"a cold worker woke and took the request after {routed[0].elapsed:.1f} s "
            f"({len(waits)} polls)"
        )
    out.dim(
        f"the same {len(progress.events)} progress events reached LangChain's callbacks as "
        f"{len(custom.names)} '{custom.names[0] if custom.names else 'vast_progress'}' "
        "custom events of the ChatVast run"
    )


def _reasoning_step(out: _Out, target: _Target) -> None:
    from langchain_vast import ChatVast

    out.step(
        2,
        f"Reasoning: the model's thinking arrives apart from its answer  [ChatVast, "
        f"{target.rag_api}]",
    )
    llm = ChatVast(
        endpoint=target.rag_endpoint,
        api=target.rag_api,
        max_tokens=160,
        temperature=0,
        **target.client_kwargs(),
    )
    out.line(f"Q: {REASONING_QUESTION}")
    started = time.monotonic()
    with _show_progress(out):
        message = llm.invoke([("human", REASONING_QUESTION)])
    elapsed = time.monotonic() - started
    reasoning = message.additional_kwargs.get("reasoning_content")
    if reasoning:
        out.dim('thinking, in additional_kwargs["reasoning_content"]:')
        out.wrapped("  ", str(reasoning))
    else:
        out.dim(
            "(no reasoning in this answer: the model does not think, or its server runs "
            "without a reasoning parser)"
        )
    out.line(f"A: {message.content}")
    # A whole answer: its "first token" is the whole answer's arrival, so no rate is shown.
    out.facts(message.response_metadata.get("vast"), None, elapsed)
    if target.local is not None:
        model = (
            "SmolLM2-135M does not reason"
            if target.model == "smollm2"
            else ("the fake model's own thoughts are random words")
        )
        out.dim(
            f"What produced it: a scripted turn of the emulator ({model}), sent the way "
            "vLLM's reasoning parser sends a Qwen3 model's thinking: `reasoning_content` "
            "beside `content`."
        )


def _index(out: _Out, target: _Target) -> tuple[Any, Any, Any]:
    """The index of the documents, embedded through Vast (VastEmbedding), and a VastRerank;
    the offline lexical embedding and no reranker when the RAG endpoint does not serve
    ``/v1/embeddings``."""
    from llama_index.core import VectorStoreIndex

    from llamaindex_vast import VastEmbedding, VastRerank

    kwargs = target.client_kwargs()
    endpoint = target.embed_endpoint or target.rag_endpoint
    embed_model = VastEmbedding(endpoint, **kwargs)
    try:
        index = VectorStoreIndex.from_documents(_documents(), embed_model=embed_model)
    except VastError as exc:
        if getattr(exc, "status_code", None) != 404:
            raise
        out.line(
            f"!! endpoint {endpoint!r} does not serve /v1/embeddings (add it to OPENAI_ROUTES):"
        )
        out.line("!! retrieval runs on local lexical embeddings, without a reranker")
        lexical = _lexical_embedding_class()
        return VectorStoreIndex.from_documents(_documents(), embed_model=lexical), lexical, None
    for route in embed_model.last_routes:
        out.facts(route, None, 0.0, label=f"embed {len(_documents())} documents")
    return index, embed_model, VastRerank(endpoint, top_n=2, **kwargs)


def _llamaindex_step(out: _Out, target: _Target) -> None:
    from llama_index.core.base.response.schema import StreamingResponse
    from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler

    from llamaindex_vast import Vast, VastProgressEvent

    out.step(
        3,
        f"LlamaIndex: RAG over {len(_documents())} project documents: embedded, "
        f"retrieved, reranked and answered through Vast  [VastEmbedding, VastRerank, "
        f"Vast, {target.rag_api}]",
    )
    llm = Vast(
        target.rag_endpoint,
        api=target.rag_api,
        max_new_tokens=64,
        temperature=0,
        repetition_penalty=1.3,
        **target.client_kwargs(),
    )

    class Watch(BaseEventHandler):
        raw: Any = None
        progress: int = 0

        @classmethod
        def class_name(cls) -> str:
            return "Watch"

        def handle(self, event: Any, **kwargs: Any) -> None:
            if isinstance(event, VastProgressEvent):
                self.progress += 1
            response = getattr(event, "response", None)
            if response is not None and getattr(response, "raw", None):
                self.raw = response.raw

    watch = Watch()
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(watch)
    started = time.monotonic()
    try:
        with _show_progress(out) as progress:
            index, embed_model, reranker = _index(out, target)
            engine = index.as_query_engine(
                llm=llm,
                streaming=True,
                similarity_top_k=3 if reranker else 2,
                node_postprocessors=[reranker] if reranker else [],
            )
            out.line(f"Q: {RAG_QUESTION}")
            response = engine.query(RAG_QUESTION)
            assert isinstance(response, StreamingResponse)  # as_query_engine(streaming=True)
            if reranker is not None:
                out.facts(embed_model.last_routes[-1], None, 0.0, label="embed the question")
                for route in reranker.last_routes:
                    out.facts(route, None, 0.0, label="rerank 3 passages")
            out.stream("A: ")
            for token in response.response_gen:
                out.token(token)
        out.end_stream()
    finally:
        dispatcher.event_handlers.remove(watch)
    elapsed = time.monotonic() - started
    for node in response.source_nodes:
        out.dim(f"source: {node.node.metadata.get('file')} (score {node.score:.2f})")
    raw = watch.raw or {}
    out.facts(
        raw.get("vast"), (raw.get("usage") or {}).get("completion_tokens"), elapsed, label="answer"
    )
    out.dim(
        f"LlamaIndex's event handlers saw {watch.progress} VastProgressEvents for these "
        f"{len(progress.kinds('routed'))} requests"
    )


def _tamper_step(out: _Out, target: _Target) -> None:
    out.step(4, "Security: a tampered assignment is rejected before any worker is contacted")
    out.line(f"A proxy rewrites the worker address in the route answer to {IMPOSTOR}.")
    proxy = _Tamperer(target.worker_ca)
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
    out.step(5, "Reliability: a worker fails before answering; the client re-routes")
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
            http_client=httpx.Client(transport=_DeadFirstWorker(target.worker_ca)),
            **kwargs,
        )
    started = time.monotonic()
    try:
        with (
            _show_progress(out),
            client.stream_chat(
                [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}],
                max_tokens=48,
                temperature=0,
            ) as stream,
        ):
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
    from vast_llm.emulator import Emulator, Match, Reasoning, Turn, smollm2_available

    wanted = model
    if model == "auto":
        model = "smollm2" if smollm2_available() else "fake"
    elif model == "smollm2" and not smollm2_available():
        raise RuntimeError("the real model is not installed: run `make model`")
    if wanted == "auto" and model == "fake":
        out.line(
            "!! The real model (SmolLM2-135M via llama-cpp-python) is not installed: its "
            "build needs a C compiler."
        )
        out.line(
            "!! Running the same demo on the fake model: its words are random, everything "
            "else is real."
        )
    delay = 0.02 if model == "fake" else 0.0
    # Production's shape: HTTPS workers under a CA built like Vast's root, an endpoint scaled
    # to zero, and a vLLM endpoint that sends a reasoning model's thinking apart.
    emu = Emulator(
        api="tgi",
        endpoint="demo-tgi",
        model=model,
        workers=2,
        tls=True,
        cold_workers=True,
        activation_delay=ACTIVATION_DELAY,
        token_delay=delay,
    )
    thinking = Turn(
        Reasoning(THOUGHT, ANSWER), when=Match(last_user_contains=REASONING_QUESTION), times=None
    )
    emu.add_endpoint(
        "demo-vllm",
        api="openai",
        model=model,
        token_delay=delay,
        reasoning="reasoning_content",
        script=[thinking],
        embeddings=False,
    )
    # Embeddings and rerank on an endpoint of their own, as RAG deployments often have, on the
    # emulator's hashed bag of words: SmolLM2's own embeddings of the documents, the question
    # and the passages cost about 700 prompt tokens of CPU, a minute on a busy 2-core machine.
    emu.add_endpoint("demo-embed", api="openai", model="fake")
    emu.start()
    out.line(f"Local emulator of the Vast autoscaler at {emu.base_url}")
    out.dim(
        "workers serve HTTPS under a CA built like Vast's root (the clients trust it "
        "through worker_ca)"
    )
    out.dim(
        f"endpoint demo-tgi   2 TGI workers, scaled to zero (a woken one is ready in "
        f"{ACTIVATION_DELAY:.0f} s)          model {model}"
    )
    out.dim(
        f"endpoint demo-vllm  an OpenAI-compatible (vLLM-style) worker: chat with "
        f"reasoning_content       model {model}"
    )
    out.dim(
        "endpoint demo-embed an OpenAI-compatible worker: /v1/embeddings, /v1/rerank    "
        "model fake (hashed bag of words)"
    )
    return _Target(
        base_url=emu.base_url,
        api_key=emu.api_key,
        chat_endpoint="demo-tgi",
        chat_api="tgi",
        rag_endpoint="demo-vllm",
        rag_api="openai",
        embed_endpoint="demo-embed",
        local=emu,
        model=model,
        backoff=Backoff(poll_first=0.5, poll_cap=1.0),
        worker_ca=emu.worker_ca,
    )


def run(endpoint: str | None = None, api: str = "openai", model: str = "auto") -> int:
    """Run the demo; returns the exit status."""
    out = _Out()
    started = time.monotonic()
    out.title("vast-llm demo: a Vast.ai Serverless endpoint as a drop-in LLM")
    if endpoint:
        if not os.environ.get("VAST_API_KEY"):
            raise VastError("the demo against Vast.ai needs VAST_API_KEY in the environment")
        target = _Target(
            base_url=None,
            api_key=None,
            chat_endpoint=endpoint,
            chat_api=api,
            rag_endpoint=endpoint,
            rag_api=api,
            worker_ca=os.environ.get("VAST_WORKER_CA") or None,
        )
        out.line(
            f"Vast.ai endpoint {endpoint!r} ({api}) via "
            f"{os.environ.get('VAST_BASE_URL', 'https://run.vast.ai')}"
        )
    else:
        target = _local_target(out, model)
    try:
        _langchain_step(out, target)
        _reasoning_step(out, target)
        _llamaindex_step(out, target)
        _tamper_step(out, target)
        _failure_step(out, target)
    finally:
        if target.local is not None:
            target.local.stop()
    print()
    out.ok(f"Done in {time.monotonic() - started:.1f} s.")
    return 0
