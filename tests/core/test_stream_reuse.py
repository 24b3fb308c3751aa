"""A streamed answer read to its final event leaves its connection in the pool (the next call
to that worker needs no new TCP and TLS handshake), on every driver; a server that talks on or
holds the connection after its final event is cut within a bounded time."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from vast_llm import AsyncVastClient, VastClient, VastSecurityWarning
from vast_llm.emulator import Emulator
from vast_llm.emulator._server import Servers, bind_loopback

MESSAGES = [{"role": "user", "content": "Hello"}]


def worker_ports(emu: Emulator) -> list[int]:
    return [r.client[1] for r in emu.worker_requests if r.client is not None]


@pytest.mark.parametrize("api", ["openai", "tgi"])
async def test_streams_leave_their_connection_for_the_next_call(api: str) -> None:
    aiohttp = pytest.importorskip("aiohttp")
    with Emulator(api=api, tls=True).serve() as emu:
        options: dict[str, Any] = {
            "api_key": emu.api_key,
            "base_url": emu.base_url,
            "api": api,
            "worker_ca": emu.worker_ca,
        }

        def sync_calls() -> None:
            with VastClient(emu.endpoint, **options) as client:
                for _ in range(3):
                    with client.stream_chat(MESSAGES, max_tokens=4) as stream:
                        assert "".join(chunk.text for chunk in stream)

        await asyncio.to_thread(sync_calls)
        async with AsyncVastClient(emu.endpoint, **options) as aclient:
            for _ in range(3):
                async with aclient.stream_chat(MESSAGES, max_tokens=4) as astream:
                    assert "".join([chunk.text async for chunk in astream])
        async with aiohttp.ClientSession() as http:
            native = AsyncVastClient(emu.endpoint, http_client=http, **options)
            for _ in range(3):
                async with native.stream(MESSAGES[0]["content"], max_tokens=4) as astream:
                    assert "".join([chunk.text async for chunk in astream])
        ports = worker_ports(emu)
        # One connection per client: three calls each, no new handshake after the first.
        assert len(ports) == 9 and len(set(ports)) == 3
        assert ports[0:3] == ports[:1] * 3 and ports[3:6] == ports[3:4] * 3


def _final_event() -> str:
    event = {
        "token": {"text": " end", "special": False},
        "generated_text": "start end",
        "details": {"finish_reason": "eos_token", "generated_tokens": 2},
    }
    return "data:" + json.dumps(event) + "\n\n"


@pytest.fixture(scope="module")
def talker() -> Iterator[str]:
    """A worker whose streams do not end after their final event: ``/hold`` keeps the
    connection open and silent, ``/chatter`` sends events on and on."""

    async def route(request: Request) -> Response:
        kind = (await request.json())["endpoint"]  # the endpoint's name says which
        url = f"http://{request.url.netloc}/{kind}"
        return JSONResponse(
            {
                "endpoint": kind,
                "url": url,
                "cost": 1.0,
                "reqnum": 1,
                "request_idx": 1,
                "signature": "",
            }
        )

    async def stream(request: Request) -> Response:
        chatter = request.url.path.startswith("/chatter")

        async def frames() -> AsyncIterator[str]:
            first = {"token": {"text": "start", "special": False}}
            yield "data:" + json.dumps(first) + "\n\n"
            yield _final_event()
            if chatter:
                while True:
                    yield "data:" + json.dumps(first) + "\n\n"
                    await asyncio.sleep(0.01)
            await asyncio.sleep(30)

        return StreamingResponse(frames(), media_type="text/event-stream")

    app = Starlette(
        routes=[
            Route("/route/", route, methods=["POST"]),
            Route("/{kind}/generate_stream", stream, methods=["POST"]),
        ]
    )
    sock = bind_loopback(0)
    servers = Servers()
    servers.start([(app, sock)])
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    servers.stop()


async def test_whole_answers_leave_their_connection_for_the_next_call() -> None:
    # The same for answers read whole (the aiohttp driver reads a plain body in one call and
    # gives the connection back there).
    aiohttp = pytest.importorskip("aiohttp")
    with Emulator(tls=True).serve() as emu:
        options: dict[str, Any] = {
            "api_key": emu.api_key,
            "base_url": emu.base_url,
            "worker_ca": emu.worker_ca,
        }

        def sync_calls() -> None:
            with VastClient(emu.endpoint, **options) as client:
                for _ in range(3):
                    assert client.generate("Hello", max_tokens=4).text

        await asyncio.to_thread(sync_calls)
        async with AsyncVastClient(emu.endpoint, **options) as aclient:
            for _ in range(3):
                assert (await aclient.generate("Hello", max_tokens=4)).text
        async with aiohttp.ClientSession() as http:
            native = AsyncVastClient(emu.endpoint, http_client=http, **options)
            for _ in range(3):
                assert (await native.generate("Hello", max_tokens=4)).text
        ports = worker_ports(emu)
        assert len(ports) == 9 and len(set(ports)) == 3
        assert ports[0:3] == ports[:1] * 3 and ports[3:6] == ports[3:4] * 3


@pytest.mark.parametrize("kind", ["hold", "chatter"])
@pytest.mark.parametrize("driver", ["sync", "async", "aiohttp"])
async def test_a_stream_that_does_not_end_after_its_final_event_is_cut(
    talker: str, kind: str, driver: str
) -> None:
    options: dict[str, Any] = {"api_key": "k", "signature_policy": "off", "base_url": talker}
    texts: list[str] = []
    if driver == "sync":
        with pytest.warns(VastSecurityWarning):
            client = VastClient(kind, **options)

        def read() -> None:
            with client, client.stream("Hi", max_tokens=4) as stream:
                texts.append("".join(chunk.text for chunk in stream))

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        thread.join(10)  # the drain gives up after about a second; 30 s would mean it waited
        assert not thread.is_alive()
    else:
        aiohttp = pytest.importorskip("aiohttp") if driver == "aiohttp" else None
        http = aiohttp.ClientSession() if aiohttp is not None else None
        with pytest.warns(VastSecurityWarning):
            aclient = AsyncVastClient(kind, http_client=http, **options)

        async def aread() -> None:
            async with aclient, aclient.stream("Hi", max_tokens=4) as astream:
                texts.append("".join([chunk.text async for chunk in astream]))

        await asyncio.wait_for(aread(), 10)
        if http is not None:
            await http.close()
    assert texts == ["start end"]
