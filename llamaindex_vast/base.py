"""Vast: a LlamaIndex LLM on a Vast.ai Serverless endpoint."""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

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
from llama_index.core.bridge.pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    model_validator,
)
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.llms.utils import parse_partial_json

from vast_llm import (
    AsyncStream,
    AsyncVastClient,
    AsyncVastSession,
    Chunk,
    Completion,
    ConfigError,
    RouteInfo,
    Stream,
    Usage,
    VastClient,
    VastSession,
)
from vast_llm.fields import ClientFields
from vast_llm.integration import (
    ClientPair,
    ModelSession,
    SessionPair,
    call_params,
    chatml,
    clients_for,
    config_error,
    settings_of,
)

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool
    from typing_extensions import Self

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


class Vast(ClientFields, FunctionCallingLLM):
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
    """

    api_key: SecretStr | None = Field(default=None, exclude=True, description="Vast.ai API key.")
    model: str | None = Field(default=None, description="Model name for OpenAI-compatible workers.")
    max_new_tokens: int = Field(default=256, gt=0, description="Most tokens to generate.")
    context_window: int = Field(default=4096, gt=0, description="The served model's context.")
    temperature: float | None = Field(default=None)
    top_p: float | None = Field(default=None)
    top_k: int | None = Field(default=None)
    repetition_penalty: float | None = Field(default=None)
    seed: int | None = Field(default=None)
    stop: list[str] | None = Field(default=None, description="Stop sequences (also cut locally).")
    additional_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Extra parameters for the model server."
    )
    http_client: Any = Field(default=None, exclude=True, description="An httpx.Client.")
    http_async_client: Any = Field(
        default=None, exclude=True, description="An httpx.AsyncClient or aiohttp.ClientSession."
    )

    _clients: ClientPair | None = PrivateAttr(default=None)
    _worker_session: SessionPair | None = PrivateAttr(default=None)

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
        try:
            super().__init__(**kwargs)
        except ValidationError as exc:
            raise config_error(exc) from None

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown(cls, values: Any) -> Any:
        """Unknown keyword arguments are an error (``Vast(temprature=0.1)`` must not pass)."""
        if not isinstance(values, dict):
            return values
        known = set(cls.model_fields)
        for field in cls.model_fields.values():
            if field.alias:
                known.add(field.alias)
        unknown = [name for name in values if name not in known]
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"Vast has no field {unknown[0]!r}{hint}. Parameters for the model server "
                "that are not fields go in additional_kwargs={...}."
            )
        return values

    @model_validator(mode="after")
    def _check_settings(self) -> Any:
        # Checks the settings now (ConfigError); the HTTP clients come on first use.
        self._pair()
        return self

    def _pair(self) -> ClientPair:
        """The clients for the model's current settings (edits and copies take effect)."""
        pair = clients_for(
            settings_of(self),
            http_client=self.http_client,
            http_async_client=self.http_async_client,
        )
        self._clients = pair
        return pair

    def close(self) -> None:
        """Close this model's connection pools (a later call opens new ones)."""
        if self._clients is not None:
            self._clients.close()
            self._clients = None

    async def aclose(self) -> None:
        """Close this model's connection pools, this event loop's included."""
        if self._clients is not None:
            await self._clients.aclose()
            self._clients = None

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
            is_chat_model=openai,
            is_function_calling_model=openai,
            model_name=self.model or self.endpoint or "vast",
        )

    @property
    def client(self) -> VastClient | VastSession:
        """The sync routing client for the current settings (shared by equal models); in a
        model bound to a worker session (:meth:`session`), that session."""
        if self._worker_session is not None:
            return self._worker_session.sync
        return self._pair().sync

    @property
    def async_client(self) -> AsyncVastClient | AsyncVastSession:
        """The async routing client for the current settings (a pool per event loop); in a
        model bound to a worker session (:meth:`session`), that session."""
        if self._worker_session is not None:
            return self._worker_session.async_
        return self._pair().async_

    def session(
        self, *, lifetime: float = 300.0, cost: float | None = None, recreate: bool = True
    ) -> ModelSession[Self]:
        """A worker session: ``with llm.session() as pinned:`` (or ``async with``) gives a copy
        of this LLM whose calls all go to one worker with no route call, until the block ends
        the session. Use ``pinned`` anywhere an LLM goes (``FunctionAgent(llm=pinned)``, a chat
        engine): each turn saves the route round trip and finds the conversation's prefix in
        the worker's cache. A worker that loses the session costs only that cache (a new one
        is made on a fresh route). ``lifetime`` must exceed the longest call (the worker may
        cut a call that outlives it); see :meth:`vast_llm.VastClient.session`."""
        return ModelSession(
            self._pair(), self._bound, lifetime=lifetime, cost=cost, recreate=recreate
        )

    def _bound(self, session: SessionPair) -> Self:
        pinned = self.model_copy()
        pinned._worker_session = session
        return pinned

    # -- shared, undecorated ---------------------------------------------------------------

    def _params(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs = {k: v for k, v in kwargs.items() if k not in ("formatted",)}
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
                raw = _raw(stream.raw, stream.usage, stream.route,
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
                raw = _raw(stream.raw, stream.usage, stream.route,
                           stream.time_to_first_token, stream.finish_reason)  # fmt: skip
                yield CompletionResponse(text=text, delta="", raw=raw)

        return gen()

    # -- chat ------------------------------------------------------------------------------

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        params = self._params(kwargs)
        if self._api == "tgi":
            answer = self.client.generate(self._chat_prompt(messages), **params)
        else:
            answer = self.client.chat(self._messages(messages), **params)
        return self._chat(answer)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        params = self._params(kwargs)
        stream = (
            self.client.stream(self._chat_prompt(messages), **params)
            if self._api == "tgi"
            else self.client.stream_chat(self._messages(messages), **params)
        )

        def gen() -> ChatResponseGen:
            with stream:
                for chunk in stream:
                    if chunk.text or chunk.tool_calls:
                        yield self._chat_piece(stream, chunk)
                yield self._chat_last(stream)

        return gen()

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        params = self._params(kwargs)
        if self._api == "tgi":
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
            if self._api == "tgi"
            else self.async_client.stream_chat(self._messages(messages), **params)
        )

        async def gen() -> ChatResponseAsyncGen:
            async with stream:
                async for chunk in stream:
                    if chunk.text or chunk.tool_calls:
                        yield self._chat_piece(stream, chunk)
                yield self._chat_last(stream)

        return gen()

    def _chat_piece(self, stream: Stream | AsyncStream, chunk: Chunk) -> ChatResponse:
        return ChatResponse(
            message=self._message(stream.text, stream.tool_calls), delta=chunk.text, raw=chunk.raw
        )

    def _chat_last(self, stream: Stream | AsyncStream) -> ChatResponse:
        raw = _raw(stream.raw, stream.usage, stream.route,
                   stream.time_to_first_token, stream.finish_reason)  # fmt: skip
        return ChatResponse(
            message=self._message(stream.text, stream.tool_calls), delta="", raw=raw
        )

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
