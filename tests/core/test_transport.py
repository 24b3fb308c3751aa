"""VastTransport: any httpx-based SDK reaches a Vast endpoint; here the official openai SDK."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.conftest import FAST, settings_for
from vast_llm import AsyncVastTransport, AuthenticationError, RouteInfo, VastTransport
from vast_llm.emulator import Emulator

SDK_KEY = "sk-this-must-never-leave-the-process"


def sdk(emu: Emulator, **overrides: object) -> openai.OpenAI:
    transport = VastTransport(**settings_for(emu, **overrides))
    return openai.OpenAI(
        base_url="http://vast.invalid/v1",
        api_key=SDK_KEY,
        max_retries=0,
        http_client=httpx.Client(transport=transport),
    )


def async_sdk(emu: Emulator, **overrides: object) -> openai.AsyncOpenAI:
    transport = AsyncVastTransport(**settings_for(emu, **overrides))
    return openai.AsyncOpenAI(
        base_url="http://vast.invalid/v1",
        api_key=SDK_KEY,
        max_retries=0,
        http_client=httpx.AsyncClient(transport=transport),
    )


MESSAGES = [{"role": "user", "content": "Hello"}]


def assert_clean_worker_requests(emu: Emulator) -> None:
    assert emu.worker_requests
    for request in emu.worker_requests:
        assert SDK_KEY not in request.text and SDK_KEY not in json.dumps(request.headers)
        assert emu.api_key not in request.text and emu.api_key not in json.dumps(request.headers)
        assert "auth_data" in request.json and request.json["session_id"] is None


def test_openai_sdk_chat_and_completions(openai_emu: Emulator) -> None:
    client = sdk(openai_emu)
    chat = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=5)
    assert chat.choices[0].message.content and chat.usage.completion_tokens == 5
    assert chat.model == "m"  # the emulated server echoes the requested model, like vLLM
    completion = client.completions.create(model="m", prompt="Say", max_tokens=4)
    assert completion.choices[0].text and completion.usage.completion_tokens == 4
    assert [r.json["cost"] for r in openai_emu.route_requests] == [5.0, 4.0]
    assert_clean_worker_requests(openai_emu)


def test_openai_sdk_streaming_with_usage(openai_emu: Emulator) -> None:
    client = sdk(openai_emu)
    whole = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=6)
    stream = client.chat.completions.create(
        model="m",
        messages=MESSAGES,
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
    assert_clean_worker_requests(openai_emu)


def test_route_facts_ride_along(openai_emu: Emulator) -> None:
    raw = sdk(openai_emu).chat.completions.with_raw_response.create(
        model="m", messages=MESSAGES, max_tokens=3
    )
    route = raw.http_response.extensions["vast_route"]
    assert (
        isinstance(route, RouteInfo)
        and route.verified
        and route.worker_url in (openai_emu.worker_urls())
    )


def test_retried_before_the_first_byte(openai_emu: Emulator) -> None:
    openai_emu.inject("worker_500")
    chat = sdk(openai_emu).chat.completions.create(model="m", messages=MESSAGES, max_tokens=3)
    assert chat.choices[0].message.content
    assert len(openai_emu.worker_requests) == 2


def test_worker_error_reaches_the_sdk_as_its_own_error(openai_emu: Emulator) -> None:
    openai_emu.inject("worker_422")
    with pytest.raises(openai.UnprocessableEntityError) as info:
        sdk(openai_emu).chat.completions.create(model="m", messages=MESSAGES, max_tokens=3)
    assert info.value.body == "emulated validation failure"  # the SDK unwraps "error"
    assert len(openai_emu.worker_requests) == 1


def test_route_failure_reaches_the_caller_as_our_typed_error(openai_emu: Emulator) -> None:
    # The SDK lets non-httpx errors from its transport through: the caller sees ours.
    with pytest.raises(AuthenticationError):
        sdk(openai_emu, api_key="wrong").chat.completions.create(model="m", messages=MESSAGES)
    assert not openai_emu.worker_requests


async def test_async_openai_sdk_streaming(openai_emu: Emulator) -> None:
    client = async_sdk(openai_emu)
    chat = await client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=4)
    stream = await client.chat.completions.create(
        model="m", messages=MESSAGES, max_tokens=4, stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == chat.choices[0].message.content
    await client.close()
    assert_clean_worker_requests(openai_emu)


def test_plain_httpx_to_a_tgi_endpoint(tgi: Emulator) -> None:
    transport = VastTransport(**settings_for(tgi))
    with httpx.Client(transport=transport, base_url="http://vast.invalid") as client:
        response = client.post(
            "/generate",
            json={"inputs": "hi", "parameters": {"max_new_tokens": 3}},
            headers={
                "Authorization": "Bearer should-be-dropped",
                "X-Request-Id": "kept",
                "X-Trace": "not on the allow-list",
            },
        )
        assert response.status_code == 200 and response.json()["generated_text"]
        with client.stream(
            "POST", "/generate_stream", json={"inputs": "hi", "parameters": {"max_new_tokens": 3}}
        ) as stream:
            body = stream.read().decode()
        assert body.count("data:") == 3
    worker = tgi.worker_requests[0]
    assert worker.headers["x-request-id"] == "kept" and "authorization" not in worker.headers
    assert "x-trace" not in worker.headers  # workers get only what describes the request
    assert tgi.route_requests[0].json["cost"] == 3.0
    assert FAST.base < 1
