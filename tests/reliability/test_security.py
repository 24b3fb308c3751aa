"""Secrets: the API key appears in no worker request, repr, log line, error message, LangChain
``dumps()`` or LlamaIndex ``to_dict()`` — swept across all three packages, happy paths and
failures, with every logger at DEBUG. Quoted bodies are truncated and cleaned."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import openai
import pytest
from langchain_core.load import dumps

from langchain_vast import ChatVast, VastLLM
from llamaindex_vast import Vast
from tests.conftest import FAST
from vast_llm import RouteError, VastClient, VastError, VastTransport
from vast_llm._errors import excerpt
from vast_llm.emulator import Emulator

WRONG_KEY = "wrong-key-that-is-also-secret-0123456789"


def test_the_key_is_nowhere(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []  # every text a user or a log could show
    with Emulator(api="openai") as emu, caplog.at_level(logging.DEBUG):
        key = emu.api_key
        common = {"api_key": key, "base_url": emu.base_url, "backoff": FAST, "max_retries": 1}
        client = VastClient(emu.endpoint, api="openai", **common)
        seen += [repr(client), str(client.settings)]
        seen.append(client.chat([{"role": "user", "content": "hi"}]).text)
        with client.stream("hi") as stream:
            seen += [c.text for c in stream]
        for fault in (
            "worker_422",
            "worker_401",
            "stream_cut",
            "bad_signature",
            "route_error_msg",
            "worker_500:*",
        ):
            emu.inject(fault.split(":")[0], times=None if fault.endswith("*") else 1)
            try:
                client.generate("x")
            except VastError as exc:
                seen += [str(exc), repr(exc), repr(exc.__dict__), repr(exc.__cause__)]
            emu.clear_faults()
        for wrong in (VastClient(emu.endpoint, **{**common, "api_key": WRONG_KEY}),):
            with pytest.raises(VastError) as info:
                wrong.generate("x")
            seen += [str(info.value), repr(info.value)]
        chat = ChatVast(endpoint=emu.endpoint, **common)
        text_llm = VastLLM(endpoint=emu.endpoint, api="openai", **common)
        seen += [repr(chat), str(chat), dumps(chat), repr(text_llm), dumps(text_llm)]
        seen.append(str(chat.invoke("hi").content))
        seen.append(text_llm.invoke("hi"))
        index_llm = Vast(emu.endpoint, api="openai", **common)
        seen += [repr(index_llm), json.dumps(index_llm.to_dict()), index_llm.to_json()]
        seen.append(index_llm.complete("hi").text)
        sdk = openai.OpenAI(
            base_url="http://vast.invalid/v1",
            api_key="unused",
            max_retries=0,
            http_client=httpx.Client(transport=VastTransport(emu.endpoint, **common)),
        )
        seen.append(
            str(sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}]))
        )
        client.close()
        workers = emu.worker_requests
    assert len(workers) >= 10
    for request in workers:
        assert key not in request.text and key not in json.dumps(request.headers)
        assert "authorization" not in request.headers and "unused" not in json.dumps(
            request.headers
        )
    for text in [*seen, caplog.text]:
        assert key not in text and WRONG_KEY not in text
    assert "HTTP Request" in caplog.text  # httpx's own log lines were captured too


def test_quoted_bodies_are_short_clean_and_keyless() -> None:
    key = "k-" + "z" * 30
    nasty = ("\x1b[31mred\x00\x07 " + key + " " + "A" * 5000).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, content=nasty)

    client = VastClient(
        "ep",
        api_key=key,
        base_url="https://run.vast.ai",
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )
    with pytest.raises(RouteError) as info:
        client.generate("x")
    message = str(info.value)
    assert len(message) < 600 and key not in message and "***" in message
    assert not any(ord(ch) < 32 or ord(ch) == 127 for ch in message)
    assert len(info.value.body) <= 300


@pytest.mark.parametrize("body", ["", "x" * 1000, "\n\t\r", "é" * 400])
def test_excerpt_bounds(body: Any) -> None:
    out = excerpt(body)
    assert len(out) <= 300 and "\n" not in out and "\t" not in out
