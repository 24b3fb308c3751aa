"""Vast: a LlamaIndex LLM on a Vast.ai Serverless endpoint."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from llama_index.core.base.llms.types import (
    CachePoint,
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    ImageBlock,
    LLMMetadata,
    MessageRole,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)
from llama_index.core.bridge.pydantic import (
    Field,
    SecretStr,
    field_validator,
)
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.llms.utils import parse_partial_json
from pydantic import AliasChoices, BaseModel

from vast_llm import (
    AsyncStream,
    Chunk,
    Completion,
    Stream,
    ToolCall,
)
from vast_llm.fields import ClientModel, checked_worker_headers
from vast_llm.integration import (
    ThinkSplitter,
    aobserved,
    call_params,
    chatml,
    observed,
    observing,
)

from ._progress import listener

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

__all__ = ["Vast", "chatml_messages_to_prompt"]


def _env(name: str) -> Any:
    return lambda: os.environ.get(name) or None


def _image_part(block: ImageBlock) -> dict[str, Any]:
    """An image as an OpenAI content part: its URL as given, else its bytes inline."""
    if block.url is not None and block.image is None and block.path is None:
        url = str(block.url)
    elif hasattr(block, "inline_url"):
        url = block.inline_url()
    else:  # llama-index-core before inline_url: the same data URL, made here
        data = block.resolve_image(as_base64=True).read().decode("ascii")
        url = f"data:{block.image_mimetype or 'image/png'};base64,{data}"
    part: dict[str, Any] = {"type": "image_url", "image_url": {"url": url}}
    if block.detail:
        part["image_url"]["detail"] = block.detail
    return part


def _content(message: ChatMessage) -> str | list[dict[str, Any]]:
    """A message's content for an OpenAI-compatible worker: its text, or text and image parts
    in block order when it holds images. Blocks a worker cannot take are an error, never
    dropped; reasoning (ThinkingBlock) is not sent back, as vLLM's own chat UI does not."""
    if not any(isinstance(b, ImageBlock) for b in message.blocks):
        unsupported = [
            b
            for b in message.blocks
            if not isinstance(b, (TextBlock, ToolCallBlock, ThinkingBlock, CachePoint))
        ]
        if unsupported:
            raise ValueError(_unsupported(unsupported[0]))
        return message.content or ""
    parts: list[dict[str, Any]] = []
    for block in message.blocks:
        if isinstance(block, TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, ImageBlock):
            parts.append(_image_part(block))
        elif not isinstance(block, (ToolCallBlock, ThinkingBlock, CachePoint)):
            raise ValueError(_unsupported(block))
    return parts


def _unsupported(block: Any) -> str:
    return (
        f"a {type(block).__name__} cannot be sent to the worker: OpenAI-compatible workers "
        "take text and images (ImageBlock) in chat messages"
    )


def _openai_message(message: ChatMessage) -> dict[str, Any]:
    """A LlamaIndex message in the OpenAI chat format (text, images, tool calls, results)."""
    role = message.role.value
    out: dict[str, Any] = {"role": role, "content": _content(message)}
    calls = [
        {
            "id": block.tool_call_id or f"call_{index}",
            "type": "function",
            "function": {
                "name": block.tool_name,
                "arguments": block.tool_kwargs
                if isinstance(block.tool_kwargs, str)
                else json.dumps(block.tool_kwargs),
            },
        }
        for index, block in enumerate(message.blocks)
        if isinstance(block, ToolCallBlock)
    ]
    # Messages made by other integrations (and ours) keep OpenAI-format calls in
    # additional_kwargs too: each call is sent once.
    known = {call["id"] for call in calls}
    calls += [
        dict(c)
        for c in message.additional_kwargs.get("tool_calls") or ()
        if isinstance(c, dict) and c.get("id") not in known
    ]
    if calls:
        out["tool_calls"] = calls
        out["content"] = out["content"] or None
    if role == "tool":
        out["tool_call_id"] = message.additional_kwargs.get("tool_call_id")
    if message.additional_kwargs.get("name"):
        out["name"] = message.additional_kwargs["name"]
    return out


def _tgi_text(message: ChatMessage) -> ChatMessage:
    """A message a TGI chat template can render: text only (images are an error)."""
    for block in message.blocks:
        if not isinstance(block, (TextBlock, ToolCallBlock, ThinkingBlock, CachePoint)):
            raise ValueError(
                f"a {type(block).__name__} cannot go through a TGI chat template (text only): "
                "use an OpenAI-compatible vision worker (api='openai')"
            )
    return message


def _openai_calls(calls: Sequence[Any]) -> list[dict[str, Any]]:
    """Tool calls in OpenAI's format (as LlamaIndex's OpenAI integration keeps them in
    ``additional_kwargs["tool_calls"]``, which its structured streaming reads)."""
    return [
        {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name or "", "arguments": call.arguments},
        }
        for call in calls
    ]


def chatml_messages_to_prompt(messages: Sequence[ChatMessage]) -> str:
    """Render LlamaIndex messages as ChatML (SmolLM2, Qwen and many other instruct models):
    the default chat template of ``Vast(api="tgi")`` (pass ``messages_to_prompt=`` for
    another)."""
    return chatml([_openai_message(_tgi_text(m)) for m in messages])


def _tool_choice(choice: str | dict[str, Any] | None, required: bool) -> str | dict[str, Any]:
    """LlamaIndex's ``tool_choice`` as OpenAI's: a tool's name, a function dict, "none",
    "auto" and "required" are kept (a name becomes a function dict)."""
    if choice is None:
        return "required" if required else "auto"
    if isinstance(choice, str) and choice not in ("none", "auto", "required"):
        return {"type": "function", "function": {"name": choice}}
    return choice


_M = TypeVar("_M", bound=BaseModel)
_set = object.__setattr__


def _made(cls: type[_M], defaults: dict[str, Any], values: dict[str, Any]) -> _M:
    """A model instance from trusted values, without validation and without pydantic's
    Python-level ``model_construct`` (which costs more per call than validating): what a
    stream does thousands of times per answer. ``defaults`` holds the fields left out."""
    model = cls.__new__(cls)
    _set(model, "__dict__", {**defaults, **values})
    _set(model, "__pydantic_fields_set__", set(values))
    _set(model, "__pydantic_extra__", None)
    _set(model, "__pydantic_private__", None)
    return model


def _maker(cls: type[_M], **required: Any) -> Callable[..., _M]:
    """``cls(**values)`` for a stream's pieces: fast when this pydantic builds instances as
    :func:`_made` does (checked once against ``model_construct``), else ``model_construct``."""
    defaults = dict(cls.model_construct(**required).__dict__)
    for name in required:
        defaults.pop(name)
    probe = cls.model_construct(**required)
    fast = _made(cls, defaults, dict(required))
    same = (
        not cls.__private_attributes__
        and fast.model_dump() == probe.model_dump()
        and fast.model_fields_set == probe.model_fields_set
    )
    if not same:  # pragma: no cover - another pydantic's internals
        return cls.model_construct
    return lambda **values: _made(cls, defaults, values)


_text_block = _maker(TextBlock, text="")
_thinking_block = _maker(ThinkingBlock)
_tool_call_block = _maker(ToolCallBlock, tool_name="")
_chat_message = _maker(ChatMessage)
_chat_response = _maker(ChatResponse, message=ChatMessage())
_completion_response = _maker(CompletionResponse, text="")


def _completion_piece(text: str, chunk: Chunk) -> CompletionResponse:
    # Built without validation: the text is the one the stream already holds.
    return _completion_response(text=text, delta=chunk.text, raw=chunk.raw)


class _Assembler:
    """Turns a stream's chunks into LlamaIndex chat responses in time linear in the answer.

    Each response carries the message so far (LlamaIndex's agents read ``message.content``
    per chunk), but the message is built without validating the whole text again, and tool
    calls and reasoning are extended, not re-joined from all pieces, at each chunk.
    """

    __slots__ = ("_calls", "_reasoning", "_text", "_think")

    def __init__(self, think: bool) -> None:
        self._text = ""
        self._reasoning = ""
        self._calls: dict[int, list[Any]] = {}  # index -> [id, name, arguments]
        self._think = ThinkSplitter() if think else None

    def piece(self, chunk: Chunk) -> ChatResponse | None:
        text, thought = chunk.text, chunk.reasoning
        if self._think is not None and self._think.active and text:
            more_thought, text = self._think.feed(text)
            thought += more_thought
        for delta in chunk.tool_calls:
            call = self._calls.setdefault(delta.index, [None, None, ""])
            call[0] = call[0] or delta.id
            call[1] = call[1] or delta.name
            call[2] += delta.arguments
        if not (text or thought or chunk.tool_calls):
            return None
        self._text += text
        self._reasoning += thought
        extra = {"thinking_delta": thought} if thought else {}
        return _chat_response(
            message=self._message(), delta=text, raw=chunk.raw, additional_kwargs=extra
        )

    def last(self, stream: Stream | AsyncStream) -> ChatResponse:
        if self._think is not None:
            thought, text = self._think.flush()
            self._reasoning += thought
            self._text += text
        raw = _raw(stream.raw, stream.facts())
        return _chat_response(message=self._message(), delta="", raw=raw, additional_kwargs={})

    def _message(self) -> ChatMessage:
        blocks: list[Any] = []
        if self._reasoning:
            blocks.append(_thinking_block(content=self._reasoning))
        if self._text or not self._calls:
            blocks.append(_text_block(text=self._text))
        extra: dict[str, Any] = {}
        if self._calls:
            calls = [
                ToolCall(id=c[0] or f"call_{i}", name=c[1] or "", arguments=c[2])
                for i, c in sorted(self._calls.items())
            ]
            blocks += [
                _tool_call_block(tool_call_id=c.id, tool_name=c.name, tool_kwargs=c.arguments)
                for c in calls
            ]
            extra["tool_calls"] = _openai_calls(calls)
        return _chat_message(role=MessageRole.ASSISTANT, blocks=blocks, additional_kwargs=extra)


def _raw(answer: Any, facts: dict[str, Any]) -> dict[str, Any]:
    """A response's ``raw``: the worker's answer, with the core's facts about it on top
    (``usage``, which TokenCountingHandler reads, finish reasons in OpenAI's words, ``vast``)."""
    raw: dict[str, Any] = dict(answer) if isinstance(answer, dict) else {"answer": answer}
    raw.update(facts)
    return raw


class Vast(ClientModel, FunctionCallingLLM):
    """A LlamaIndex LLM served by a Vast.ai Serverless endpoint.

    Each call obtains a worker from the autoscaler, verifies the signed assignment before the
    worker is contacted, and retries what is safe to retry (before the first token).

    ``api="tgi"`` completes through ``/generate(_stream)`` and chats through
    ``messages_to_prompt`` (ChatML by default); ``api="openai"`` uses ``/v1/completions`` and
    ``/v1/chat/completions`` with tool calling (FunctionAgent, ``predict_and_call``...).

    Examples:
        .. code-block:: python

            from llama_index.core import Settings
            from llama_index.llms.vast import Vast   # or: from llamaindex_vast import Vast

            Settings.llm = Vast(endpoint="my-vllm-endpoint", api="openai", max_new_tokens=256)
            response = Settings.llm.complete("The capital of France is")
            for part in Settings.llm.stream_chat([ChatMessage(role="user", content="Hi")]):
                print(part.delta, end="")

    Every client setting of :class:`vast_llm.VastClient` is a field with the same name
    (``timeout``, ``deadline``, ``max_retries``, ``signature_policy``...); unknown arguments
    are an error. ``api_key`` defaults to ``VAST_API_KEY`` and is never serialised;
    ``endpoint`` and ``base_url`` default to ``VAST_ENDPOINT`` and ``VAST_BASE_URL``. ``raw`` on
    every response carries the worker's answer, ``usage`` and ``vast`` (the route facts).
    ``http_client`` (an ``httpx.Client``) and ``http_async_client`` (an ``httpx.AsyncClient``,
    or an ``aiohttp.ClientSession`` to run the async calls on aiohttp directly) replace the
    clients' own connection pools; without them the model keeps a pool per event loop.

    OpenAILike's names work: ``max_tokens`` (= ``max_new_tokens``), ``is_chat_model`` and
    ``is_function_calling_model`` (override what ``api`` implies; ``is_chat_model=True`` also
    sends ``complete()`` through the chat route, as OpenAILike does), ``additional_kwargs``,
    ``default_headers`` (sent to workers only; credentials are refused), ``timeout`` and
    ``max_retries``. ``context_window`` is not read from the server (the routed worker's
    ``/v1/models`` is not reachable through the autoscaler's route today): set it to your
    model's ``max_model_len``; the default, 4096, is a safe floor for current chat models.

    Reasoning models: vLLM's ``reasoning_content`` / ``reasoning`` (or a chat answer's
    leading ``<think>...</think>``) becomes a ``ThinkingBlock`` before the text; while
    streaming, each reasoning piece is also ``additional_kwargs["thinking_delta"]`` of its
    response. Finish reasons are OpenAI's words for every API (``raw["finish_reason"]``; TGI's
    own in ``raw["native_finish_reason"]``).

    Progress: before its answer starts, each call dispatches a ``VastProgressEvent`` (from
    ``llamaindex_vast``) per step: waiting for a worker (with the router's worker states while
    one cold-starts), routed, verified, retrying, answering. Event handlers see them inside
    the call's span.
    """

    api_key: SecretStr | None = Field(default=None, exclude=True, description="Vast.ai API key.")
    model: str | None = Field(default=None, description="Model name for OpenAI-compatible workers.")
    max_new_tokens: int = Field(
        default=256,
        gt=0,
        validation_alias=AliasChoices("max_new_tokens", "max_tokens"),
        description="Most tokens to generate (also the cost sent to the router); alias max_tokens.",
    )
    context_window: int = Field(
        default=4096,
        gt=0,
        description="The served model's context window (vLLM's max_model_len; not read from "
        "the server: set it for your model).",
    )
    is_chat_model: bool | None = Field(
        default=None,
        description="Override: whether LlamaIndex should chat with this model (default: "
        "api='openai'). True also sends complete() through the chat route.",
    )
    is_function_calling_model: bool | None = Field(
        default=None,
        description="Override: whether the model calls tools (default: api='openai').",
    )
    default_headers: dict[str, str] | None = Field(
        default=None,
        description="Headers sent with every worker request (never to the autoscaler; no "
        "credentials).",
    )
    temperature: float | None = Field(default=None)
    top_p: float | None = Field(default=None)
    top_k: int | None = Field(default=None)
    repetition_penalty: float | None = Field(default=None)
    seed: int | None = Field(default=None)
    stop: list[str] | None = Field(default=None, description="Stop sequences (also cut locally).")
    additional_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Extra parameters for the model server."
    )

    _extra_parameters: ClassVar[str] = "additional_kwargs"

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        api_key: str | SecretStr | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("messages_to_prompt") is None:
            kwargs["messages_to_prompt"] = chatml_messages_to_prompt
        if endpoint is not None:
            kwargs["endpoint"] = endpoint
        key = api_key or os.environ.get("VAST_API_KEY") or None
        kwargs["api_key"] = SecretStr(key) if isinstance(key, str) else key
        super().__init__(**kwargs)

    @field_validator("default_headers")
    @classmethod
    def _no_credentials(cls, headers: dict[str, str] | None) -> dict[str, str] | None:
        return checked_worker_headers(headers)

    @classmethod
    def class_name(cls) -> str:
        return "Vast"

    @property
    def _api(self) -> str:
        return self.api

    @property
    def metadata(self) -> LLMMetadata:
        openai = self._api == "openai"
        return LLMMetadata(
            context_window=self.context_window,
            num_output=self.max_new_tokens,
            is_chat_model=openai if self.is_chat_model is None else self.is_chat_model,
            is_function_calling_model=openai
            if self.is_function_calling_model is None
            else self.is_function_calling_model,
            model_name=self.model or self.endpoint or "vast",
        )

    # -- shared, undecorated ---------------------------------------------------------------

    @property
    def _headers(self) -> dict[str, str] | None:
        return self.default_headers or None

    def _params(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs = {k: v for k, v in kwargs.items() if k not in ("formatted",)}
        if "max_tokens" in kwargs:  # OpenAILike's name for one call's limit
            kwargs["max_new_tokens"] = kwargs.pop("max_tokens")
        return call_params(
            self,
            self.max_new_tokens,
            self.additional_kwargs,
            kwargs,
            list(self.stop or []),
            model_name=self.model,
            openai=self._api == "openai",
        )

    def _prompt(self, prompt: str, formatted: bool) -> str:
        render = self.completion_to_prompt  # LlamaIndex's validator fills in a default
        return prompt if formatted or render is None else render(prompt)

    def _messages(self, messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
        return [_openai_message(m) for m in messages]

    def _chat_prompt(self, messages: Sequence[ChatMessage]) -> str:
        render = self.messages_to_prompt or chatml_messages_to_prompt
        return render(messages)

    @staticmethod
    def _completion(answer: Completion) -> CompletionResponse:
        raw = _raw(answer.raw, answer.facts())
        return CompletionResponse(text=answer.text, raw=raw)

    @staticmethod
    def _message(text: str, calls: Sequence[Any], reasoning: str | None = None) -> ChatMessage:
        blocks: list[Any] = [ThinkingBlock(content=reasoning)] if reasoning else []
        if text or not calls:
            blocks.append(TextBlock(text=text))
        for call in calls:
            blocks.append(
                ToolCallBlock(
                    tool_call_id=call.id, tool_name=call.name or "", tool_kwargs=call.arguments
                )
            )
        extra = {"tool_calls": _openai_calls(calls)} if calls else {}
        return ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks, additional_kwargs=extra)

    def _chat(self, answer: Completion) -> ChatResponse:
        raw = _raw(answer.raw, answer.facts())
        return ChatResponse(
            message=self._message(answer.text, answer.tool_calls, answer.reasoning), raw=raw
        )

    # -- completion ------------------------------------------------------------------------

    @property
    def _complete_by_chat(self) -> bool:
        return self.is_chat_model is True

    def _as_chat(self, prompt: str) -> list[dict[str, Any]]:
        return [{"role": "user", "content": prompt}]

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        params = self._params(kwargs)
        with observing(listener()):
            if self._complete_by_chat:
                answer = self.client.chat(self._as_chat(prompt), headers=self._headers, **params)
            else:
                answer = self.client.generate(
                    self._prompt(prompt, formatted), headers=self._headers, **params
                )
        return self._completion(answer)

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        params = self._params(kwargs)
        stream = (
            self.client.stream_chat(self._as_chat(prompt), headers=self._headers, **params)
            if self._complete_by_chat
            else self.client.stream(
                self._prompt(prompt, formatted), headers=self._headers, **params
            )
        )

        heard = listener()

        def gen() -> CompletionResponseGen:
            text = ""
            with stream:
                for chunk in observed(stream, heard):
                    if chunk.text:
                        text += chunk.text
                        yield _completion_piece(text, chunk)
                # One last item: the totals (and an item even for an empty answer).
                raw = _raw(stream.raw, stream.facts())
                yield CompletionResponse(text=text, delta="", raw=raw)

        return gen()

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        params = self._params(kwargs)
        with observing(listener()):
            if self._complete_by_chat:
                answer = await self.async_client.chat(
                    self._as_chat(prompt), headers=self._headers, **params
                )
            else:
                answer = await self.async_client.generate(
                    self._prompt(prompt, formatted), headers=self._headers, **params
                )
        return self._completion(answer)

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        params = self._params(kwargs)
        client = self.async_client
        stream = (
            client.stream_chat(self._as_chat(prompt), headers=self._headers, **params)
            if self._complete_by_chat
            else client.stream(self._prompt(prompt, formatted), headers=self._headers, **params)
        )

        heard = listener()

        async def gen() -> CompletionResponseAsyncGen:
            text = ""
            async with stream:
                async for chunk in aobserved(stream, heard):
                    if chunk.text:
                        text += chunk.text
                        yield _completion_piece(text, chunk)
                raw = _raw(stream.raw, stream.facts())
                yield CompletionResponse(text=text, delta="", raw=raw)

        return gen()

    # -- chat ------------------------------------------------------------------------------

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        params = self._params(kwargs)
        with observing(listener()):
            if self._api == "tgi":
                answer = self.client.generate(
                    self._chat_prompt(messages), headers=self._headers, **params
                )
            else:
                answer = self.client.chat(self._messages(messages), headers=self._headers, **params)
        return self._chat(self._tgi_think(answer))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        params = self._params(kwargs)
        stream = (
            self.client.stream(self._chat_prompt(messages), headers=self._headers, **params)
            if self._api == "tgi"
            else self.client.stream_chat(self._messages(messages), headers=self._headers, **params)
        )

        heard = listener()

        def gen() -> ChatResponseGen:
            answer = _Assembler(think=self._api == "tgi")
            with stream:
                for chunk in observed(stream, heard):
                    piece = answer.piece(chunk)
                    if piece is not None:
                        yield piece
                yield answer.last(stream)

        return gen()

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        params = self._params(kwargs)
        client = self.async_client
        with observing(listener()):
            if self._api == "tgi":
                answer = await client.generate(
                    self._chat_prompt(messages), headers=self._headers, **params
                )
            else:
                answer = await client.chat(
                    self._messages(messages), headers=self._headers, **params
                )
        return self._chat(self._tgi_think(answer))

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        params = self._params(kwargs)
        client = self.async_client
        stream = (
            client.stream(self._chat_prompt(messages), headers=self._headers, **params)
            if self._api == "tgi"
            else client.stream_chat(self._messages(messages), headers=self._headers, **params)
        )

        heard = listener()

        async def gen() -> ChatResponseAsyncGen:
            answer = _Assembler(think=self._api == "tgi")
            async with stream:
                async for chunk in aobserved(stream, heard):
                    piece = answer.piece(chunk)
                    if piece is not None:
                        yield piece
                yield answer.last(stream)

        return gen()

    @staticmethod
    def _tgi_think(answer: Completion) -> Completion:
        """A TGI chat goes through generate(): split a leading <think> as chat answers are."""
        if answer.reasoning is not None or not answer.text.lstrip().startswith("<think>"):
            return answer
        splitter = ThinkSplitter()
        thought, text = splitter.feed(answer.text)
        more_thought, more_text = splitter.flush()
        answer.reasoning, answer.text = (thought + more_thought) or None, text + more_text
        return answer

    # -- tools -----------------------------------------------------------------------------

    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        tool_choice: str | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        if self._api != "openai":
            raise ValueError(
                "tool calling needs an OpenAI-compatible chat worker: Vast(api='openai') with "
                "a vLLM endpoint"
            )
        messages = list(chat_history or [])
        if isinstance(user_msg, str):
            messages.append(ChatMessage(role=MessageRole.USER, content=user_msg))
        elif user_msg is not None:
            messages.append(user_msg)
        specs = [tool.metadata.to_openai_tool(skip_length_check=True) for tool in tools]
        prepared: dict[str, Any] = {"messages": messages, **kwargs}
        if specs:
            prepared["tools"] = specs
            prepared["tool_choice"] = _tool_choice(tool_choice, tool_required)
        return prepared

    def _validate_chat_with_tools_response(
        self,
        response: ChatResponse,
        tools: Sequence[BaseTool],
        allow_parallel_tool_calls: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        if not allow_parallel_tool_calls:
            calls = [b for b in response.message.blocks if isinstance(b, ToolCallBlock)]
            if len(calls) > 1:
                response.message.blocks = [
                    b
                    for b in response.message.blocks
                    if not isinstance(b, ToolCallBlock) or b is calls[0]
                ]
        return response

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        calls = [b for b in response.message.blocks if isinstance(b, ToolCallBlock)]
        if not calls and error_on_no_tool_call:
            raise ValueError(f"Expected at least one tool call, but got {len(calls)} tool calls.")
        selections = []
        for call in calls:
            kwargs_ = call.tool_kwargs
            if isinstance(kwargs_, str):
                # Streamed calls arrive in pieces: read what has come so far.
                try:
                    kwargs_ = parse_partial_json(kwargs_) if kwargs_.strip() else {}
                except (ValueError, TypeError):
                    kwargs_ = {}
            selections.append(
                ToolSelection(
                    tool_id=call.tool_call_id or "",
                    tool_name=call.tool_name,
                    tool_kwargs=kwargs_ if isinstance(kwargs_, dict) else {},
                )
            )
        return selections
