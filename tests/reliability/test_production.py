"""The client against the emulator in production's shape: HTTPS workers under their own CA,
workers that scale to zero, and progress events while a request waits.

Each driver (sync and async httpx, an aiohttp session, and both transports) wires worker trust
itself, so trust and refusal run on every driver; the rest, decided by the flow (proven without
sockets in tests/core/test_flow.py), runs on a few drivers in turn."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import FAST
from vast_llm import (
    AsyncVastClient,
    AsyncVastTransport,
    EndpointStopped,
    NoWorkerReady,
    Progress,
    VastClient,
    VastTimeout,
    VastTransport,
    WorkerCertificateError,
    observe,
    ssl_context,
)
from vast_llm.emulator import Emulator, Fault

DRIVERS = ["sync", "async", "aiohttp", "transport", "async_transport"]


def settings(emu: Emulator, **overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "endpoint": emu.endpoint,
        "api_key": emu.api_key,
        "base_url": emu.base_url,
        "backoff": FAST,
        "deadline": 15.0,
        "api": "openai",
    }
    kwargs.update(overrides)
    return kwargs


async def call(driver: str, emu: Emulator, **overrides: Any) -> str:
    """One completion through ``driver``; returns its text (or raises what the driver raised)."""
    kwargs = settings(emu, **overrides)
    body = {"prompt": "Hello", "max_tokens": 3}
    if driver == "sync":

        def run() -> str:
            with VastClient(**kwargs) as client:
                return client.generate("Hello", max_tokens=3).text

        return await asyncio.to_thread(run)
    if driver == "async":
        async with AsyncVastClient(**kwargs) as client:
            return (await client.generate("Hello", max_tokens=3)).text
    if driver == "aiohttp":
        import aiohttp

        async with aiohttp.ClientSession() as session:
            client = AsyncVastClient(**kwargs, http_client=session)
            return (await client.generate("Hello", max_tokens=3)).text
    kwargs.pop("api")
    if driver == "transport":

        def relay() -> str:
            with httpx.Client(transport=VastTransport(**kwargs), base_url="http://vast") as http:
                answer = http.post("/v1/completions", json=body)
                return str(answer.json()["choices"][0]["text"])

        return await asyncio.to_thread(relay)
    async with httpx.AsyncClient(
        transport=AsyncVastTransport(**kwargs), base_url="http://vast"
    ) as http:
        answer = await http.post("/v1/completions", json=body)
        return str(answer.json()["choices"][0]["text"])


@pytest.fixture(scope="module")
def tls_emu() -> Iterator[Emulator]:
    with Emulator(api="both", workers=2, tls=True).serve() as emu:
        yield emu


@pytest.fixture
def https(tls_emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    tls_emu.reset()
    monkeypatch.delenv("VAST_WORKER_CA", raising=False)
    return tls_emu


# -- HTTPS workers ----------------------------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
async def test_https_workers_verified_against_the_given_worker_ca(
    https: Emulator, driver: str
) -> None:
    assert await call(driver, https, worker_ca=https.worker_ca)
    assert all(r.target == "worker" for r in https.worker_requests)
    assert str(https.worker_requests[-1].headers.get("host", "")).startswith("127.0.0.1")


@pytest.mark.parametrize("driver", ["async", "transport"])
async def test_the_worker_ca_comes_from_the_environment(
    https: Emulator, driver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert https.worker_ca_file is not None
    monkeypatch.setenv("VAST_WORKER_CA", https.worker_ca_file)
    assert await call(driver, https)


@pytest.mark.parametrize("driver", DRIVERS)
async def test_a_worker_outside_the_worker_ca_fails_fast_and_gets_nothing(
    https: Emulator, driver: str
) -> None:
    # The default trust is Vast's bundled root, which did not issue the emulator's leaves.
    started = time.monotonic()
    with pytest.raises(WorkerCertificateError, match="worker_ca") as info:
        await call(driver, https)
    assert time.monotonic() - started < 5  # not retried, not waited out
    assert "VAST_WORKER_CA" in str(info.value) and https.api_key not in str(info.value)
    assert not https.worker_requests  # the handshake failed before any request byte
    assert len(https.route_requests) == 1


@pytest.mark.parametrize("driver", ["sync", "aiohttp", "async_transport"])
async def test_an_impostor_with_a_foreign_ca_gets_no_bytes(https: Emulator, driver: str) -> None:
    https.inject("foreign_ca")
    with pytest.raises(WorkerCertificateError):
        await call(driver, https, worker_ca=https.worker_ca)
    assert not https.impostor_requests


def test_a_users_own_http_client_with_the_helpers_context(https: Emulator) -> None:
    assert https.worker_ca is not None
    with httpx.Client(verify=ssl_context(https.worker_ca)) as http:
        client = VastClient(**settings(https), http_client=http)
        assert client.generate("Hello", max_tokens=3).text
    with httpx.Client() as plain, pytest.raises(WorkerCertificateError, match="ssl_context"):
        VastClient(**settings(https), http_client=plain).generate("Hello", max_tokens=3)


def test_router_and_workers_keep_two_trust_decisions(https: Emulator) -> None:
    client = VastClient(**settings(https, worker_ca=https.worker_ca))
    router, worker = client._pools()
    router_ctx = router._transport._pool._ssl_context  # type: ignore[attr-defined]
    worker_ctx = worker._transport._pool._ssl_context  # type: ignore[attr-defined]
    assert router_ctx is not worker_ctx
    # The router's context is httpx's default (certifi); the workers' trusts one CA only.
    assert len(worker_ctx.get_ca_certs()) == 1 and len(router_ctx.get_ca_certs()) > 10
    client.close()


# -- scale to zero ----------------------------------------------------------------------------


@pytest.fixture
def cold() -> Iterator[Emulator]:
    with Emulator(api="both", cold_workers=True, activation_delay=0.6).serve() as emu:
        yield emu


@pytest.mark.parametrize("driver", ["sync", "aiohttp", "async_transport"])
async def test_a_cold_endpoint_is_waited_for_and_the_wait_is_visible(
    cold: Emulator, driver: str
) -> None:
    seen: list[Progress] = []
    with observe(seen.append):
        assert await call(driver, cold)
    kinds = [p.kind for p in seen]
    assert kinds[0] == "waiting" and "Stopped" in str(seen[0].status)
    assert kinds[-3:] == ["routed", "verified", "answering"]
    assert all(p.endpoint == cold.endpoint for p in seen)
    elapsed = [p.elapsed for p in seen]
    assert elapsed == sorted(elapsed)


@pytest.mark.parametrize("driver", ["async", "transport"])
async def test_a_stopped_endpoint_fails_fast(cold: Emulator, driver: str) -> None:
    cold.set_stopped(True)
    started = time.monotonic()
    with pytest.raises(EndpointStopped, match="started again"):
        await call(driver, cold)
    assert time.monotonic() - started < 5


async def test_the_deadline_error_names_the_states_seen(cold: Emulator) -> None:
    cold.set_worker_state(0, "error")
    with pytest.raises(NoWorkerReady, match=r"statuses seen: .*Error"):
        await call("async", cold, deadline=1.5)  # room for a busy machine


def test_defaults_cover_a_cold_start_and_the_workers_queue() -> None:
    client = VastClient("ep", api_key="k" * 20)
    # A documented first start takes 3-5 minutes and a worker may queue a request 600 s.
    assert client.settings.deadline >= 5 * 60 + 600
    assert client.settings.timeout.read is not None and client.settings.timeout.read >= 600
    client.close()


# -- progress listeners -----------------------------------------------------------------------


def test_on_progress_sees_every_request_of_the_client(cold: Emulator) -> None:
    seen: list[str] = []
    with VastClient(**settings(cold, on_progress=lambda p: seen.append(p.kind))) as client:
        client.generate("a", max_tokens=2)
        count = len(seen)
        client.generate("b", max_tokens=2)
    assert "waiting" in seen and seen[count:] == ["routed", "verified", "answering"]


async def test_async_listeners_are_awaited_and_broken_ones_ignored(cold: Emulator) -> None:
    heard: list[str] = []

    async def slow(p: Progress) -> None:
        await asyncio.sleep(0)
        heard.append(p.kind)

    def broken(p: Progress) -> None:
        raise RuntimeError("a progress bar bug")

    with observe(slow), observe(broken):
        assert await call("async", cold)
    assert heard[-1] == "answering"


def test_retries_are_announced(cold: Emulator) -> None:
    cold.inject(Fault("worker_500"))
    seen: list[Progress] = []
    with observe(seen.append), VastClient(**settings(cold)) as client:
        client.generate("x", max_tokens=2)
    retrying = [p for p in seen if p.kind == "retrying"]
    assert len(retrying) == 1 and "500" in str(retrying[0].error) and retrying[0].attempt == 1
    assert seen[-1].kind == "answering" and seen[-1].attempt == 2


def test_the_first_byte_is_bounded_by_the_deadline(cold: Emulator) -> None:
    with VastClient(**settings(cold, timeout=30.0)) as client:
        client.generate("warm", max_tokens=1)  # wakes the endpoint first
        cold.inject(Fault("slow_first_token", delay=1.5))
        begun = time.monotonic()
        with pytest.raises(VastTimeout):
            client.generate("x", max_tokens=2, deadline=0.5)
        assert time.monotonic() - begun < 1.4  # not the 30 s idle timeout, nor the 1.5 s
    time.sleep(1.2)  # let the emulator finish the abandoned answer before it stops


def describe_all(events: list[Progress]) -> list[str]:
    return [e.describe() for e in events]


def test_events_describe_themselves_for_people(cold: Emulator) -> None:
    seen: list[Progress] = []
    listener: Callable[[Progress], None] = seen.append
    with observe(listener), VastClient(**settings(cold)) as client:
        client.generate("x", max_tokens=2)
    lines = describe_all(seen)
    assert "waiting for a worker" in lines[0] and "Stopped" in lines[0]
    assert any("is answering" in line for line in lines)
