"""Worker sessions on the wire: the four routes, calls pinned by session_id, expiry and its
extension, the sweep, max_sessions and on_close_route, as Vast's worker framework does them."""

from __future__ import annotations

import json
import string
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests import loopback
from vast_llm.emulator import Emulator

TGI = {"inputs": "Hello", "parameters": {"max_new_tokens": 4}}


def assign(emu: Emulator, cost: float = 100) -> dict[str, Any]:
    body = {"endpoint": emu.endpoint, "api_key": emu.api_key, "cost": cost}
    answer: dict[str, Any] = loopback.post(emu.base_url + "/route/", json=body).json()
    return answer


def create(auth: dict[str, Any], **payload: Any) -> httpx.Response:
    """/session/create as the official SDK sends it: a routed call in the wrapped format."""
    payload.setdefault("lifetime", 60.0)
    body = {"auth_data": auth, "session_id": None, "payload": payload}
    return loopback.post(auth["url"] + "/session/create", json=body)


def call(
    auth: dict[str, Any],
    session_id: Any,
    payload: Any = TGI,
    path: str = "/generate",
    url: str | None = None,
) -> httpx.Response:
    body = {"auth_data": auth, "session_id": session_id, "payload": payload}
    return loopback.post((url or auth["url"]) + path, json=body)


def manage(
    auth: dict[str, Any],
    what: str,
    session_id: Any,
    session_auth: Any = None,
) -> httpx.Response:
    """/session/end, /get or /health: the bare body, the route answer as ``session_auth``."""
    given = auth if session_auth is None else session_auth
    body = {"session_id": session_id, "session_auth": given}
    return loopback.post(auth["url"] + f"/session/{what}", json=body)


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(api="tgi", workers=2).serve() as running:
        yield running


def test_lifecycle_route_once_then_pinned_calls_then_end(emu: Emulator) -> None:
    auth = assign(emu)
    before = time.time()
    created = create(auth, lifetime=30.0)
    assert created.status_code == 201
    answer = created.json()
    assert set(answer) == {"session_id", "expiration"}
    session_id = answer["session_id"]
    assert len(session_id) == 13 and set(session_id) <= set(string.ascii_letters + string.digits)
    assert before + 30.0 <= answer["expiration"] <= time.time() + 30.0
    # Calls carry the session and go straight to the pinned worker: no route call.
    routes = len(emu.route_requests)
    texts = {call(auth, session_id).json()["generated_text"] for _ in range(3)}
    assert len(texts) == 1 and len(emu.route_requests) == routes
    calls = [r for r in emu.worker_requests if r.path == "/generate"]
    assert len(calls) == 3 and {r.worker for r in calls} == {emu.sessions()[0].worker}
    # Each call added one lifetime to the expiration.
    got = manage(auth, "get", session_id)
    assert got.status_code == 200
    assert got.json()["expiration"] == pytest.approx(answer["expiration"] + 3 * 30.0)
    assert got.json()["auth_data"] == auth and got.json()["lifetime"] == 30.0
    assert manage(auth, "health", session_id).json() == {"ok": True}
    ended = manage(auth, "end", session_id)
    assert ended.status_code == 200
    assert ended.json() == {"ended": True, "removed_session": session_id}
    # Afterwards: 410 for calls, 400 for end and get, ok false for health.
    gone = call(auth, session_id)
    assert gone.status_code == 410 and gone.json() == {"error": "invalid session"}
    again = manage(auth, "end", session_id)
    assert again.status_code == 400
    assert again.json() == {"error": f"session with id {session_id} not found"}
    assert manage(auth, "get", session_id).json() == {"error": "session does not exist"}
    assert manage(auth, "health", session_id).json() == {"ok": False}
    assert emu.sessions() == []


def test_answers_copy_the_worker_framework_bytes(emu: Emulator) -> None:
    auth = assign(emu)
    created = create(auth)
    # aiohttp's json_response: default json.dumps separators, charset in the content type.
    assert created.headers["content-type"] == "application/json; charset=utf-8"
    assert created.text == json.dumps(created.json())


def test_session_auth_must_be_the_route_answer(emu: Emulator) -> None:
    auth = assign(emu)
    session_id = create(auth).json()["session_id"]
    forged = {**auth, "reqnum": auth["reqnum"] + 1}
    for what in ("end", "get", "health"):
        response = manage(auth, what, session_id, session_auth=forged)
        assert response.status_code == 401
        assert response.json() == {"error": "session_auth is not valid"}
        assert manage(auth, what, session_id, session_auth={}).status_code == 401
    # Equality as Python compares: a cost re-typed from 100.0 to 100 is the same answer.
    assert manage(auth, "get", session_id, session_auth={**auth, "cost": 100}).status_code == 200


@pytest.mark.parametrize("what", ["create", "end", "get", "health"])
def test_malformed_bodies(emu: Emulator, what: str) -> None:
    url = assign(emu)["url"] + f"/session/{what}"
    response = loopback.post(url, content=b"{nope")
    assert response.status_code == 422 and response.json() == {"error": "invalid JSON"}
    # A JSON body that is not an object makes the worker's handler raise: aiohttp's 500 page.
    crashed = loopback.post(url, json=[1, 2])
    assert crashed.status_code == 500
    assert crashed.text == "500 Internal Server Error\n\nServer got itself in trouble"
    if what != "create":
        missing = loopback.post(url, json={"session_auth": {}})
        assert missing.status_code == 422 and missing.json() == {"error": "missing session_id"}


def test_create_checks_only_what_it_touches(emu: Emulator) -> None:
    auth = assign(emu)
    url = auth["url"] + "/session/create"
    # No signature check on create, and no required fields beyond the two objects.
    assert create({**auth, "signature": "forged"}).status_code == 201
    assert loopback.post(url, json={"payload": {}}).status_code == 500  # no auth_data
    assert loopback.post(url, json={"auth_data": auth}).status_code == 500  # no payload
    assert create(auth, lifetime="soon").status_code == 500
    made = loopback.post(url, json={"auth_data": auth, "payload": {}})
    assert made.status_code == 201  # lifetime defaults to 60 s
    assert made.json()["expiration"] == pytest.approx(time.time() + 60.0, abs=5)


def test_calls_in_a_session_are_still_checked(emu: Emulator) -> None:
    auth = assign(emu)
    session_id = create(auth).json()["session_id"]
    expiration = emu.sessions()[0].expiration
    # The fields come first (422), then the session (410), then the signature (401).
    assert call(auth, "unknown", payload={}).status_code == 422
    assert call({**auth, "signature": "AAAA"}, "unknown").status_code == 410
    refused = call({**auth, "signature": "AAAA"}, session_id)
    assert refused.status_code == 401 and refused.content == b""
    # The refused call was looked up first, so it extended the session all the same.
    assert emu.sessions()[0].expiration == pytest.approx(expiration + 60.0)
    # The session's own auth_data is not required: any signed assignment will do, even one
    # naming another worker (the worker does not compare the URL with its own).
    other = assign(emu)
    assert other["url"] != auth["url"]
    assert call(other, session_id, url=auth["url"]).status_code == 200


def test_max_sessions_is_429_with_an_empty_body() -> None:
    with Emulator(max_sessions=2).serve() as emu:
        auth = assign(emu)
        ids = [create(auth).json()["session_id"] for _ in range(2)]
        full = create(auth)
        assert full.status_code == 429 and full.content == b""
        assert manage(auth, "end", ids[0]).status_code == 200
        assert create(auth).status_code == 201


def test_no_session_limit() -> None:
    with Emulator(max_sessions=None).serve() as emu:
        auth = assign(emu)
        assert all(create(auth).status_code == 201 for _ in range(12))
        assert len(emu.sessions()) == 12


def test_an_open_session_counts_as_load(emu: Emulator) -> None:
    auth = assign(emu, cost=1000)
    create(auth)
    # The router steers new work to the other worker while the session is open.
    assert {assign(emu, cost=1)["url"] for _ in range(3)} == set(emu.worker_urls()) - {auth["url"]}


def test_expired_sessions_serve_until_the_sweep_then_410() -> None:
    with Emulator(session_gc_interval=1.0).serve() as emu:
        auth = assign(emu)
        session_id = create(auth, lifetime=0.05).json()["session_id"]
        wait_for(lambda: time.time() > emu.sessions()[0].expiration + 0.01, timeout=2)
        # Past its expiration but before a sweep, the session still answers (and is extended
        # from its old expiration, which may leave it expired).
        assert call(auth, session_id).status_code == 200
        wait_for(lambda: not emu.sessions())
        assert call(auth, session_id).status_code == 410


def test_calls_keep_a_session_alive() -> None:
    with Emulator(session_gc_interval=0.05).serve() as emu:
        auth = assign(emu)
        session_id = create(auth, lifetime=0.4).json()["session_id"]
        started = time.monotonic()
        calls = 0
        while time.monotonic() < started + 1.2:  # three lifetimes, swept every 0.05 s
            assert call(auth, session_id).status_code == 200
            calls += 1
            time.sleep(0.1)  # each call has added 0.4 s: the session keeps ahead
        assert [s.session_id for s in emu.sessions()] == [session_id]
        assert emu.sessions()[0].calls == calls


class _Hook(BaseHTTPRequestHandler):
    received: list[tuple[str, bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.received.append((self.path, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """A loopback HTTP server recording the POSTs it gets: (its URL, what it received)."""
    received: list[tuple[str, bytes]] = []
    handler = type("Hook", (_Hook,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


def test_on_close_route_is_called_when_the_session_ends(
    emu: Emulator, hook: tuple[str, list[tuple[str, bytes]]]
) -> None:
    url, received = hook
    auth = assign(emu)
    session_id = create(auth, on_close_route=url + "/done", on_close_payload={"job": 7}).json()[
        "session_id"
    ]
    assert received == []
    assert manage(auth, "end", session_id).status_code == 200
    # The worker calls back before it answers the end call.
    assert received == [("/done", json.dumps({"job": 7, "session_id": session_id}).encode())]
    [record] = [r for r in emu.requests if r.target == "on_close"]
    assert record.path == url + "/done" and record.status == 204


def test_on_close_route_on_the_model_server_and_odd_payloads(emu: Emulator) -> None:
    auth = assign(emu)
    first = create(auth, on_close_route="/cleanup", on_close_payload=["a"]).json()["session_id"]
    second = create(auth, on_close_route="/cleanup").json()["session_id"]
    third = create(auth, on_close_payload={"dropped": True}).json()["session_id"]  # no route
    for session_id in (first, second, third):
        manage(auth, "end", session_id)
    calls = [r for r in emu.requests if r.target == "on_close"]
    # A path is on the model server (recorded; the emulated model serves nothing there).
    assert [(r.path, r.json) for r in calls] == [
        ("/cleanup", {"payload": ["a"], "session_id": first}),
        ("/cleanup", {"session_id": second}),
    ]


def test_on_close_route_is_called_when_the_session_expires(
    hook: tuple[str, list[tuple[str, bytes]]],
) -> None:
    url, received = hook
    with Emulator(session_gc_interval=0.05).serve() as emu:
        auth = assign(emu)
        session_id = create(auth, lifetime=0.1, on_close_route=url).json()["session_id"]
        wait_for(lambda: bool(received))
        assert received == [("/", json.dumps({"session_id": session_id}).encode())]
        assert emu.sessions() == []


def test_ending_a_session_drops_its_calls_in_flight() -> None:
    with Emulator(token_delay=0.05).serve() as emu:
        auth = assign(emu)
        session_id = create(auth).json()["session_id"]
        long = {"inputs": "Hello", "parameters": {"max_new_tokens": 200}}
        errors: list[BaseException] = []

        def stream() -> None:
            body = {"auth_data": auth, "session_id": session_id, "payload": long}
            try:
                with loopback.stream("POST", auth["url"] + "/generate_stream", json=body) as r:
                    for _ in r.iter_bytes():
                        pass
            except BaseException as exc:
                errors.append(exc)

        def whole() -> None:
            try:
                call(auth, session_id, payload=long)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=stream), threading.Thread(target=whole)]
        for thread in threads:
            thread.start()
        wait_for(lambda: sum(1 for r in emu.worker_requests if r.path.startswith("/gen")) == 2)
        time.sleep(0.1)
        assert manage(auth, "end", session_id).status_code == 200
        for thread in threads:
            thread.join(10)
        # The stream is cut; the whole answer never comes (its connection closes unanswered).
        assert len(errors) == 2
        assert all(isinstance(e, httpx.RemoteProtocolError) for e in errors), errors


def test_session_lost_fault_is_a_410_on_the_next_call(emu: Emulator) -> None:
    auth = assign(emu)
    session_id = create(auth, on_close_route="/cleanup").json()["session_id"]
    assert call(auth, session_id).status_code == 200
    emu.inject("session_lost")
    assert call(auth, session_id).status_code == 410
    assert manage(auth, "get", session_id).status_code == 400
    assert not [r for r in emu.requests if r.target == "on_close"]  # forgotten, not ended


def test_a_stopped_worker_refuses_and_is_no_longer_routed(emu: Emulator) -> None:
    auth = assign(emu)
    session_id = create(auth).json()["session_id"]
    index = emu.sessions()[0].worker
    emu.stop_worker(index)
    with pytest.raises(httpx.ConnectError):
        call(auth, session_id)
    assert emu.sessions() == []
    alive = set(emu.worker_urls()) - {auth["url"]}
    assert {assign(emu)["url"] for _ in range(3)} == alive


def test_legacy_flat_workers_have_no_sessions() -> None:
    with Emulator(payload_format="flat").serve() as emu:
        auth = assign(emu)
        assert create(auth).status_code == 404


def test_reset_forgets_sessions(emu: Emulator) -> None:
    auth = assign(emu)
    session_id = create(auth).json()["session_id"]
    emu.reset()
    assert emu.sessions() == [] and call(auth, session_id).status_code == 410
    assert len({assign(emu)["url"] for _ in range(4)}) == 2  # no load left behind


async def test_sessions_in_process() -> None:
    emu = Emulator(workers=2)
    async with httpx.AsyncClient(transport=emu.asgi_transport()) as client:
        body = {"endpoint": emu.endpoint, "api_key": emu.api_key, "cost": 10}
        auth = (await client.post(emu.base_url + "/route/", json=body)).json()
        wrapped = {"auth_data": auth, "session_id": None, "payload": {"lifetime": 5}}
        created = await client.post(auth["url"] + "/session/create", json=wrapped)
        session_id = created.json()["session_id"]
        wrapped = {"auth_data": auth, "session_id": session_id, "payload": TGI}
        assert (await client.post(auth["url"] + "/generate", json=wrapped)).status_code == 200
        ended = await client.post(
            auth["url"] + "/session/end", json={"session_id": session_id, "session_auth": auth}
        )
        assert ended.json() == {"ended": True, "removed_session": session_id}
        emu.stop_worker(0)
        dead = emu.state.endpoints[emu.endpoint].workers[0].url
        with pytest.raises(httpx.ConnectError):
            await client.post(dead + "/generate", json=wrapped)
