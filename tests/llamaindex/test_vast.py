"""The LlamaIndex LLM against the emulator: engines, agents, events, streaming shape, secrets."""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.agent.workflow import FunctionAgent, ReActAgent
from llama_index.core.callbacks import CallbackManager, TokenCountingHandler
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.llms import ChatMessage
from llama_index.core.tools import FunctionTool

from llamaindex_vast import Vast
from tests.conftest import FAST
from vast_llm import AuthenticationError, WorkerStreamError
from vast_llm.emulator import Emulator, Fault

DOCS = [
    "The Eiffel Tower is in Paris.",
    "The autoscaler signs each worker assignment.",
    "TGI streams tokens as server-sent events.",
]


def vast(emu: Emulator, **kwargs: Any) -> Vast:
    return Vast(emu.endpoint, api_key=emu.api_key, base_url=emu.base_url, backoff=FAST, **kwargs)


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


class Events(BaseEventHandler):
    """Counts instrumentation events by class name."""

    names: list[str]

    @classmethod
    def class_name(cls) -> str:
        return "Events"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.names.append(type(event).__name__)

    def count(self, name: str) -> int:
        return self.names.count(name)


@pytest.fixture
def events() -> Iterator[Events]:
    handler = Events(names=[])
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(handler)
    yield handler
    dispatcher.event_handlers.remove(handler)


@pytest.fixture(autouse=True)
def offline_embeddings() -> Iterator[None]:
    previous = Settings._embed_model
    Settings.embed_model = MockEmbedding(embed_dim=16)
    yield
    Settings._embed_model = previous


# -- the shapes LlamaIndex expects ------------------------------------------------------------


def test_importable_where_llamaindex_users_look() -> None:
    from llama_index.llms.vast import Vast as Reexported

    assert Reexported is Vast and Vast.class_name() == "Vast"


def test_metadata_is_explicit_and_truthful(tgi: Emulator) -> None:
    meta = vast(tgi, max_new_tokens=77, context_window=8192, model="m").metadata
    assert (meta.context_window, meta.num_output, meta.model_name) == (8192, 77, "m")
    assert not meta.is_chat_model and not meta.is_function_calling_model
    openai_meta = vast(tgi, api="openai").metadata
    assert openai_meta.is_chat_model and openai_meta.is_function_calling_model


def test_no_network_in_init(tgi: Emulator) -> None:
    Vast("ep", api_key="k", base_url="http://127.0.0.1:9")  # nothing listens there
    vast(tgi)
    assert not tgi.requests


def test_key_is_absent_from_dict_json_and_repr(tgi: Emulator) -> None:
    llm = vast(tgi)
    llm.complete("x")
    for text in (json.dumps(llm.to_dict()), llm.to_json(), repr(llm), str(llm)):
        assert tgi.api_key not in text
    assert "api_key" not in llm.to_dict()
    assert all(tgi.api_key not in r.text for r in tgi.worker_requests)


def test_key_from_the_environment(tgi: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAST_API_KEY", tgi.api_key)
    monkeypatch.setenv("VAST_ENDPOINT", tgi.endpoint)
    monkeypatch.setenv("VAST_BASE_URL", tgi.base_url)
    assert Vast().complete("x").text


@pytest.mark.parametrize("api", ["tgi", "openai"])
def test_streams_are_real_generators_with_text_and_delta(
    api: str, tgi: Emulator, openai_emu: Emulator
) -> None:
    llm = vast(tgi if api == "tgi" else openai_emu, api=api, max_new_tokens=5)
    stream = llm.stream_complete("Hello")
    assert inspect.isgenerator(stream)
    items = list(stream)
    assert items[-1].text == "".join(i.delta for i in items) == llm.complete("Hello").text
    assert all(i.text.endswith(i.delta or "") for i in items)
    chat_items = list(llm.stream_chat([ChatMessage(role="user", content="Hello")]))
    assert chat_items[-1].message.content == "".join(i.delta for i in chat_items)


async def test_async_streams_are_async_generators(openai_emu: Emulator) -> None:
    llm = vast(openai_emu, api="openai", max_new_tokens=4)
    stream = await llm.astream_complete("Hello")
    assert inspect.isasyncgen(stream)
    items = [i async for i in stream]
    assert items[-1].text == (await llm.acomplete("Hello")).text
    messages = [ChatMessage(role="user", content="Hello")]
    chat = await llm.astream_chat(messages)
    assert inspect.isasyncgen(chat)
    assert [i async for i in chat][-1].message.content == (
        await llm.achat(messages)
    ).message.content


def test_empty_answer_still_gives_an_item() -> None:
    with Emulator(responses=[""]).serve() as emu:
        items = list(vast(emu).stream_complete("x"))
        assert len(items) == 1 and items[0].text == ""


def test_raw_carries_the_answer_usage_and_route(tgi: Emulator, openai_emu: Emulator) -> None:
    raw = vast(tgi, max_new_tokens=3).complete("x").raw
    assert raw["generated_text"] and raw["usage"] == {"completion_tokens": 3}
    assert raw["vast"]["signature"] == "g3" and raw["vast"]["worker_url"] in tgi.worker_urls()
    raw = (
        vast(openai_emu, api="openai", max_new_tokens=3)
        .chat([ChatMessage(role="user", content="x")])
        .raw
    )
    assert raw["usage"]["completion_tokens"] == 3 and raw["choices"][0]["message"]


def test_tgi_chat_goes_through_messages_to_prompt(tgi: Emulator) -> None:
    llm = vast(tgi)
    llm.chat(
        [ChatMessage(role="system", content="be brief"), ChatMessage(role="user", content="hi")]
    )
    assert tgi.worker_requests[-1].json["payload"]["inputs"] == (
        "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_completion_to_prompt_unless_formatted(tgi: Emulator) -> None:
    llm = vast(tgi, completion_to_prompt=lambda p: f"[INST] {p} [/INST]")
    llm.complete("hi")
    assert tgi.worker_requests[-1].json["payload"]["inputs"] == "[INST] hi [/INST]"
    llm.complete("hi", formatted=True)
    assert tgi.worker_requests[-1].json["payload"]["inputs"] == "hi"


def test_stop_sequences_cut_client_side() -> None:
    with Emulator(recipe="g1").serve() as emu:
        llm = vast(emu, max_new_tokens=12)
        full = llm.complete("stop test").text
        stop = full.split()[3]
        assert llm.complete("stop test", stop=[stop]).text == full[: full.index(stop)]
        cut = vast(emu, max_new_tokens=12, stop=[stop])
        assert list(cut.stream_complete("stop test"))[-1].text == full[: full.index(stop)]


def test_errors_are_ours_and_bounded(tgi: Emulator) -> None:
    with pytest.raises(AuthenticationError):
        Vast(tgi.endpoint, api_key="wrong", base_url=tgi.base_url).complete("x")
    tgi.inject(Fault("stream_cut", after=1))
    with pytest.raises(WorkerStreamError):
        list(vast(tgi).stream_complete("x"))


# -- one event set per call -------------------------------------------------------------------


@pytest.mark.parametrize("api", ["tgi", "openai"])
async def test_each_call_fires_exactly_one_event_set(
    api: str, tgi: Emulator, openai_emu: Emulator, events: Events
) -> None:
    llm = vast(tgi if api == "tgi" else openai_emu, api=api, max_new_tokens=3)
    messages = [ChatMessage(role="user", content="hi")]
    llm.complete("hi")
    list(llm.stream_complete("hi"))
    await llm.acomplete("hi")
    [_ async for _ in await llm.astream_complete("hi")]
    assert events.count("LLMCompletionStartEvent") == events.count("LLMCompletionEndEvent") == 4
    llm.chat(messages)
    list(llm.stream_chat(messages))
    await llm.achat(messages)
    [_ async for _ in await llm.astream_chat(messages)]
    assert events.count("LLMChatStartEvent") == events.count("LLMChatEndEvent") == 4
    assert events.count("LLMCompletionStartEvent") == 4  # chat did not go through complete()


def test_token_counting_handler_sees_reported_usage(openai_emu: Emulator) -> None:
    counter = TokenCountingHandler(tokenizer=str.split)
    llm = vast(
        openai_emu, api="openai", max_new_tokens=5, callback_manager=CallbackManager([counter])
    )
    llm.chat([ChatMessage(role="user", content="hi")])
    list(llm.stream_chat([ChatMessage(role="user", content="hi")]))
    llm.complete("hi")
    assert len(counter.llm_token_counts) == 3
    assert [e.completion_token_count for e in counter.llm_token_counts] == [5, 5, 5]
    assert all(e.prompt_token_count > 0 for e in counter.llm_token_counts)


# -- engines and agents -----------------------------------------------------------------------


def test_query_engine_plain_and_streaming(tgi: Emulator) -> None:
    index = VectorStoreIndex.from_documents([Document(text=t) for t in DOCS])
    llm = vast(tgi, max_new_tokens=8)
    answer = index.as_query_engine(llm=llm).query("Where is the Eiffel Tower?")
    assert str(answer) and len(answer.source_nodes) == 2
    streamed = index.as_query_engine(llm=llm, streaming=True).query("Where is it?")
    tokens = list(streamed.response_gen)
    assert len(tokens) > 1 and "".join(tokens).strip()
    prompt = tgi.worker_requests[-1].json["payload"]["inputs"]
    assert "Context information" in prompt or "context" in prompt.lower()


async def test_query_engine_async_and_async_streaming(openai_emu: Emulator) -> None:
    index = VectorStoreIndex.from_documents([Document(text=t) for t in DOCS])
    llm = vast(openai_emu, api="openai", max_new_tokens=8)
    answer = await index.as_query_engine(llm=llm).aquery("Where is the Eiffel Tower?")
    assert str(answer)
    streamed = await index.as_query_engine(llm=llm, streaming=True).aquery("Where?")
    tokens = [t async for t in streamed.async_response_gen()]
    assert len(tokens) > 1


def test_condense_plus_context_chat_engine(openai_emu: Emulator) -> None:
    index = VectorStoreIndex.from_documents([Document(text=t) for t in DOCS])
    engine = index.as_chat_engine(
        chat_mode="condense_plus_context", llm=vast(openai_emu, api="openai", max_new_tokens=8)
    )
    first = engine.chat("Where is the Eiffel Tower?")
    second = engine.stream_chat("And what signs assignments?")
    assert str(first) and "".join(second.response_gen)
    assert len(engine.chat_history) == 4


async def test_function_agent_calls_a_tool_and_answers(openai_emu: Emulator) -> None:
    agent = FunctionAgent(tools=[multiply], llm=vast(openai_emu, api="openai"))
    response = await agent.run(user_msg="What is 3 times 3?")
    # The fake model calls the tool with schema-valid arguments (3, 3), then reports its result.
    assert "9" in str(response)
    calls = [r.json["payload"] for r in openai_emu.worker_requests]
    assert calls[0]["tools"][0]["function"]["name"] == "multiply"
    assert calls[1]["messages"][-1]["role"] == "tool" and calls[1]["messages"][-1]["content"] == "9"


async def test_react_agent_completes_a_task() -> None:
    # ReAct is text-driven: the fake model is scripted with the two turns a model would write.
    script = [
        "Thought: I need to use a tool to help me answer the question.\nAction: multiply\n"
        'Action Input: {"a": 6, "b": 7}',
        "Thought: I can answer without using any more tools.\nAnswer: 6 times 7 is 42.",
    ]
    with Emulator(api="openai", responses=script).serve() as emu:
        agent = ReActAgent(
            tools=[FunctionTool.from_defaults(fn=multiply)], llm=vast(emu, api="openai")
        )
        response = await agent.run(user_msg="What is 6 times 7?")
        assert "42" in str(response)
        second_prompt = json.dumps(emu.worker_requests[-1].json["payload"]["messages"])
        assert "Observation: 42" in second_prompt  # the tool really ran between the turns


def test_tool_calls_from_whole_and_streamed_answers(openai_emu: Emulator) -> None:
    llm = vast(openai_emu, api="openai")
    tool = FunctionTool.from_defaults(fn=multiply)
    whole = llm.get_tool_calls_from_response(llm.chat_with_tools([tool], user_msg="3 x 4?"))
    parts = list(llm.stream_chat_with_tools([tool], user_msg="3 x 4?"))
    streamed = llm.get_tool_calls_from_response(parts[-1])
    assert [(c.tool_name, c.tool_kwargs) for c in whole] == [
        (c.tool_name, c.tool_kwargs) for c in streamed
    ]
    assert whole[0].tool_name == "multiply" and set(whole[0].tool_kwargs) == {"a", "b"}
    assert llm.predict_and_call([tool], user_msg="3 x 4?").response == "12"  # from the prompt
    with pytest.raises(ValueError, match="at least one tool call"):
        llm.get_tool_calls_from_response(llm.chat([ChatMessage(role="user", content="hi")]))


def test_tools_need_an_openai_worker(tgi: Emulator) -> None:
    with pytest.raises(ValueError, match="OpenAI-compatible"):
        vast(tgi).chat_with_tools([FunctionTool.from_defaults(fn=multiply)], user_msg="x")


async def test_async_calls_run_on_an_aiohttp_session(tgi: Emulator) -> None:
    """``http_async_client`` may be an ``aiohttp.ClientSession``: the flow then runs on it."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        llm = vast(tgi, http_async_client=session, max_new_tokens=5)
        whole = await llm.acomplete("hi")
        parts = [r.delta async for r in await llm.astream_complete("hi")]
        assert whole.text and "".join(p or "" for p in parts) == whole.text
    assert len(tgi.worker_requests) == 2
