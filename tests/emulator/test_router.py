"""The emulated autoscaler on the wire: /route/, /pubkey/ and the console stub."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from tests import loopback
from vast_llm._signing import load_public_key, verify
from vast_llm.emulator import Emulator


def route(emu: Emulator, body: dict[str, Any] | None = None, **kwargs: Any) -> httpx.Response:
    payload = (
        {"endpoint": emu.endpoint, "api_key": emu.api_key, "cost": 256} if body is None else body
    )
    return loopback.post(emu.base_url + "/route/", json=payload, **kwargs)


def test_ready_answer_is_signed_and_complete(tgi: Emulator) -> None:
    answer = route(tgi).json()
    assert set(answer) == {
        "endpoint",
        "url",
        "cost",
        "reqnum",
        "request_idx",
        "__request_id",
        "signature",
    }
    assert answer["url"] in tgi.worker_urls() and answer["cost"] == 256.0
    assert isinstance(answer["cost"], float)  # the router re-types cost, as production does
    key = load_public_key(loopback.get(tgi.base_url + "/pubkey/").text)
    assert verify(key, answer, ("g3",)) == "g3"


@pytest.mark.parametrize("where", ["body", "bearer", "query"])
def test_the_key_is_accepted_in_body_bearer_or_query(tgi: Emulator, where: str) -> None:
    body: dict[str, Any] = {"endpoint": tgi.endpoint, "cost": 1}
    kwargs: dict[str, Any] = {}
    if where == "body":
        body["api_key"] = tgi.api_key
    elif where == "bearer":
        kwargs["headers"] = {"Authorization": f"Bearer {tgi.api_key}"}
    else:
        kwargs["params"] = {"api_key": tgi.api_key}
    assert "url" in route(tgi, body, **kwargs).json()


@pytest.mark.parametrize(
    ("body", "status", "shape"),
    [
        ({"endpoint": "emulated-endpoint", "api_key": "wrong", "cost": 1}, 401, "error"),
        ({"api_key": "KEY", "cost": 1}, 400, "error"),
        ({"endpoint": "emulated-endpoint", "api_key": "KEY", "cost": -1}, 400, "error"),
        ({"endpoint": "nope", "api_key": "KEY", "cost": 1}, 400, "error_msg"),
    ],
)
def test_refusals(tgi: Emulator, body: dict[str, Any], status: int, shape: str) -> None:
    body = {k: tgi.api_key if v == "KEY" else v for k, v in body.items()}
    response = route(tgi, body)
    assert response.status_code == status and shape in response.json()


def test_invalid_json_is_400(tgi: Emulator) -> None:
    response = loopback.post(tgi.base_url + "/route/", content=b"{nope")
    assert response.status_code == 400


def test_reqnum_is_monotonic_per_worker_and_request_idx_stable(tgi: Emulator) -> None:
    answers = [route(tgi).json() for _ in range(6)]
    for url in tgi.worker_urls():
        reqnums = [a["reqnum"] for a in answers if a["url"] == url]
        assert reqnums == sorted(reqnums) and len(set(reqnums)) == len(reqnums)
    assert len({a["request_idx"] for a in answers}) == 6  # a new index per logical request
    again = route(
        tgi,
        {
            "endpoint": tgi.endpoint,
            "api_key": tgi.api_key,
            "cost": 1,
            "request_idx": answers[0]["request_idx"],
        },
    ).json()
    assert again["request_idx"] == answers[0]["request_idx"]


def test_not_ready_answer(tgi: Emulator) -> None:
    tgi.inject("not_ready")
    answer = route(tgi).json()
    assert "url" not in answer and answer["status"].startswith("no worker ready")
    assert isinstance(answer["request_idx"], int)


def test_cold_start_states_progress() -> None:
    with Emulator(cold_start=0.6).serve() as emu:
        seen = []
        for _ in range(40):
            answer = route(emu).json()
            seen.append(answer.get("status") or "ready")
            if "url" in answer:
                break
            asyncio.run(asyncio.sleep(0.03))
        assert seen[-1] == "ready"
        states = " ".join(seen)
        # Vast's names for the states (protocol.md §9)
        assert "1 Creating" in states and "1 Loading" in states and "1 Model Loading" in states


async def test_least_loaded_worker_is_chosen() -> None:
    with Emulator(workers=2, token_delay=0.05).serve() as emu:
        first = route(emu).json()
        # While the first assignment is pending, the other worker is less loaded.
        second = route(emu).json()
        assert first["url"] != second["url"]


def test_stopped_endpoint(tgi: Emulator) -> None:
    # The endpoint itself, not a cold worker's "Stopped": clients fail fast on this one only.
    tgi.set_stopped(True)
    assert route(tgi).json()["status"] == "endpoint stopped"
    tgi.set_stopped(False)
    tgi.inject("stopped")
    assert route(tgi).json()["status"] == "endpoint stopped"
    assert "url" in route(tgi).json()


def test_pubkey_is_spki_pem(tgi: Emulator) -> None:
    response = loopback.get(tgi.base_url + "/pubkey/")
    assert response.text.startswith("-----BEGIN PUBLIC KEY-----")
    assert response.text == tgi.public_key_pem


def test_console_lists_endpoints_for_the_vastai_sdk(tgi: Emulator) -> None:
    response = loopback.get(tgi.base_url + "/api/v0/endptjobs/", params={"api_key": tgi.api_key})
    result = response.json()["results"][0]
    assert result["endpoint_name"] == tgi.endpoint and result["api_key"] == tgi.api_key
    assert {"id", "user_id", "created_at"} <= set(result)
    assert loopback.get(tgi.base_url + "/api/v0/endptjobs/").status_code == 401


def test_several_endpoints_share_one_router() -> None:
    emu = Emulator(api="tgi")
    emu.add_endpoint("chat", api="openai", workers=2)
    with emu.serve():
        tgi_answer = route(emu).json()
        chat_answer = route(emu, {"endpoint": "chat", "api_key": emu.api_key, "cost": 1}).json()
        assert tgi_answer["url"] in emu.worker_urls(emu.endpoint)
        assert chat_answer["url"] in emu.worker_urls("chat")
        assert len(emu.worker_urls()) == 3


def test_requests_are_recorded(tgi: Emulator) -> None:
    route(tgi)
    recorded = tgi.requests[-1]
    assert recorded.target == "route" and recorded.json["api_key"] == tgi.api_key
    assert json.loads(recorded.response)["url"] in tgi.worker_urls()


def test_emulator_binds_loopback_only(tgi: Emulator) -> None:
    assert tgi.base_url.startswith("http://127.0.0.1:")
    assert all(url.startswith("http://127.0.0.1:") for url in tgi.worker_urls())


async def test_in_process_mode_for_fast_async_tests() -> None:
    from vast_llm import AsyncVastClient

    emu = Emulator(api="openai", workers=2, faults=["worker_500"])
    transport = emu.asgi_transport()
    async with (
        httpx.AsyncClient(transport=transport) as http,
        AsyncVastClient(
            emu.endpoint, api_key=emu.api_key, base_url=emu.base_url, api="openai", http_client=http
        ) as client,
    ):
        answer = await client.chat([{"role": "user", "content": "hi"}], max_tokens=4)
        assert answer.usage.completion_tokens == 4 and answer.route.attempts == 2
        async with client.stream_chat([{"role": "user", "content": "hi"}], max_tokens=4) as s:
            assert "".join([c.text async for c in s]) == answer.text
    assert len(emu.worker_requests) == 3 and answer.route.verified


def test_recipe_per_worker() -> None:
    with Emulator(workers=2, recipe=["g3", "g1"]).serve() as emu:
        assert [w.recipe for w in emu.workers] == ["g3", "g1"]
        key = load_public_key(emu.public_key_pem)
        recipes = set()
        for _ in range(4):
            answer = route(emu).json()
            recipes.add(verify(key, answer))
        assert recipes == {"g3", "g1"}


def test_an_abandoned_slow_route_call_takes_no_later_fault(tgi: Emulator) -> None:
    from vast_llm.emulator import Fault

    tgi.inject(Fault("route_timeout", delay=0.5))
    with pytest.raises(httpx.ReadTimeout):
        loopback.post(
            tgi.base_url + "/route/",
            timeout=0.1,
            json={"endpoint": tgi.endpoint, "api_key": tgi.api_key, "cost": 1},
        )
    tgi.inject("missing_signature")
    asyncio.run(asyncio.sleep(0.8))  # the abandoned handler wakes up meanwhile
    assert "signature" not in route(tgi).json()  # the fault is still there for this call


def test_the_request_log_keeps_the_most_recent() -> None:
    """A long-running emulator keeps a bounded log (load tests, benchmarks)."""
    with Emulator(log_limit=4).serve() as emu:
        for cost in range(6):
            loopback.post(
                emu.base_url + "/route/",
                json={"endpoint": emu.endpoint, "api_key": emu.api_key, "cost": cost},
            )
        costs = [json.loads(r.body)["cost"] for r in emu.requests]
        assert costs == [2, 3, 4, 5]
