"""Worker sessions from the client: calls pinned to one worker with no route call, the session
ended with its block, and a lost session replaced on a fresh route; on every driver (sync
httpx, async httpx, async on an aiohttp.ClientSession) against the emulator's real sockets."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.conftest import FAST
from vast_llm import (
    AsyncVastClient,
    AsyncVastSession,
    Completion,
    ConfigError,
    Progress,
    VastClient,
    VastConnectionError,
    VastSession,
    WorkerError,
    WorkerStreamError,
)
from vast_llm.emulator import Emulator

MESSAGES = [{"role": "user", "content": "Hello there"}]


class Pinned:
    """One async face over a session of any driver (the sync one runs in a worker thread)."""

    def __init__(self, flavor: str, emu: Emulator, **settings: Any) -> None:
        self.flavor = flavor
        self.events: list[Progress] = []
        options: dict[str, Any] = {
            "api_key": emu.api_key,
            "base_url": emu.base_url,
            "backoff": FAST,
            "deadline": 10.0,
            "on_progress": self.events.append,
            **settings,
        }
        self._http: Any = None
        if flavor == "sync":
            self.client: Any = VastClient(emu.endpoint, **options)
        elif flavor == "async":
            self.client = AsyncVastClient(emu.endpoint, **options)
        else:
            aiohttp = pytest.importorskip("aiohttp")
            self._http = aiohttp.ClientSession()
            self.client = AsyncVastClient(emu.endpoint, http_client=self._http, **options)
        self.session: Any = None

    async def open(self, **options: Any) -> Any:
        self.session = self.client.session(**options)
        if self.flavor == "sync":
            return await asyncio.to_thread(self.session.open)
        return await self.session.open()

    async def close(self) -> None:
        if self.flavor == "sync":
            await asyncio.to_thread(self.session.close)
        else:
            await self.session.close()

    async def generate(self, prompt: str = "Hello", **params: Any) -> Completion:
        params.setdefault("max_tokens", 4)
        if self.flavor == "sync":
            return await asyncio.to_thread(self.session.generate, prompt, **params)
        answer: Completion = await self.session.generate(prompt, **params)
        return answer

    async def chat(self, messages: Any = MESSAGES, **params: Any) -> Completion:
        if self.flavor == "sync":
            return await asyncio.to_thread(self.session.chat, messages, **params)
        answer: Completion = await self.session.chat(messages, **params)
        return answer

    async def stream(self, method: str, arg: Any, **params: Any) -> tuple[str, Any]:
        if self.flavor == "sync":

            def run() -> tuple[str, Any]:
                with getattr(self.session, method)(arg, **params) as stream:
                    return "".join(chunk.text for chunk in stream), stream

            return await asyncio.to_thread(run)
        async with getattr(self.session, method)(arg, **params) as stream:
            return "".join([chunk.text async for chunk in stream]), stream

    async def aclose(self) -> None:
        if self.flavor == "sync":
            self.client.close()
        else:
            await self.client.aclose()
        if self._http is not None:
            await self._http.close()

    def kinds(self, status: str) -> list[Progress]:
        return [e for e in self.events if e.kind == "session" and e.status == status]


@pytest.fixture(params=["sync", "async", "aiohttp"])
def flavor(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def pinned(flavor: str) -> AsyncIterator[Any]:
    made: list[Pinned] = []

    def make(emu: Emulator, **settings: Any) -> Pinned:
        one = Pinned(flavor, emu, **settings)
        made.append(one)
        return one

    yield make
    for one in made:
        await one.aclose()


@pytest.fixture(scope="module")
def emu_module() -> Iterator[Emulator]:
    with Emulator(api="both", workers=2, session_gc_interval=0.1).serve() as emu:
        yield emu


@pytest.fixture
def emu(emu_module: Emulator) -> Iterator[Emulator]:
    emu_module.reset()
    yield emu_module
    emu_module.reset()


def model_calls(emu: Emulator) -> list[Any]:
    return [r for r in emu.worker_requests if not r.path.startswith("/session/")]


async def test_calls_go_to_one_worker_without_routing_and_the_block_ends_it(
    emu: Emulator, pinned: Any
) -> None:
    p = pinned(emu)
    await p.open(lifetime=30)
    assert len(emu.route_requests) == 1 and len(emu.sessions()) == 1
    session = emu.sessions()[0]
    assert (
        p.session.id == session.session_id
        and p.session.worker_url == emu.workers[session.worker].url
    )
    answers = [await p.generate() for _ in range(3)]
    chat = await p.chat(max_tokens=5)
    text, stream = await p.stream("stream", "Tell me", max_tokens=6)
    chat_text, chat_stream = await p.stream("stream_chat", MESSAGES, max_tokens=6)
    # One route call in all: the session's. Every call went to its worker, carrying its id
    # and the route answer it was made with; the API key reached no worker.
    assert len(emu.route_requests) == 1
    calls = model_calls(emu)
    assert len(calls) == 6
    assert {r.worker for r in calls} == {session.worker}
    assert {r.json["session_id"] for r in calls} == {session.session_id}
    assert all(r.json["auth_data"] == session.auth_data for r in calls)
    assert all(
        emu.api_key not in r.text and "authorization" not in r.headers for r in emu.worker_requests
    )
    assert emu.sessions()[0].calls == 6
    for answer in (*answers, chat):
        assert answer.route.session_id == session.session_id
        assert answer.route.route_calls == 0 and answer.route.attempts == 1
    assert answers[0].text == answers[1].text and len(answers[0].text.split()) == 4
    assert len(text.split()) == 6 and stream.route.session_id == session.session_id
    assert chat_text and chat_stream.route.worker_url == session.auth_data["url"]
    assert [e.status for e in p.events if e.kind == "session"] == ["created"]
    await p.close()
    assert emu.sessions() == []
    assert [r.path for r in emu.worker_requests][-1] == "/session/end"
    end = emu.worker_requests[-1].json
    assert end == {"session_id": session.session_id, "session_auth": session.auth_data}
    assert p.kinds("ended") and p.session.closed and p.session.id is None
    with pytest.raises(ConfigError, match="session has ended"):
        await p.generate()
    await p.close()  # a second close does nothing
    assert [r.path for r in emu.worker_requests].count("/session/end") == 1


async def test_a_lost_session_is_made_again_on_a_fresh_route(emu: Emulator, pinned: Any) -> None:
    p = pinned(emu)
    await p.open(lifetime=30)
    first = p.session.id
    emu.inject("session_lost")  # the worker forgets the session: 410 from now on
    answer = await p.generate()
    assert answer.text and answer.route.session_id != first
    assert answer.route.attempts == 2 and answer.route.route_calls == 1
    statuses = [r.status for r in model_calls(emu)]
    assert statuses == [410, 200]
    lost = p.kinds("lost")
    assert len(lost) == 1 and "410" in (lost[0].error or "")
    assert "lost" in lost[0].describe() and "making a new one" in lost[0].describe()
    assert len(p.kinds("created")) == 2 and p.session.sessions_made == 2
    assert [s.session_id for s in emu.sessions()] == [p.session.id]
    # The conversation goes on in the new session.
    again = await p.generate()
    assert again.route.session_id == p.session.id and again.route.route_calls == 0
    await p.close()
    assert emu.sessions() == []


async def test_a_worker_that_is_gone_costs_only_the_session(pinned: Any) -> None:
    with Emulator(api="tgi", workers=2).serve() as emu:
        p = pinned(emu)
        await p.open()
        gone = p.session.worker_url
        emu.stop_worker(emu.sessions()[0].worker)
        answer = await p.generate()
        assert answer.route.worker_url != gone and answer.route.session_id == p.session.id
        assert "cannot reach session worker" in (p.kinds("lost")[0].error or "")
        await p.close()
        assert emu.sessions() == []


async def test_a_failure_before_the_answer_leaves_the_session_for_a_new_one(
    emu: Emulator, pinned: Any
) -> None:
    p = pinned(emu)
    await p.open()
    old = p.session.id
    emu.inject("worker_500")
    answer = await p.generate()
    assert answer.route.session_id != old and answer.route.attempts == 2
    # The session on the failing worker was ended, not left to expire.
    assert [s.session_id for s in emu.sessions()] == [p.session.id]
    assert "/session/end" in [r.path for r in emu.worker_requests]
    await p.close()


async def test_without_recreate_a_lost_session_raises(emu: Emulator, pinned: Any) -> None:
    p = pinned(emu)
    await p.open(recreate=False)
    emu.inject("session_lost")
    with pytest.raises(WorkerError) as caught:
        await p.generate()
    assert caught.value.status_code == 410
    assert len(emu.route_requests) == 1
    await p.close()


async def test_nothing_is_sent_again_once_the_answer_started(emu: Emulator, pinned: Any) -> None:
    p = pinned(emu)
    await p.open()
    emu.inject("stream_cut")
    with pytest.raises(WorkerStreamError):
        await p.stream("stream", "Hello", max_tokens=20)
    assert len(model_calls(emu)) == 1 and p.session.sessions_made == 1
    await p.close()


async def test_a_session_expired_by_our_reckoning_is_replaced_without_a_410(
    emu: Emulator, pinned: Any
) -> None:
    p = pinned(emu)
    await p.open(lifetime=0.05)
    await asyncio.sleep(0.3)  # expired, and swept (every 0.1 s here)
    answer = await p.generate()
    assert answer.text and p.session.sessions_made == 2
    assert [r.status for r in model_calls(emu)] == [200]  # no 410 round trip
    await p.close()


async def test_a_call_longer_than_the_lifetime_is_cut_by_the_sweep(pinned: Any) -> None:
    # What docs/sessions.md found in the worker: a call has one lifetime from its start, then
    # the sweep ends the session and drops its calls. Hence lifetime > the longest call.
    with Emulator(api="tgi", session_gc_interval=0.05, token_delay=0.05).serve() as emu:
        p = pinned(emu)
        await p.open(lifetime=0.2)
        with pytest.raises(WorkerStreamError):
            await p.stream("stream", "Hello", max_tokens=40)
        assert len(model_calls(emu)) == 1  # not sent again
        # The next call finds the session gone and makes a new one.
        assert (await p.generate(max_tokens=2)).text
        assert p.session.sessions_made == 2
        await p.close()


async def test_a_whole_answer_longer_than_the_lifetime_is_not_sent_again(pinned: Any) -> None:
    with Emulator(api="tgi", session_gc_interval=0.05).serve() as emu:
        p = pinned(emu)
        await p.open(lifetime=0.2)
        emu.inject("slow_first_token", delay=1.0)
        # The sweep drops the call before any answer: a new session would cut it again.
        with pytest.raises(VastConnectionError, match=r"past the session's lifetime of 0\.2s"):
            await p.generate()
        assert len(model_calls(emu)) == 1
        await p.close()


async def test_a_full_worker_is_retried_on_a_fresh_route_then_refused(pinned: Any) -> None:
    with Emulator(api="tgi", workers=1, max_sessions=1).serve() as emu:
        first, second = pinned(emu), pinned(emu, max_retries=1)
        await first.open()
        with pytest.raises(WorkerError) as caught:
            await second.open()
        assert caught.value.status_code == 429 and "after 2 attempts" in str(caught.value)
        assert [r.status for r in emu.worker_requests].count(429) == 2
        await first.close()
        await second.open()  # the slot is free again
        assert (await second.generate()).route.session_id == second.session.id
        await second.close()


class Boom(Exception):
    pass


async def test_the_block_ends_the_session_when_it_raises(emu: Emulator, flavor: str) -> None:
    def sync_run() -> None:
        client = VastClient(emu.endpoint, api_key=emu.api_key, base_url=emu.base_url)
        with client, client.session() as session:
            session.generate("Hi", max_tokens=2)
            raise Boom

    async def async_run() -> None:
        http = pytest.importorskip("aiohttp").ClientSession() if flavor == "aiohttp" else None
        client = AsyncVastClient(
            emu.endpoint, api_key=emu.api_key, base_url=emu.base_url, http_client=http
        )
        try:
            async with client, client.session() as session:
                await session.generate("Hi", max_tokens=2)
                raise Boom
        finally:
            if http is not None:
                await http.close()

    with pytest.raises(Boom):
        await (asyncio.to_thread(sync_run) if flavor == "sync" else async_run())
    assert emu.sessions() == [] and emu.worker_requests[-1].path == "/session/end"


async def test_concurrent_calls_that_lose_the_session_keep_one_new_session(
    emu: Emulator,
) -> None:
    client = AsyncVastClient(emu.endpoint, api_key=emu.api_key, base_url=emu.base_url, backoff=FAST)
    async with client, client.session() as session:
        emu.inject("session_lost")
        answers = await asyncio.gather(*[session.generate("Hi", max_tokens=2) for _ in range(6)])
        assert all(a.text for a in answers)
        # Several calls may have made a new session at once: one was kept, the spares were
        # ended, and every later call uses the one kept.
        assert [s.session_id for s in emu.sessions()] == [session.id]
        later = await session.generate("Hi", max_tokens=2)
        assert later.route.session_id == session.id
    assert emu.sessions() == []


def test_sync_session_from_threads(emu: Emulator) -> None:
    from concurrent.futures import ThreadPoolExecutor

    client = VastClient(emu.endpoint, api_key=emu.api_key, base_url=emu.base_url)
    with client, client.session() as session, ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda i: session.generate(f"Hi {i}", max_tokens=2), range(8)))
        assert {a.route.session_id for a in answers} == {session.id}
    assert len(emu.route_requests) == 1 and emu.sessions() == []


def test_settings_and_types(emu: Emulator) -> None:
    with VastClient(emu.endpoint, api_key=emu.api_key, base_url=emu.base_url, cost=42) as client:
        session = client.session()
        assert isinstance(session, VastSession) and session.lifetime == 300.0
        assert session.id is None and "not open" in repr(session)
        for bad in (0, -1, float("inf"), "60", True):
            with pytest.raises(ConfigError, match="lifetime"):
                client.session(lifetime=bad)
        with pytest.raises(ConfigError, match="cost"):
            client.session(cost=-1)
        with session:
            # The client's cost setting is the session's reservation on its worker.
            assert emu.sessions()[0].load == 42.0
            assert session.id is not None and session.id not in repr(session)
    flat = VastClient("e", api_key="k", base_url="http://127.0.0.1:9", payload_format="flat")
    with pytest.raises(ConfigError, match="wrapped"):
        flat.session()
    assert isinstance(AsyncVastClient("e", api_key="k").session(), AsyncVastSession)


def test_a_closed_client_cannot_end_its_session_and_says_so(
    emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    client = VastClient(emu.endpoint, api_key=emu.api_key, base_url=emu.base_url)
    session = client.session(lifetime=30).open()
    client.close()
    with caplog.at_level(logging.WARNING, logger="vast_llm"):
        session.close()
    assert "could not end the session" in caplog.text and "expires" in caplog.text
    assert session.closed
    assert len(emu.sessions()) == 1  # left to the worker's sweep


async def test_a_worker_without_session_routes_is_a_clear_error() -> None:
    import httpx

    emu = Emulator(api="tgi")
    inner = emu.asgi_transport()

    class OldWorker(httpx.AsyncBaseTransport):
        """Workers of a framework from before sessions: no /session/* routes."""

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path.startswith("/session/"):
                return httpx.Response(404, text="Not Found")
            return await inner.handle_async_request(request)

    async with httpx.AsyncClient(transport=OldWorker()) as http:
        client = AsyncVastClient(
            emu.endpoint, api_key=emu.api_key, base_url=emu.base_url, http_client=http
        )
        with pytest.raises(WorkerError, match="no /session/create route") as caught:
            async with client.session():
                pass
        assert caught.value.status_code == 404
        # Not retried: one route, one create.
        assert len(emu.route_requests) == 1


async def test_the_generic_request_and_embeddings_go_to_the_session(flavor: str) -> None:
    with Emulator(api="openai", workers=2).serve() as emu:
        options: dict[str, Any] = {
            "api_key": emu.api_key,
            "base_url": emu.base_url,
            "api": "openai",
        }
        chat = {"messages": MESSAGES, "max_tokens": 3}
        texts = ["red apples", "green pears", "blue sky"]
        if flavor == "sync":

            def run() -> list[Any]:
                client = VastClient(emu.endpoint, **options)
                with client, client.session() as session:
                    answer = session.request("/v1/chat/completions", chat)
                    with session.request(
                        "/v1/chat/completions", {**chat, "stream": True}, stream=True
                    ) as events:
                        streamed = list(events)
                    vectors = session.embed(texts, batch_size=2)
                    batches = list(session.iter_embed(texts, batch_size=1))
                    ranked = session.rerank("apples", texts, top_n=1)
                    scores = session.score("apples", texts)
                    return [answer, streamed, vectors, batches, ranked, scores]

            results = await asyncio.to_thread(run)
        else:
            http = pytest.importorskip("aiohttp").ClientSession() if flavor == "aiohttp" else None
            aclient = AsyncVastClient(emu.endpoint, http_client=http, **options)
            async with aclient, aclient.session() as asession:
                answer = await asession.request("/v1/chat/completions", chat)
                events = await asession.request(
                    "/v1/chat/completions", {**chat, "stream": True}, stream=True
                )
                async with events:
                    streamed = [event async for event in events]
                vectors = await asession.embed(texts, batch_size=2)
                batches = [b async for b in asession.iter_embed(texts, batch_size=1)]
                ranked = await asession.rerank("apples", texts, top_n=1)
                scores = await asession.score("apples", texts)
                results = [answer, streamed, vectors, batches, ranked, scores]
            if http is not None:
                await http.close()
        answer, streamed, vectors, batches, ranked, scores = results
        assert answer.json()["choices"] and streamed
        assert len(vectors.vectors) == 3 and len(batches) == 3
        assert ranked.results[0].index == 0 and len(scores.scores) == 3
        calls = model_calls(emu)
        # 2 chat calls, 2 + 3 embedding batches, a rerank, a score: all in the one session.
        assert len(calls) == 9 and len(emu.route_requests) == 1
        assert len({r.json["session_id"] for r in calls}) == 1 and None not in {
            r.json["session_id"] for r in calls
        }
        assert emu.sessions() == []
