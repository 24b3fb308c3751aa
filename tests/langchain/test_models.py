"""VastLLM and ChatVast against the emulator: callbacks, streaming, batching, usage, secrets,
errors. (ChatVast also passes LangChain's standard suites: test_standard.py.)"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.exceptions import (
    ModelAPIError,
    ModelAuthenticationError,
    ModelConnectionError,
    ModelRateLimitError,
    ModelTimeoutError,
)
from langchain_core.load import dumpd, dumps, load
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import PromptTemplate
from pydantic import BaseModel

from langchain_vast import ChatVast, VastLLM
from tests.conftest import FAST
from vast_llm import (
    AuthenticationError,
    ConfigError,
    NoWorkerReady,
    WorkerError,
    WorkerStreamError,
)
from vast_llm.emulator import Emulator, Fault


def llm_for(emu: Emulator, **kwargs: Any) -> VastLLM:
    return VastLLM(endpoint=emu.endpoint, api_key=emu.api_key, base_url=emu.base_url, **kwargs)


def chat_for(emu: Emulator, **kwargs: Any) -> ChatVast:
    return ChatVast(endpoint=emu.endpoint, api_key=emu.api_key, base_url=emu.base_url, **kwargs)


class Tokens(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)


class AsyncTokens(AsyncCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    async def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)


# -- VastLLM --------------------------------------------------------------------------------


def test_token_callbacks_match_stream_chunks(tgi: Emulator) -> None:
    llm = llm_for(tgi, max_new_tokens=7)
    handler = Tokens()
    chunks = list(llm.stream("Hello", config={"callbacks": [handler]}))
    assert handler.tokens == chunks and len(chunks) == 8  # 7 tokens and the closing chunk
    assert "".join(chunks) == llm.invoke("Hello")


async def test_token_callbacks_match_astream_chunks(tgi: Emulator) -> None:
    llm = llm_for(tgi, max_new_tokens=7)
    handler = AsyncTokens()
    chunks = [c async for c in llm.astream("Hello", config={"callbacks": [handler]})]
    assert handler.tokens == chunks and len(chunks) == 8


def test_invoke_with_streaming_goes_through_stream(tgi: Emulator) -> None:
    llm = llm_for(tgi, max_new_tokens=5, streaming=True)
    handler = Tokens()
    text = llm.invoke("Hello", config={"callbacks": [handler]})
    assert "".join(handler.tokens) == text and len(handler.tokens) == 6
    assert tgi.worker_requests[-1].path == "/generate_stream"


async def test_ainvoke_with_streaming_goes_through_astream(tgi: Emulator) -> None:
    llm = llm_for(tgi, max_new_tokens=5, streaming=True)
    handler = AsyncTokens()
    text = await llm.ainvoke("Hello", config={"callbacks": [handler]})
    assert "".join(handler.tokens) == text and len(handler.tokens) == 6
    assert tgi.worker_requests[-1].path == "/generate_stream"


async def test_astream_events_one_llm_stream_event_per_chunk(tgi: Emulator) -> None:
    llm = llm_for(tgi, max_new_tokens=6)
    chain = PromptTemplate.from_template("Q: {q}\nA:") | llm | StrOutputParser()
    events = [e async for e in chain.astream_events({"q": "why"}, version="v2")]
    streamed = [e for e in events if e["event"] == "on_llm_stream"]
    expected = list(llm.stream("Q: why\nA:"))
    assert len(streamed) == len(expected) == 7
    assert "".join(e["data"]["chunk"].text for e in streamed) == "".join(expected)


def test_empty_answer_still_gives_a_chunk() -> None:
    with Emulator(responses=[""]).serve() as emu:
        assert list(llm_for(emu).stream("anything")) == [""]


def test_stop_sequences_are_cut_across_chunks() -> None:
    # G1-era TGI workers ignore stop sequences; the client cuts them.
    with Emulator(recipe="g1").serve() as emu:
        llm = llm_for(emu, max_new_tokens=12)
        full = llm.invoke("stop test")
        pieces = [c for c in llm.stream("stop test") if c]
        boundary = len(pieces[0]) + len(pieces[1])
        stop = full[boundary - 2 : boundary + 2]
        assert llm.invoke("stop test", stop=[stop]) == full[: full.index(stop)]
        assert "".join(llm.stream("stop test", stop=[stop])) == full[: full.index(stop)]
        assert (
            llm_for(emu, max_new_tokens=12, stop=[stop]).invoke("stop test")
            == (full[: full.index(stop)])
        )


def test_usage_model_name_and_route_facts(tgi: Emulator) -> None:
    result = llm_for(tgi, max_new_tokens=4).generate(["one", "two"])
    assert result.llm_output == {
        "token_usage": {"completion_tokens": 8},
        "model_name": tgi.endpoint,
    }
    info = result.generations[0][0].generation_info
    assert info["finish_reason"] == "length" and info["vast"]["signature"] == "g3"
    assert info["vast"]["worker_url"] in tgi.worker_urls() and info["vast"]["attempts"] == 1
    streamed = llm_for(tgi, max_new_tokens=4, streaming=True).generate(["three"])
    assert streamed.llm_output["token_usage"]["completion_tokens"] == 4
    assert streamed.generations[0][0].generation_info["usage"]["prompt_tokens"] >= 1


def test_openai_completions_api(openai_emu: Emulator) -> None:
    llm = llm_for(openai_emu, api="openai", max_new_tokens=4)
    result = llm.generate(["Say"])
    assert result.llm_output["token_usage"]["total_tokens"] > 4
    assert result.llm_output["model_name"] == "vast-emulator-fake"
    assert openai_emu.worker_requests[-1].path == "/v1/completions"
    assert "".join(llm.stream("Say")) == result.generations[0][0].text


async def test_abatch_runs_concurrently_and_bounded() -> None:
    # Each answer takes 10 tokens x 0.05 s = 0.5 s on one worker.
    with Emulator(token_delay=0.05, workers=1).serve() as emu:
        llm = llm_for(emu, max_new_tokens=10)
        loop = asyncio.get_running_loop()
        started = loop.time()
        answers = await llm.abatch(["a", "b", "c", "d"])
        elapsed = loop.time() - started
        assert len(answers) == 4 and emu.workers[0].peak_inflight == 4
        print(f"abatch of four 0.5 s requests: {elapsed:.2f} s")
        bounded = llm_for(emu, max_new_tokens=2, max_concurrency=2)
        emu.workers[0].peak_inflight = 0
        await bounded.abatch(["a", "b", "c", "d", "e"])
        assert emu.workers[0].peak_inflight == 2


def test_sync_batch_runs_concurrently() -> None:
    with Emulator(token_delay=0.05, workers=1).serve() as emu:
        answers = llm_for(emu, max_new_tokens=10).batch(["a", "b", "c", "d"])
        assert len(answers) == 4 and emu.workers[0].peak_inflight == 4


def test_each_batch_input_gets_its_own_callbacks(tgi: Emulator) -> None:
    handlers = [Tokens(), Tokens()]
    llm = llm_for(tgi, max_new_tokens=3, streaming=True)
    answers = llm.batch(["a", "b"], config=[{"callbacks": [h]} for h in handlers])
    assert ["".join(h.tokens) for h in handlers] == answers


def test_identifying_and_ls_params(tgi: Emulator) -> None:
    llm = llm_for(tgi, temperature=0.3, max_new_tokens=9, stop=["\n"], top_k=5)
    ident = llm._identifying_params
    assert ident["endpoint"] == tgi.endpoint and ident["temperature"] == 0.3
    assert ident["max_new_tokens"] == 9 and ident["top_k"] == 5
    assert tgi.api_key not in json.dumps(ident, default=str)
    ls = llm._get_ls_params()
    assert ls == {
        "ls_provider": "vast",
        "ls_model_name": tgi.endpoint,
        "ls_model_type": "llm",
        "ls_max_tokens": 9,
        "ls_temperature": 0.3,
        "ls_stop": ["\n"],
    }


def test_unknown_kwargs_are_an_error_and_model_kwargs_pass_through(tgi: Emulator) -> None:
    with pytest.raises(ConfigError, match="no field 'temprature'; did you mean 'temperature'"):
        llm_for(tgi, temprature=0.5)
    with pytest.raises(ConfigError, match="model_kwargs"):
        llm_for(tgi, typical_p=0.5)
    llm = llm_for(tgi, model_kwargs={"typical_p": 0.5})
    llm.invoke("x")
    assert tgi.worker_requests[-1].json["payload"]["parameters"]["typical_p"] == 0.5


def test_max_tokens_alias(tgi: Emulator) -> None:
    assert llm_for(tgi, max_tokens=11).max_new_tokens == 11


def test_missing_endpoint_fails_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VAST_ENDPOINT", raising=False)
    with pytest.raises(ConfigError, match="VAST_ENDPOINT"):
        VastLLM(api_key="k")


@pytest.mark.parametrize("factory", [llm_for, chat_for])
def test_the_key_never_shows(tgi: Emulator, openai_emu: Emulator, factory: Any) -> None:
    emu = tgi if factory is llm_for else openai_emu
    model = factory(emu)
    model.invoke("hello")
    key = emu.api_key
    assert key not in repr(model) and key not in str(model)
    assert key not in dumps(model) and key not in json.dumps(dumpd(model))
    assert key not in json.dumps(model._identifying_params, default=str)
    for request in emu.worker_requests:
        assert key not in request.text and key not in json.dumps(request.headers)


def test_serialisation_round_trips_with_the_key_from_the_environment(
    openai_emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = chat_for(openai_emu, temperature=0.5, max_tokens=7)
    monkeypatch.setenv("VAST_API_KEY", openai_emu.api_key)
    again = load(
        dumpd(model),
        allowed_objects=[ChatVast],
        valid_namespaces=["langchain_vast"],
        secrets_from_env=True,
    )
    assert isinstance(again, ChatVast) and again.max_tokens == 7 and again.temperature == 0.5
    assert again.invoke("hi").content


# -- errors ---------------------------------------------------------------------------------


def test_bad_key_is_a_langchain_authentication_error(tgi: Emulator) -> None:
    with pytest.raises(ModelAuthenticationError) as info:
        VastLLM(endpoint=tgi.endpoint, api_key="wrong", base_url=tgi.base_url).invoke("x")
    assert isinstance(info.value, AuthenticationError)  # still ours too
    assert isinstance(info.value.__cause__, AuthenticationError)
    assert "wrong" not in str(info.value)


def test_no_worker_in_time_is_a_timeout() -> None:
    with Emulator(cold_start=30).serve() as emu, pytest.raises(ModelTimeoutError) as info:
        llm_for(emu, deadline=0.2, backoff=FAST).invoke("x")
    assert isinstance(info.value, NoWorkerReady)


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("worker_500", ModelAPIError),
        ("worker_429", ModelRateLimitError),
        ("worker_refuse", ModelConnectionError),
    ],
)
def test_exhausted_retries_map_by_cause(tgi: Emulator, fault: str, error: type) -> None:
    tgi.inject(fault, times=None)
    with pytest.raises(error) as info:
        llm_for(tgi, max_retries=1, backoff=FAST).invoke("x")
    assert info.value.is_retryable


async def test_cut_stream_is_an_api_error_not_to_retry(tgi: Emulator) -> None:
    tgi.inject(Fault("stream_cut", after=2))
    got: list[str] = []

    async def consume() -> None:
        async for chunk in llm_for(tgi).astream("x"):
            got.append(chunk)

    with pytest.raises(ModelAPIError) as info:
        await consume()
    assert isinstance(info.value, WorkerStreamError) and not info.value.is_retryable
    assert len(got) == 2


def test_client_errors_are_invalid_requests(tgi: Emulator) -> None:
    from langchain_core.exceptions import ModelInvalidRequestError

    with pytest.raises(ModelInvalidRequestError) as info:
        llm_for(tgi, top_k=0).invoke("x")
    assert isinstance(info.value, WorkerError) and info.value.status_code == 422


# -- ChatVast specifics ---------------------------------------------------------------------


def test_chat_usage_on_exactly_one_chunk(openai_emu: Emulator) -> None:
    chunks = list(chat_for(openai_emu, max_tokens=5).stream("hi"))
    with_usage = [c for c in chunks if c.usage_metadata]
    assert len(with_usage) == 1 and with_usage[0].usage_metadata["output_tokens"] == 5
    assert chunks[-1].chunk_position == "last"
    assert chunks[-1].response_metadata["finish_reason"] == "length"
    assert chunks[-1].response_metadata["vast"]["signature"] == "g3"


def test_chat_tool_call_deltas_assemble_while_streaming(openai_emu: Emulator) -> None:
    class GetWeather(BaseModel):
        """Get the weather in a city."""

        city: str

    model = chat_for(openai_emu).bind_tools([GetWeather], tool_choice="GetWeather")
    full = None
    for chunk in model.stream("Weather in Paris?"):
        full = chunk if full is None else full + chunk
    assert full is not None and full.tool_calls[0]["name"] == "GetWeather"
    assert isinstance(full.tool_calls[0]["args"]["city"], str)
    sent = openai_emu.worker_requests[-1].json["payload"]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "GetWeather"}}


def test_chat_structured_output(openai_emu: Emulator) -> None:
    class Joke(BaseModel):
        setup: str
        punchline: str

    joke = chat_for(openai_emu).with_structured_output(Joke).invoke("Tell a joke")
    assert isinstance(joke, Joke) and joke.setup


def test_chat_per_call_model_override(openai_emu: Emulator) -> None:
    message = chat_for(openai_emu, model="served-a").invoke("hi", model="served-b")
    assert message.response_metadata["model_name"] == "served-b"
    assert openai_emu.worker_requests[-1].json["payload"]["model"] == "served-b"


def test_chat_on_tgi_renders_a_template(tgi: Emulator) -> None:
    def template(messages: Any) -> str:
        return "|".join(f"{m['role']}:{m['content']}" for m in messages) + "|assistant:"

    model = chat_for(tgi, api="tgi", chat_template=template, max_tokens=4)
    message = model.invoke([SystemMessage("be brief"), HumanMessage("hi")])
    assert message.content
    assert tgi.worker_requests[-1].json["payload"]["inputs"] == "system:be brief|user:hi|assistant:"
    default = chat_for(tgi, api="tgi", max_tokens=4)
    default.invoke("hi")
    assert tgi.worker_requests[-1].json["payload"]["inputs"].endswith("<|im_start|>assistant\n")
    with pytest.raises(ValueError, match="OpenAI-compatible"):
        default.bind_tools([template])


def test_chat_ls_params(openai_emu: Emulator) -> None:
    params = chat_for(openai_emu, model="m", temperature=0.1, max_tokens=3)._get_ls_params()
    assert params["ls_provider"] == "vast" and params["ls_model_name"] == "m"
    assert params["ls_max_tokens"] == 3 and params["ls_model_type"] == "chat"


class Joke(BaseModel):
    """A joke."""

    setup: str
    punchline: str


def test_structured_output_through_guided_json(openai_emu: Emulator) -> None:
    model = chat_for(openai_emu)
    joke = model.with_structured_output(Joke, method="json_schema", strict=True).invoke("a joke")
    assert isinstance(joke, Joke) and joke.setup
    sent = openai_emu.worker_requests[-1].json["payload"]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["strict"] is True
    assert set(sent["json_schema"]["schema"]["properties"]) == {"setup", "punchline"}
    assert "tools" not in openai_emu.worker_requests[-1].json["payload"]
    streamed = list(model.with_structured_output(Joke, method="json_schema").stream("a joke"))
    assert streamed and isinstance(streamed[-1], Joke)
    as_dict = model.with_structured_output(Joke.model_json_schema(), method="json_schema")
    assert set(as_dict.invoke("a joke")) == {"setup", "punchline"}


def test_structured_output_json_mode_and_raw(openai_emu: Emulator) -> None:
    model = chat_for(openai_emu)
    assert isinstance(
        model.with_structured_output(Joke.model_json_schema(), method="json_mode").invoke(
            "JSON please"
        ),
        dict,
    )
    assert openai_emu.worker_requests[-1].json["payload"]["response_format"] == {
        "type": "json_object"
    }
    raw = model.with_structured_output(Joke, method="json_mode", include_raw=True).invoke("x")
    assert raw["parsed"] is None and raw["parsing_error"] is not None  # keys not as asked
    assert raw["raw"].content


def test_structured_output_methods_need_an_openai_worker(tgi: Emulator) -> None:
    with pytest.raises(ValueError, match="OpenAI-compatible"):
        chat_for(tgi, api="tgi").with_structured_output(Joke, method="json_schema")


async def test_async_calls_run_on_an_aiohttp_session(tgi: Emulator, openai_emu: Emulator) -> None:
    """``http_async_client`` may be an ``aiohttp.ClientSession``: the flow then runs on it."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        llm = llm_for(tgi, http_async_client=session, max_new_tokens=5)
        chat = chat_for(openai_emu, http_async_client=session, max_tokens=5)
        text = await llm.ainvoke("hi")
        message = await chat.ainvoke("hi")
        streamed = [chunk.content async for chunk in chat.astream("hi")]
        assert text and message.content and "".join(map(str, streamed)) == message.content
        assert message.response_metadata["vast"]["signature"] == "g3"
        assert not session.closed  # the session stays the caller's
    assert len(tgi.worker_requests) == 1 and len(openai_emu.worker_requests) == 2
