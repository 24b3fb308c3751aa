"""Vast: a LlamaIndex LLM on a Vast.ai Serverless endpoint."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
    TextBlock,
    ToolCallBlock,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr, SecretStr
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.llms.utils import parse_partial_json

from vast_llm import AsyncVastClient, Chunk, Completion, Usage, VastClient
from vast_llm._apis import chatml
from vast_llm._pair import ClientPair, model_sampling, sampling_params
from vast_llm._stream import Accumulator
from vast_llm._types import RouteInfo

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

__all__ = ["Vast", "chatml_messages_to_prompt"]


def _env(name: str) -> Any:
    return lambda: os.environ.get(name) or None


def _openai_message(message: ChatMessage) -> dict[str, Any]:
    """A LlamaIndex message in the OpenAI chat format (text, tool calls, tool results)."""
    role = message.role.value
    out: dict[str, Any] = {"role": role, "content": message.content or ""}
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
    # Messages made by other integrations keep OpenAI-format calls in additional_kwargs.
    calls += [
        dict(c) for c in message.additional_kwargs.get("tool_calls") or () if isinstance(c, dict)
    ]
    if calls:
        out["tool_calls"] = calls
        out["content"] = message.content or None
    if role == "tool":
        out["tool_call_id"] = message.additional_kwargs.get("tool_call_id")
    if message.additional_kwargs.get("name"):
        out["name"] = message.additional_kwargs["name"]
    return out


def chatml_messages_to_prompt(messages: Sequence[ChatMessage]) -> str:
    """Render LlamaIndex messages as ChatML (SmolLM2, Qwen and many other instruct models)."""
    return chatml([_openai_message(m) for m in messages])


def _raw(answer: Any, usage: Usage | None, route: RouteInfo | None, ttft: float | None,
         finish_reason: str | None) -> dict[str, Any]:  # fmt: skip
    raw: dict[str, Any] = dict(answer) if isinstance(answer, dict) else {"answer": answer}
    if usage is not None:
        # TokenCountingHandler reads raw["usage"]; TGI answers carry none of their own.
        raw["usage"] = usage.to_dict()
    raw["finish_reason"] = finish_reason
    raw["vast"] = route.to_dict(ttft) if route is not None else {}
    return raw


class Vast(FunctionCallingLLM):
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

    ``api_key`` defaults to ``VAST_API_KEY`` and is never serialised; ``endpoint`` and
    ``base_url`` default to ``VAST_ENDPOINT`` and ``VAST_BASE_URL``. ``raw`` on every response
    carries the worker's answer, ``usage`` and ``vast`` (the route facts). ``http_client`` (an
    ``httpx.Client``) and ``http_async_client`` (an ``httpx.AsyncClient``, or an
    ``aiohttp.ClientSession`` to run the async calls on aiohttp directly) replace the clients'
    own connection pools.
    """

    endpoint: str | None = Field(
        default_factory=_env("VAST_ENDPOINT"), description="Endpoint name."
    )
    api_key: SecretStr | None = Field(default=None, exclude=True, description="Vast.ai API key.")
    base_url: str | None = Field(default_factory=_env("VAST_BASE_URL"), description="Autoscaler.")
    api: Literal["tgi", "openai"] = Field(default="tgi", description="The worker's model API.")
    model: str | None = Field(default=None, description="Model name for OpenAI-compatible workers.")
    max_new_tokens: int = Field(default=256, gt=0, description="Most tokens to generate.")
    context_window: int = Field(default=4096, gt=0, description="The served model's context.")
    temperature: float | None = Field(default=None)
    top_p: float | None = Field(default=None)
    top_k: int | None = Field(default=None)
    repetition_penalty: float | None = Field(default=None)
    seed: int | None = Field(default=None)
    stop: list[str] | None = Field(default=None, description="Stop sequences (also cut locally).")
    timeout: float | None = Field(default=None, description="Seconds a worker may stay silent.")
    max_retries: int = Field(default=3, ge=0)
    deadline: float | None = Field(default=None, description="Seconds to obtain a worker.")
    signature_policy: Literal["strict", "warn", "off"] | None = Field(default=None)
    public_key: str | None = Field(default=None, description="Pinned autoscaler key (PEM/path).")
    payload_format: Literal["wrapped", "flat"] = Field(default="wrapped")
    additional_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Extra parameters for the model server."
    )

    _pair: ClientPair = PrivateAttr()

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        api_key: str | SecretStr | None = None,
        http_client: Any = None,
        http_async_client: Any = None,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("messages_to_prompt") is None:
            kwargs["messages_to_prompt"] = chatml_messages_to_prompt
        if endpoint is not None:
            kwargs["endpoint"] = endpoint
        backoff = kwargs.pop("backoff", None)  # vast_llm.Backoff: waits between attempts
        key = api_key or os.environ.get("VAST_API_KEY") or None
        super().__init__(api_key=SecretStr(key) if isinstance(key, str) else key, **kwargs)
        # Checks the settings now (ConfigError); the HTTP clients come on first use.
        self._pair = ClientPair.from_model(
            self,
            backoff=backoff,
            http_client=http_client,
            http_async_client=http_async_client,
        )

    @classmethod
    def class_name(cls) -> str:
        return "Vast"

    @property
    def metadata(self) -> LLMMetadata:
        openai = self.api == "openai"
        return LLMMetadata(
            context_window=self.context_window,
            num_output=self.max_new_tokens,
            is_chat_model=openai,
            is_function_calling_model=openai,
            model_name=self.model or self.endpoint or "vast",
        )

    @property
    def client(self) -> VastClient:
        return self._pair.sync

    @property
    def async_client(self) -> AsyncVastClient:
        return self._pair.async_

    # -- shared, undecorated ---------------------------------------------------------------

    def _params(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs = {k: v for k, v in kwargs.items() if k not in ("formatted",)}
        return sampling_params(
            model_sampling(self, self.max_new_tokens),
            self.additional_kwargs,
            kwargs,
            list(self.stop or []),
            model=self.model,
            openai=self.api == "openai",
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
        raw = _raw(answer.raw, answer.usage, answer.route, answer.time_to_first_token,
                   answer.finish_reason)  # fmt: skip
        return CompletionResponse(text=answer.text, raw=raw)

    @staticmethod
    def _message(text: str, calls: Sequence[Any], partial: bool = False) -> ChatMessage:
        blocks: list[Any] = [TextBlock(text=text)] if text or not calls else []
        for call in calls:
            arguments = call.arguments
            blocks.append(
                ToolCallBlock(
                    tool_call_id=call.id, tool_name=call.name or "", tool_kwargs=arguments
                )
            )
        return ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks)

    def _chat(self, answer: Completion) -> ChatResponse:
        raw = _raw(answer.raw, answer.usage, answer.route, answer.time_to_first_token,
                   answer.finish_reason)  # fmt: skip
        return ChatResponse(message=self._message(answer.text, answer.tool_calls), raw=raw)

    # -- completion ------------------------------------------------------------------------

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        answer = self.client.generate(self._prompt(prompt, formatted), **self._params(kwargs))
        return self._completion(answer)

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        stream = self.client.stream(self._prompt(prompt, formatted), **self._params(kwargs))

        def gen() -> CompletionResponseGen:
            text = ""
            with stream:
                for chunk in stream:
                    if chunk.text:
                        text += chunk.text
                        yield CompletionResponse(text=text, delta=chunk.text, raw=chunk.raw)
                # One last item: the totals (and an item even for an empty answer).
                raw = _raw(stream._builder._acc.last_raw, stream.usage, stream.route,
                           stream.time_to_first_token, stream.finish_reason)  # fmt: skip
                yield CompletionResponse(text=text, delta="", raw=raw)

        return gen()

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        answer = await self.async_client.generate(
            self._prompt(prompt, formatted), **self._params(kwargs)
        )
        return self._completion(answer)

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        stream = self.async_client.stream(self._prompt(prompt, formatted), **self._params(kwargs))

        async def gen() -> CompletionResponseAsyncGen:
            text = ""
            async with stream:
                async for chunk in stream:
                    if chunk.text:
                        text += chunk.text
                        yield CompletionResponse(text=text, delta=chunk.text, raw=chunk.raw)
                raw = _raw(stream._builder._acc.last_raw, stream.usage, stream.route,
                           stream.time_to_first_token, stream.finish_reason)  # fmt: skip
                yield CompletionResponse(text=text, delta="", raw=raw)

        return gen()

    # -- chat ------------------------------------------------------------------------------

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        params = self._params(kwargs)
        if self.api == "tgi":
            answer = self.client.generate(self._chat_prompt(messages), **params)
        else:
            answer = self.client.chat(self._messages(messages), **params)
        return self._chat(answer)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        params = self._params(kwargs)
        stream = (
            self.client.stream(self._chat_prompt(messages), **params)
            if self.api == "tgi"
            else self.client.stream_chat(self._messages(messages), **params)
        )

        def gen() -> ChatResponseGen:
            acc = Accumulator()
            with stream:
                for chunk in stream:
                    if chunk.text or chunk.tool_calls:
                        yield self._chat_piece(acc, chunk)
                yield self._chat_last(acc, stream)

        return gen()

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        params = self._params(kwargs)
        if self.api == "tgi":
            answer = await self.async_client.generate(self._chat_prompt(messages), **params)
        else:
            answer = await self.async_client.chat(self._messages(messages), **params)
        return self._chat(answer)

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        params = self._params(kwargs)
        stream = (
            self.async_client.stream(self._chat_prompt(messages), **params)
            if self.api == "tgi"
            else self.async_client.stream_chat(self._messages(messages), **params)
        )

        async def gen() -> ChatResponseAsyncGen:
            acc = Accumulator()
            async with stream:
                async for chunk in stream:
                    if chunk.text or chunk.tool_calls:
                        yield self._chat_piece(acc, chunk)
                yield self._chat_last(acc, stream)

        return gen()

    def _chat_piece(self, acc: Accumulator, chunk: Chunk) -> ChatResponse:
        acc.add(chunk)
        return ChatResponse(
            message=self._message(acc.text, acc.tool_calls), delta=chunk.text, raw=chunk.raw
        )

    def _chat_last(self, acc: Accumulator, stream: Any) -> ChatResponse:
        raw = _raw(stream._builder._acc.last_raw, stream.usage, stream.route,
                   stream.time_to_first_token, stream.finish_reason)  # fmt: skip
        return ChatResponse(message=self._message(acc.text, acc.tool_calls), delta="", raw=raw)

    # -- tools -----------------------------------------------------------------------------

    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        if self.api != "openai":
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
            prepared["tool_choice"] = "required" if tool_required else "auto"
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
                    b for b in response.message.blocks
                    if not isinstance(b, ToolCallBlock) or b is calls[0]
                ]  # fmt: skip
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
