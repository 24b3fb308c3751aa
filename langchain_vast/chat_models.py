"""ChatVast: a LangChain chat model on a Vast.ai Serverless endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any, Literal, cast

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LangSmithParams, LanguageModelInput
from langchain_core.language_models.chat_models import (
    BaseChatModel,
    agenerate_from_stream,
    generate_from_stream,
)
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    convert_to_openai_messages,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import invalid_tool_call, tool_call, tool_call_chunk
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import AliasChoices, BaseModel, Field

from vast_llm import AsyncStream, Completion, Stream, Usage

from ._common import VastFields, completion_info, lc_errors, route_metadata, usage_dict

__all__ = ["ChatVast"]


def _usage_metadata(usage: Usage | None) -> UsageMetadata | None:
    if usage is None or usage.prompt_tokens is None or usage.completion_tokens is None:
        return None
    total = usage.total_tokens or usage.prompt_tokens + usage.completion_tokens
    counts = {
        "input_tokens": usage.prompt_tokens,
        "output_tokens": usage.completion_tokens,
        "total_tokens": total,
    }
    return cast(UsageMetadata, counts)


class ChatVast(VastFields, BaseChatModel):
    """A chat model served by a Vast.ai Serverless endpoint.

    Every call obtains a worker from the autoscaler, verifies the signed assignment before the
    worker is contacted, streams its answer and retries what is safe to retry (before the first
    token) on a fresh route.

    Setup:
        .. code-block:: bash

            pip install "vast-llm[langchain]"
            export VAST_API_KEY="..."   # your Vast.ai API key
            export VAST_ENDPOINT="..."  # the endpoint's name

    Key init args — completion params:
        max_tokens: int
            Most tokens to generate (default 256; also the load estimate sent to the router).
        temperature, top_p, top_k, repetition_penalty, seed, stop
            Sampling parameters; ``stop`` is also enforced on the client.
        model: str | None
            Model name for OpenAI-compatible workers (optional: vLLM serves one model).

    Key init args — client params:
        endpoint, api_key, base_url
            Default to ``VAST_ENDPOINT``, ``VAST_API_KEY``, ``VAST_BASE_URL``.
        api: ``"openai"`` (default; ``/v1/chat/completions``) or ``"tgi"`` (messages rendered by
            ``chat_template`` and sent to ``/generate``; no tools).
        timeout, max_retries, deadline, signature_policy, public_key, payload_format

    Instantiate:
        .. code-block:: python

            from langchain_vast import ChatVast

            llm = ChatVast(endpoint="my-vllm-endpoint", max_tokens=256, temperature=0)

    Invoke:
        .. code-block:: python

            llm.invoke([("system", "Answer briefly."), ("human", "What is the capital of France?")])

    Stream:
        .. code-block:: python

            for chunk in llm.stream("Tell me a joke"):
                print(chunk.text, end="", flush=True)

    Async:
        .. code-block:: python

            await llm.ainvoke("Hello")
            async for chunk in llm.astream("Hello"):
                ...
            await llm.abatch(["a", "b", "c"])

    Tool calling:
        .. code-block:: python

            from pydantic import BaseModel

            class GetWeather(BaseModel):
                '''Get the weather in a city.'''
                city: str

            llm.bind_tools([GetWeather]).invoke("Weather in Paris?").tool_calls

    Structured output:
        .. code-block:: python

            llm.with_structured_output(GetWeather).invoke("Weather in Paris?")

    Route facts:
        ``response_metadata["vast"]`` holds the worker, reqnum, request_idx, attempts, route
        latency, signature recipe and time to first token of each answer.
    """

    api: Literal["tgi", "openai"] = "openai"
    """The worker template's API: ``openai`` (vLLM) or ``tgi``."""
    max_tokens: int = Field(
        default=256, validation_alias=AliasChoices("max_tokens", "max_new_tokens")
    )
    """Most tokens to generate (also the cost sent to the router)."""
    chat_template: Callable[[Sequence[Mapping[str, Any]]], str] | None = Field(
        default=None, exclude=True
    )
    """For ``api="tgi"``: renders OpenAI-style messages into a prompt (default: ChatML)."""

    @property
    def _llm_type(self) -> str:
        return "vast-chat"

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        return ["langchain_vast", "chat_models"]

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {**self._sampling_identity(), "max_tokens": self.max_tokens}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return self._ls_params("chat", kwargs.get("max_tokens", self.max_tokens), stop, kwargs)

    # -- request and answer ---------------------------------------------------------------

    def _messages(self, messages: list[BaseMessage]) -> list[dict[str, Any]]:
        converted = convert_to_openai_messages(messages)
        return [dict(m) for m in converted]

    def _call_params(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs = dict(kwargs)
        kwargs.pop("stream", None)
        return self._params(stop, kwargs, self.max_tokens)

    def _model_name(self, reported: str | None, params: Mapping[str, Any]) -> str:
        return reported or params.get("model") or self.model_name or self._endpoint() or "vast"

    def _chat_result(self, answer: Completion, params: Mapping[str, Any]) -> ChatResult:
        calls, invalid = [], []
        for call in answer.tool_calls:
            try:
                calls.append(tool_call(name=call.name, args=call.args, id=call.id))
            except (ValueError, TypeError) as exc:
                invalid.append(
                    invalid_tool_call(
                        name=call.name, args=call.arguments, id=call.id, error=str(exc)
                    )
                )
        info = completion_info(answer)
        info["model_name"] = self._model_name(answer.model, params)
        info["model_provider"] = "vast"
        message = AIMessage(
            content=answer.text,
            tool_calls=calls,
            invalid_tool_calls=invalid,
            usage_metadata=_usage_metadata(answer.usage),
            response_metadata=info,
        )
        generation = ChatGeneration(
            message=message, generation_info={"finish_reason": answer.finish_reason}
        )
        return ChatResult(
            generations=[generation],
            llm_output={"token_usage": usage_dict(answer.usage), "model_name": info["model_name"]},
        )

    def _chunk(self, text: str, deltas: list[Any]) -> ChatGenerationChunk:
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content=text,
                tool_call_chunks=[
                    tool_call_chunk(name=d.name, args=d.arguments or None, id=d.id, index=d.index)
                    for d in deltas
                ],
            )
        )

    def _last_chunk(
        self, stream: Stream | AsyncStream, params: Mapping[str, Any]
    ) -> ChatGenerationChunk:
        info: dict[str, Any] = {
            "finish_reason": stream.finish_reason,
            "model_name": self._model_name(stream.model, params),
            "model_provider": "vast",
            "vast": route_metadata(stream.route, stream.time_to_first_token),
        }
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=_usage_metadata(stream.usage),
                response_metadata=info,
                chunk_position="last",
            ),
            generation_info={"finish_reason": stream.finish_reason},
        )

    # -- sync ------------------------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.streaming:
            return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))
        params = self._call_params(stop, kwargs)
        with lc_errors():
            answer = self.client.chat(self._messages(messages), **params)
        return self._chat_result(answer, params)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        params = self._call_params(stop, kwargs)
        with lc_errors(), self.client.stream_chat(self._messages(messages), **params) as stream:
            for piece in stream:
                if not (piece.text or piece.tool_calls):
                    continue
                chunk = self._chunk(piece.text, piece.tool_calls)
                if run_manager:
                    run_manager.on_llm_new_token(piece.text, chunk=chunk)
                yield chunk
            last = self._last_chunk(stream, params)
            if run_manager:
                run_manager.on_llm_new_token("", chunk=last)
            yield last

    # -- async -----------------------------------------------------------------------------

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.streaming:
            return await agenerate_from_stream(self._astream(messages, stop, run_manager, **kwargs))
        params = self._call_params(stop, kwargs)
        with lc_errors():
            answer = await self.async_client.chat(self._messages(messages), **params)
        return self._chat_result(answer, params)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        params = self._call_params(stop, kwargs)
        with lc_errors():
            async with self.async_client.stream_chat(self._messages(messages), **params) as stream:
                async for piece in stream:
                    if not (piece.text or piece.tool_calls):
                        continue
                    chunk = self._chunk(piece.text, piece.tool_calls)
                    if run_manager:
                        await run_manager.on_llm_new_token(piece.text, chunk=chunk)
                    yield chunk
                last = self._last_chunk(stream, params)
                if run_manager:
                    await run_manager.on_llm_new_token("", chunk=last)
                yield last

    # -- tools -----------------------------------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: dict[str, Any] | str | bool | None = None,
        strict: bool | None = None,
        parallel_tool_calls: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer tools to the model (OpenAI-compatible workers only).

        Args:
            tools: Pydantic models, functions, LangChain tools or OpenAI tool dicts.
            tool_choice: ``"auto"``, ``"none"``, ``"required"`` / ``"any"``, a tool name,
                ``True`` (the only tool), or an OpenAI ``tool_choice`` dict.
            strict: ask for schema-exact arguments (passed through to the worker).
            parallel_tool_calls: passed through to the worker when set.
        """
        if self.api != "openai":
            raise ValueError(
                "tools need an OpenAI-compatible chat worker: use ChatVast(api='openai') with a "
                "vLLM endpoint (TGI's /generate has no tool calling)"
            )
        formatted = [convert_to_openai_tool(tool, strict=strict) for tool in tools]
        if tool_choice is not None and tool_choice is not False:
            if tool_choice is True:
                if len(formatted) != 1:
                    raise ValueError("tool_choice=True needs exactly one tool")
                tool_choice = formatted[0]["function"]["name"]
            if tool_choice == "any":
                tool_choice = "required"
            if isinstance(tool_choice, str) and tool_choice not in ("auto", "none", "required"):
                tool_choice = {"type": "function", "function": {"name": tool_choice}}
            kwargs["tool_choice"] = tool_choice
        if parallel_tool_calls is not None:
            kwargs["parallel_tool_calls"] = parallel_tool_calls
        return super().bind(tools=formatted, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        method: Literal["function_calling", "json_schema", "json_mode"] = "function_calling",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """Answers shaped by ``schema`` (a Pydantic class, TypedDict or JSON schema).

        Args:
            method: ``"function_calling"`` (default: a forced tool call), ``"json_schema"``
                (the worker's guided decoding through ``response_format``; vLLM supports it) or
                ``"json_mode"`` (any JSON object; say the keys in the prompt).
            include_raw: return ``{"raw", "parsed", "parsing_error"}`` instead of raising on
                a parsing error.
            strict: passed to the worker with the schema.
        """
        if method == "function_calling":
            return super().with_structured_output(
                schema, include_raw=include_raw, method=method, strict=strict, **kwargs
            )
        if kwargs:
            raise ValueError(f"unsupported arguments {sorted(kwargs)}")
        if self.api != "openai":
            raise ValueError(f"method={method!r} needs an OpenAI-compatible worker (api='openai')")
        if method == "json_schema":
            json_schema = convert_to_json_schema(schema)
            spec: dict[str, Any] = {
                "name": json_schema.get("title") or "output",
                "schema": json_schema,
            }
            if strict is not None:
                spec["strict"] = strict
            response_format: dict[str, Any] = {"type": "json_schema", "json_schema": spec}
        elif method == "json_mode":
            response_format = {"type": "json_object"}
        else:
            raise ValueError(
                f"method must be 'function_calling', 'json_schema' or 'json_mode', got {method!r}"
            )
        llm = self.bind(
            response_format=response_format,
            ls_structured_output_format={"kwargs": {"method": method, "strict": strict},
                                         "schema": schema},
        )  # fmt: skip
        parser: Runnable[Any, Any] = (
            PydanticOutputParser(pydantic_object=schema)
            if isinstance(schema, type) and is_basemodel_subclass(schema)
            else JsonOutputParser()
        )
        if not include_raw:
            return llm | parser
        parsed = RunnablePassthrough.assign(
            parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
        )
        fallback = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parsed.with_fallbacks(
            [fallback], exception_key="parsing_error"
        )
