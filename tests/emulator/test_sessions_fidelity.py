"""Fidelity: the same session calls against the REAL Vast worker and against the emulator.

The real worker is the worker framework of the official ``vastai`` package (1.9.1, in
``.venv-vastai``, made by ``make sdk``), run on 127.0.0.1 by ``vastai_worker.py`` in front of a
small fake model server. It fetches its public key from the emulator's router, so the
emulator's assignments verify on it; pointing the emulated endpoint's one worker at it makes the
emulator's router assign the real worker. Every step's status, content type and body (session
ids and clock readings normalised) must be the same on both.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests import loopback
from vast_llm import AsyncVastClient, VastClient, VastConnectionError
from vast_llm.emulator import Emulator
from vast_llm.emulator._models import FakeModel, GenRequest, GenResult
from vast_llm.emulator._server import Servers, bind_loopback, free_port

pytestmark = pytest.mark.vastai_sdk

ROOT = pathlib.Path(__file__).resolve().parents[2]
SDK_PYTHON = ROOT / ".venv-vastai" / "bin" / "python"
WORKER = pathlib.Path(__file__).with_name("vastai_worker.py")
DRIVER = pathlib.Path(__file__).with_name("vastai_sdk_driver.py")

MAX_SESSIONS = 2
GC_INTERVAL = 0.2  # the framework sweeps every 5 s; both sides are told 0.2 s here


# -- the fake model server behind the real worker -------------------------------------------


async def _tokens(payload: dict[str, Any]) -> list[str]:
    """What the emulator's fake model says to this TGI payload (so both sides answer alike)."""
    params = payload.get("parameters") or {}
    request = GenRequest(
        prompt=payload.get("inputs", ""),
        max_tokens=int(params.get("max_new_tokens") or 256),
        include_stop=True,
    )
    return [token async for token in FakeModel().generate(request, GenResult())]


SLOW = "slow"  # a prompt the fake model server answers only after a second


@dataclass
class ModelServer:
    url: str
    received: list[tuple[str, bytes]]  # the POSTs to other paths (on_close_route calls)
    slow_calls: list[str]  # the paths of slow calls, as they arrive


@pytest.fixture(scope="module")
def model_server() -> Iterator[ModelServer]:
    received: list[tuple[str, bytes]] = []
    slow_calls: list[str] = []

    async def slow(request: Request, payload: dict[str, Any]) -> None:
        if payload.get("inputs") == SLOW:
            slow_calls.append(request.url.path)
            await asyncio.sleep(1.0)

    async def generate(request: Request) -> Response:
        payload = await request.json()
        await slow(request, payload)
        tokens = await _tokens(payload)
        return JSONResponse({"generated_text": "".join(tokens)})

    async def generate_stream(request: Request) -> Response:
        payload = await request.json()
        tokens = await _tokens(payload)

        async def frames() -> AsyncIterator[str]:
            await slow(request, payload)
            for index, token in enumerate(tokens):
                event: dict[str, Any] = {"token": {"text": token, "special": False}}
                if index == len(tokens) - 1:  # TGI's final event carries the whole text
                    event["generated_text"] = "".join(tokens)
                yield "data:" + json.dumps(event) + "\n\n"

        return StreamingResponse(frames(), media_type="text/event-stream")

    async def other(request: Request) -> Response:
        received.append((request.url.path, await request.body()))
        return JSONResponse({})

    app = Starlette(
        routes=[
            Route("/generate", generate, methods=["POST"]),
            Route("/generate_stream", generate_stream, methods=["POST"]),
            Route("/{path:path}", other, methods=["POST"]),
        ]
    )
    sock = bind_loopback(0)
    servers = Servers()
    servers.start([(app, sock)])
    yield ModelServer(f"http://127.0.0.1:{sock.getsockname()[1]}", received, slow_calls)
    servers.stop()


# -- the two targets ---------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    emu: Emulator
    on_close_bodies: Callable[[], list[Any]]  # what the on_close_route calls delivered
    slow_calls: Callable[[], list[str]]  # the paths of slow calls that reached the model


def _emulator() -> Emulator:
    return Emulator(api="tgi", max_sessions=MAX_SESSIONS, session_gc_interval=GC_INTERVAL)


def _route(emu: Emulator) -> dict[str, Any]:
    body = {"endpoint": emu.endpoint, "api_key": emu.api_key, "cost": 100}
    answer: dict[str, Any] = loopback.post(emu.base_url + "/route/", json=body).json()
    return answer


@pytest.fixture(scope="module")
def emulated() -> Iterator[Target]:
    with _emulator().serve() as emu:
        yield Target(
            "emulated",
            emu,
            lambda: [r.json for r in emu.requests if r.target == "on_close"],
            lambda: [
                r.path
                for r in emu.worker_requests
                if (r.json or {}).get("payload") == {"inputs": SLOW}
            ],
        )


@pytest.fixture(scope="module")
def real(model_server: ModelServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    if not SDK_PYTHON.exists():
        pytest.fail("the vastai SDK virtualenv is missing: run `make sdk` (make test does)")
    with _emulator().serve() as emu:
        port = free_port()
        config = {
            "port": port,
            "http_port": free_port(),
            "model_url": model_server.url,
            "report_addr": emu.base_url,
            "api": "tgi",
            "max_sessions": MAX_SESSIONS,
            "gc_interval": GC_INTERVAL,
        }
        log_path = tmp_path_factory.mktemp("real-worker") / "worker.log"
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                [str(SDK_PYTHON), str(WORKER), json.dumps(config)], stdout=log, stderr=log
            )
        try:
            # The emulator's router now assigns the real worker, signed with its own key.
            emu.workers[0].url = f"http://127.0.0.1:{port}"
            _wait_until_serving(emu, process, log_path)
            emu.reset()
            yield Target(
                "real",
                emu,
                lambda: [json.loads(body) for _, body in model_server.received],
                lambda: list(model_server.slow_calls),
            )
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_serving(emu: Emulator, process: subprocess.Popen[bytes], log: pathlib.Path) -> None:
    """Until a signed call succeeds: the port is open and the worker has fetched the key."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the real worker exited:\n{log.read_text()[-3000:]}")
        auth = _route(emu)
        body = {"auth_data": auth, "payload": {"inputs": "probe"}}
        try:
            if loopback.post(auth["url"] + "/generate", json=body).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"the real worker did not start serving:\n{log.read_text()[-3000:]}")


# -- the scenario ------------------------------------------------------------------------------


class Steps:
    """Runs calls and keeps what came back, with session ids and clock readings normalised."""

    def __init__(self, auth: dict[str, Any]) -> None:
        self.auth = auth
        self.url = auth["url"]
        self.ids: dict[str, str] = {}
        self.log: list[tuple[Any, ...]] = []
        self.sent = 0.0  # when the last call was sent

    def normal(self, value: Any) -> Any:
        if value == self.auth:
            return "<route answer>"
        if isinstance(value, dict):
            return {k: self.normal(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.normal(v) for v in value]
        if isinstance(value, str):
            for session_id, name in self.ids.items():
                value = value.replace(session_id, name)
        return value

    def post(
        self,
        step: str,
        path: str,
        body: Any = None,
        raw: bytes | None = None,
        keep: Callable[[Any], Any] | None = None,
        typed: bool = True,
    ) -> httpx.Response:
        self.sent = time.time()
        if raw is not None:
            response = loopback.post(self.url + path, content=raw)
        else:
            response = loopback.post(self.url + path, json=body)
        try:
            answer: Any = response.json()
        except ValueError:
            answer = response.text
        if isinstance(answer, dict) and isinstance(answer.get("session_id"), str):
            self.ids.setdefault(answer["session_id"], f"<session {len(self.ids) + 1}>")
        if keep is not None:
            answer = keep(answer)
        # Model calls pass the model server's type through (the two model servers differ).
        kind = response.headers.get("content-type") if typed else "(not compared)"
        self.log.append((step, response.status_code, kind, self.normal(answer)))
        return response

    def create(self, step: str, **payload: Any) -> httpx.Response:
        body = {"auth_data": self.auth, "session_id": None, "payload": payload}
        return self.post(step, "/session/create", body, keep=self.times)

    def call(
        self,
        step: str,
        session_id: Any,
        auth: Any = None,
        payload: Any = None,
        path: str = "/generate",
    ) -> httpx.Response:
        if payload is None:
            payload = {"inputs": "Hello", "parameters": {"max_new_tokens": 4}}
        body = {
            "auth_data": self.auth if auth is None else auth,
            "session_id": session_id,
            "payload": payload,
        }
        return self.post(step, path, body, typed=False)

    def manage(
        self, step: str, what: str, session_id: Any, session_auth: Any = "same"
    ) -> httpx.Response:
        auth = self.auth if session_auth == "same" else session_auth
        body = {"session_id": session_id, "session_auth": auth}
        return self.post(step, f"/session/{what}", body, keep=self.times)

    def times(self, answer: Any) -> Any:
        # Clock readings differ between the two runs; what they say about each other does not.
        if not isinstance(answer, dict) or "expiration" not in answer:
            return answer
        answer = dict(answer)
        lifetime = answer.get("lifetime")
        expiration = answer.pop("expiration")
        answer["expiration after the call was sent"] = expiration > self.sent
        if "created_at" in answer:
            created = answer.pop("created_at")
            answer["lifetimes from creation to expiration"] = round(
                (expiration - created) / float(lifetime or 60), 3
            )
        return answer


def stream_text(body: Any) -> Any:
    """The text of a TGI stream: its tokens, special ones left out."""
    if not isinstance(body, str):
        return body
    events = [json.loads(line[5:]) for line in body.splitlines() if line.startswith("data:")]
    return "".join(e["token"]["text"] for e in events if not e["token"].get("special"))


def scenario(target: Target) -> list[tuple[Any, ...]]:
    emu = target.emu
    emu.reset()
    s = Steps(_route(emu))
    first = s.create(
        "create", lifetime=30.0, on_close_route="/closed", on_close_payload={"job": 7}
    ).json()["session_id"]
    s.call("call in the session", first)
    s.post(
        "stream in the session",
        "/generate_stream",
        {
            "auth_data": s.auth,
            "session_id": first,
            "payload": {"inputs": "Hello", "parameters": {"max_new_tokens": 3}},
        },
        keep=stream_text,
        typed=False,
    )
    s.manage("get after two calls", "get", first)
    s.manage("health", "health", first)
    s.manage("health with another auth", "health", first, {**s.auth, "reqnum": -1})
    s.manage("get with no auth", "get", first, None)
    s.manage("end with another auth", "end", first, {})
    s.manage("get an unknown session", "get", "nope")
    s.manage("health of an unknown session", "health", "nope")
    s.manage("end without an id", "end", None)
    s.manage("end an unknown session", "end", "nope")
    for what in ("create", "end", "get", "health"):
        s.post(f"{what}: invalid JSON", f"/session/{what}", raw=b"{nope")
        s.post(f"{what}: not an object", f"/session/{what}", [1])
    s.call("call: unknown session", "nope")
    s.call("call: unknown session, missing fields", "nope", payload={})
    s.call("call: bad signature in the session", first, auth={**s.auth, "signature": "AAAA"})
    s.manage("get after a refused call", "get", first)
    second = s.create("second session", lifetime=30.0).json()["session_id"]
    # Full: the limit is checked before the payload is looked at.
    s.create("third session: full")
    s.create("full, and the lifetime is not a number", lifetime="x")
    s.post("full, and no payload", "/session/create", {"auth_data": s.auth})
    s.manage("end the second", "end", second)
    s.create("create: lifetime not a number", lifetime="x")
    s.post("create: no payload", "/session/create", {"auth_data": s.auth})
    s.post("create: no auth_data", "/session/create", {"payload": {}})
    s.post(
        "create: a cost that is not a number",
        "/session/create",
        {"auth_data": {**s.auth, "cost": "high"}, "payload": {}},
    )
    s.create("full again: that session was kept")
    s.manage("end", "end", first)
    s.log.append(("on_close delivered", s.normal(target.on_close_bodies())))
    s.manage("end again", "end", first)
    s.call("call after the end", first)
    # A session outlives its lifetime until the next sweep, then it is gone.
    short = s.create("short session", lifetime=0.05).json()["session_id"]
    deadline = time.monotonic() + 10
    while loopback.post(
        s.url + "/session/health", json={"session_id": short, "session_auth": s.auth}
    ).json()["ok"]:
        assert time.monotonic() < deadline, "the expired session was never swept"
        time.sleep(0.05)
    s.call("call after expiry", short)
    return s.log


def test_the_session_routes_answer_as_the_real_worker(real: Target, emulated: Target) -> None:
    expected = scenario(real)
    got = scenario(emulated)
    for want, have in zip(expected, got, strict=True):
        assert have == want


def run_sdk_sessions(emu: Emulator) -> dict[str, Any]:
    emu.reset()
    result = subprocess.run(
        [str(SDK_PYTHON), str(DRIVER), emu.base_url, emu.api_key, emu.endpoint, "tgi-session"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return out


def test_the_official_sdk_sessions_behave_alike(real: Target, emulated: Target) -> None:
    expected = run_sdk_sessions(real.emu)
    assert expected["calls"][0]["status"] == 200 and expected["is_open"] is True
    assert expected["request after a worker-side end"].startswith("ValueError")
    assert run_sdk_sessions(emulated.emu) == expected


def in_flight_then_end(target: Target) -> list[str]:
    """A whole answer and a stream in flight in a session when it ends: what each call gets."""
    emu = target.emu
    emu.reset()
    if target.name == "emulated":  # the emulated model's way of being slow
        emu.inject("slow_first_token", times=2, delay=1.0)
    auth = _route(emu)
    create = {"auth_data": auth, "session_id": None, "payload": {"lifetime": 30}}
    session_id = loopback.post(auth["url"] + "/session/create", json=create).json()["session_id"]
    body = {"auth_data": auth, "session_id": session_id, "payload": {"inputs": SLOW}}
    outcomes: dict[str, str] = {}

    def run(path: str) -> None:
        try:
            with loopback.stream("POST", auth["url"] + path, json=body) as response:
                response.read()
            outcomes[path] = f"answered {response.status_code}"
        except httpx.HTTPError as exc:
            outcomes[path] = f"{type(exc).__name__}: {exc}"

    before = len(target.slow_calls())
    threads = [threading.Thread(target=run, args=(p,)) for p in ("/generate", "/generate_stream")]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while len(target.slow_calls()) < before + 2:
        assert time.monotonic() < deadline, "the slow calls never reached the model"
        time.sleep(0.01)
    end = {"session_id": session_id, "session_auth": auth}
    ended = loopback.post(auth["url"] + "/session/end", json=end)
    for thread in threads:
        thread.join(10)
    return [f"end: {ended.status_code}"] + [f"{p}: {outcomes[p]}" for p in sorted(outcomes)]


def test_ending_a_session_drops_its_calls_in_flight_alike(real: Target, emulated: Target) -> None:
    expected = in_flight_then_end(real)
    assert all("RemoteProtocolError" in line for line in expected[1:]), expected
    assert in_flight_then_end(emulated) == expected


def test_the_client_reaches_the_real_worker(real: Target, emulated: Target) -> None:
    # The harness hosts the project's client as it is: routed by the emulator, served by the
    # real worker (the ground for running the client's sessions against both later).
    texts = []
    for target in (real, emulated):
        emu = target.emu
        with VastClient(emu.endpoint, api_key=emu.api_key, base_url=emu.base_url) as client:
            answer = client.generate("Hello", max_tokens=4)
        assert answer.route.worker_url == emu.workers[0].url
        texts.append(answer.text)
    assert texts[0] == texts[1] and len(texts[0].split()) == 4


# -- the client's sessions, on both -------------------------------------------------------------


def _health(pinned: Any) -> Any:
    body = {"session_id": pinned.session_id, "session_auth": pinned.auth}
    return loopback.post(pinned.url + "/session/health", json=body).json()


def client_sessions(target: Target) -> list[Any]:
    """The client's worker sessions, sync and async, run against a target: what each step
    showed (texts, route calls, what the worker says of the session, progress events)."""
    emu = target.emu
    emu.reset()
    log: list[Any] = []
    events: list[Any] = []
    options: dict[str, Any] = {
        "api_key": emu.api_key,
        "base_url": emu.base_url,
        "on_progress": events.append,
    }
    with VastClient(emu.endpoint, **options) as client:
        with client.session(lifetime=30) as session:
            routes = len(emu.route_requests)
            first = session.generate("Hello", max_tokens=4)
            streamed = "".join(chunk.text for chunk in session.stream("Hello", max_tokens=3))
            log.append(
                (
                    "two calls",
                    first.text,
                    streamed,
                    first.route.route_calls,
                    len(emu.route_requests) - routes,
                )
            )
            pinned = session._pin.current
            log.append(("open on the worker", _health(pinned)))
            # Ended behind the client's back: the next call meets a 410 and makes a new one.
            body = {"session_id": pinned.session_id, "session_auth": pinned.auth}
            log.append(
                (
                    "ended elsewhere",
                    loopback.post(pinned.url + "/session/end", json=body).status_code,
                )
            )
            again = session.generate("Hello", max_tokens=4)
            log.append(
                (
                    "after that",
                    again.text,
                    again.route.attempts,
                    again.route.route_calls,
                    session.sessions_made,
                )
            )
            replaced = session._pin.current
        log.append(("after the block", _health(pinned), _health(replaced)))
        # A whole answer that outlives the session's lifetime is cut by the worker's sweep,
        # and not sent again.
        with client.session(lifetime=0.3) as short:
            if target.name == "emulated":  # the emulated model's way of being slow
                emu.inject("slow_first_token", delay=1.0)
            try:
                short.generate(SLOW, max_tokens=4)
                log.append(("outlived its lifetime", "answered"))
            except VastConnectionError as exc:
                log.append(
                    (
                        "outlived its lifetime",
                        type(exc).__name__,
                        "past the session's lifetime" in str(exc),
                    )
                )
    log.append(("events", [(e.kind, e.status) for e in events]))

    async def run_async() -> list[Any]:
        async with (
            AsyncVastClient(emu.endpoint, api_key=emu.api_key, base_url=emu.base_url) as aclient,
            aclient.session() as asession,
        ):
            answer = await asession.generate("Hello", max_tokens=4)
            pieces = [chunk.text async for chunk in asession.stream("Hello", max_tokens=3)]
            return ["async", answer.text, "".join(pieces), answer.route.route_calls]

    log.append(asyncio.run(run_async()))
    log.append(("routes in all", len(emu.route_requests)))
    return log


def test_the_client_sessions_behave_alike_on_the_real_worker(
    real: Target, emulated: Target
) -> None:
    expected = client_sessions(real)
    assert expected[0][3:] == (0, 0)  # no route call in the session
    assert expected[1] == ("open on the worker", {"ok": True})
    assert expected[3][2:] == (2, 1, 2)  # one 410, one new session on a fresh route
    assert expected[4] == ("after the block", {"ok": False}, {"ok": False})
    assert expected[5] == ("outlived its lifetime", "VastConnectionError", True)
    assert client_sessions(emulated) == expected
