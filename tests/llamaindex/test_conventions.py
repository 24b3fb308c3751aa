"""What OpenAILike users bring to Vast, against the emulator: its names, tool_choice, tool
calls for structured streaming, histories holding both forms of tool calls, images,
reasoning as ThinkingBlocks, finish reasons, headers, and streaming linear in the answer.

Chat behaviours run through chat, achat, stream_chat and astream_chat (``MODES``)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ImageBlock,
    MessageRole,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)
from llama_index.core.tools import FunctionTool
from pydantic import BaseModel

from llamaindex_vast import Vast
from tests.conftest import FAST
from vast_llm import ConfigError
from vast_llm.emulator import Emulator, Reasoning, ToolCall

MODES = ["chat", "achat", "stream_chat", "astream_chat"]
HELLO = [ChatMessage(role=MessageRole.USER, content="Hello there")]


@pytest.fixture(scope="module")
def served() -> Iterator[Emulator]:
    emu = Emulator(api="both", workers=1)
    emu.add_endpoint("rc", api="both", reasoning="reasoning_content")
    emu.add_endpoint("think", api="both", reasoning="think")
    with emu.serve():
        yield emu


@pytest.fixture
def emu(served: Emulator) -> Emulator:
    served.reset()
    return served


def vast(emu: Emulator, endpoint: str | None = None, **kwargs: Any) -> Vast:
    kwargs.setdefault("api", "openai")
    return Vast(
        endpoint or emu.endpoint, api_key=emu.api_key, base_url=emu.base_url, backoff=FAST, **kwargs
    )


async def run(llm: Vast, mode: str, messages: list[ChatMessage] = HELLO, **kw: Any) -> Any:
    """The last response as the user gets it in ``mode`` (and every streamed one)."""
    if mode == "chat":
        return llm.chat(messages, **kw), []
    if mode == "achat":
        return await llm.achat(messages, **kw), []
    if mode == "stream_chat":
        pieces = list(llm.stream_chat(messages, **kw))
    else:
        pieces = [p async for p in await llm.astream_chat(messages, **kw)]
    return pieces[-1], pieces


def payload(emu: Emulator) -> dict[str, Any]:
    return emu.worker_requests[-1].json["payload"]  # type: ignore[no-any-return]


# -- OpenAILike's names ------------------------------------------------------------------


def test_openai_like_names(emu: Emulator) -> None:
    llm = vast(emu, max_tokens=5, timeout=30, max_retries=1, additional_kwargs={"top_k": 3})
    assert llm.max_new_tokens == 5 and llm.metadata.num_output == 5
    llm.complete("x")
    assert payload(emu)["max_tokens"] == 5 and payload(emu)["top_k"] == 3
    llm.complete("x", max_tokens=2)
    assert payload(emu)["max_tokens"] == 2
    assert not {"timeout", "max_retries"} & set(payload(emu))


def test_metadata_overrides(emu: Emulator) -> None:
    assert vast(emu).metadata.is_chat_model and vast(emu).metadata.is_function_calling_model
    assert not vast(emu, api="tgi").metadata.is_chat_model
    overridden = vast(emu, is_chat_model=False, is_function_calling_model=False).metadata
    assert not overridden.is_chat_model and not overridden.is_function_calling_model
    assert vast(emu, api="tgi", is_chat_model=True).metadata.is_chat_model


async def test_is_chat_model_sends_complete_through_chat(emu: Emulator) -> None:
    llm = vast(emu, is_chat_model=True, max_tokens=3)
    llm.complete("Hi")
    await llm.acomplete("Hi")
    list(llm.stream_complete("Hi"))
    [_ async for _ in await llm.astream_complete("Hi")]
    assert {r.path for r in emu.worker_requests} == {"/v1/chat/completions"}
    vast(emu, max_tokens=3).complete("Hi")
    assert emu.worker_requests[-1].path == "/v1/completions"


@pytest.mark.parametrize("mode", MODES)
async def test_default_headers_reach_workers_only(emu: Emulator, mode: str) -> None:
    await run(vast(emu, default_headers={"X-Team": "search"}), mode)
    assert emu.worker_requests[-1].headers["x-team"] == "search"
    assert all("x-team" not in r.headers for r in emu.requests if r.target == "route")
    with pytest.raises(ConfigError, match="credentials"):
        vast(emu, default_headers={"authorization": "Bearer x"})


# -- tools -------------------------------------------------------------------------------


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


TOOLS = [FunctionTool.from_defaults(multiply), FunctionTool.from_defaults(add)]


@pytest.mark.parametrize(
    ("tool_choice", "sent"),
    [
        (None, "auto"),
        ("none", "none"),
        ("required", "required"),
        ("add", {"type": "function", "function": {"name": "add"}}),
        (
            {"type": "function", "function": {"name": "add"}},
            {"type": "function", "function": {"name": "add"}},
        ),
    ],
)
def test_tool_choice_is_honoured(emu: Emulator, tool_choice: Any, sent: Any) -> None:
    vast(emu).chat_with_tools(TOOLS, "What is 2 times 3?", tool_choice=tool_choice)
    assert payload(emu)["tool_choice"] == sent


@pytest.mark.parametrize("mode", MODES)
async def test_tool_calls_are_also_in_additional_kwargs(emu: Emulator, mode: str) -> None:
    tools = [TOOLS[0].metadata.to_openai_tool()]
    last, pieces = await run(
        vast(emu),
        mode,
        [ChatMessage(role="user", content="2 times 3")],
        tools=tools,
        tool_choice="required",
    )
    [call] = last.message.additional_kwargs["tool_calls"]
    [block] = [b for b in last.message.blocks if isinstance(b, ToolCallBlock)]
    assert call["id"] == block.tool_call_id and call["function"]["name"] == "multiply"
    for piece in pieces:  # every streamed piece says what it has so far
        assert isinstance(piece.message.additional_kwargs["tool_calls"], list)


class Product(BaseModel):
    """The product of two numbers."""

    a: int
    b: int


async def test_stream_structured_predict_fills_the_object() -> None:
    from llama_index.core.prompts import PromptTemplate

    script = [ToolCall("Product", {"a": 6, "b": 7})] * 2
    with Emulator(api="openai", script=script).serve() as emu:
        llm = vast(emu)
        prompt = PromptTemplate("Multiply {x}")
        parts = list(llm.stream_structured_predict(Product, prompt, x="6 and 7"))
        assert parts[-1] == Product(a=6, b=7)
        aparts = [p async for p in await llm.astream_structured_predict(Product, prompt, x="6")]
        assert aparts[-1] == Product(a=6, b=7)


def test_a_history_holding_both_forms_of_a_call_sends_it_once(emu: Emulator) -> None:
    llm = vast(emu)
    reply = llm.chat_with_tools(TOOLS, "What is 2 times 3?", tool_choice="multiply")
    assert reply.message.additional_kwargs["tool_calls"]  # both forms, as LlamaIndex keeps them
    call = llm.get_tool_calls_from_response(reply)[0]
    history = [
        ChatMessage(role="user", content="What is 2 times 3?"),
        reply.message,
        ChatMessage(
            role="tool",
            content="6",
            additional_kwargs={"tool_call_id": call.tool_id, "name": "multiply"},
        ),
    ]
    llm.chat(history)
    sent = payload(emu)["messages"][1]
    assert [c["id"] for c in sent["tool_calls"]] == [call.tool_id]


# -- images ------------------------------------------------------------------------------

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def test_images_go_to_openai_workers_as_image_parts(emu: Emulator) -> None:
    message = ChatMessage(
        role="user",
        blocks=[
            TextBlock(text="What is in these?"),
            ImageBlock(image=PNG, image_mimetype="image/png"),
            ImageBlock(url="https://example.com/cat.png"),
        ],
    )
    vast(emu).chat([message])
    parts = payload(emu)["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "image_url"]
    assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert parts[2]["image_url"]["url"] == "https://example.com/cat.png"


def test_images_are_never_dropped_silently(emu: Emulator) -> None:
    message = ChatMessage(role="user", blocks=[TextBlock(text="Look"), ImageBlock(image=PNG)])
    with pytest.raises(ValueError, match="TGI chat template"):
        vast(emu, api="tgi").chat([message])
    assert not emu.worker_requests


# -- reasoning, finish reasons -------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("endpoint", "api"), [("rc", "openai"), ("think", "openai"), ("think", "tgi")]
)
async def test_reasoning_is_a_thinking_block(
    emu: Emulator, mode: str, endpoint: str, api: str
) -> None:
    last, pieces = await run(vast(emu, endpoint, api=api), mode)
    thinking, text = last.message.blocks
    assert isinstance(thinking, ThinkingBlock) and thinking.content
    assert isinstance(text, TextBlock) and text.text and "<think>" not in text.text
    assert last.message.content == text.text  # reasoning is not the answer's text
    if pieces:
        deltas = [p.additional_kwargs.get("thinking_delta", "") for p in pieces]
        assert sum(1 for d in deltas if d) > 1  # token by token
        assert "".join(deltas) == thinking.content
        assert "".join(p.delta or "" for p in pieces) == text.text


def test_a_scripted_reasoning_turn() -> None:
    script = [Reasoning("Think first.", "Done.")]
    with Emulator(api="openai", reasoning="reasoning", script=script).serve() as emu:
        message = vast(emu).chat(HELLO).message
    assert [type(b) for b in message.blocks] == [ThinkingBlock, TextBlock]
    assert message.blocks[0].content == "Think first." and message.content == "Done."


@pytest.mark.parametrize("mode", MODES)
async def test_finish_reasons_in_one_vocabulary(emu: Emulator, mode: str) -> None:
    tgi, _ = await run(vast(emu, api="tgi", max_new_tokens=300), mode)
    assert (tgi.raw["finish_reason"], tgi.raw["native_finish_reason"]) == ("stop", "eos_token")
    openai, _ = await run(vast(emu, max_new_tokens=300), mode)
    assert openai.raw["finish_reason"] == "stop" and "native_finish_reason" not in openai.raw
    short, _ = await run(vast(emu, api="tgi", max_new_tokens=2), mode)
    assert short.raw["finish_reason"] == "length"


# -- streaming: each piece is the answer so far, built in constant work per piece ----------


@pytest.mark.parametrize("mode", ["stream_chat", "astream_chat"])
async def test_streamed_pieces_are_complete_messages(emu: Emulator, mode: str) -> None:
    _, pieces = await run(vast(emu, max_new_tokens=12), mode)
    text = ""
    for piece in pieces:
        assert isinstance(piece, ChatResponse)
        text += piece.delta or ""
        assert piece.message.content == text
        assert ChatResponse.model_validate(piece.model_dump()) == piece
    assert len(pieces) > 2 and pieces[-1].delta == ""  # the last: the totals


def test_a_missing_endpoint_is_the_documented_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("VAST_ENDPOINT", raising=False)
    with pytest.raises(ConfigError, match="VAST_ENDPOINT"):
        Vast(api_key="k")
