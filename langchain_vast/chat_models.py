"""ChatVast: a LangChain chat model on a Vast.ai Serverless endpoint."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any, Literal, cast

import httpx
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LangSmithParams, LanguageModelInput
from langchain_core.language_models.chat_models import (
    BaseChatModel,
    agenerate_from_stream,
    generate_from_stream,
)
from langchain_core.language_models.model_profile import ModelProfile
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
from langchain_core.runnables import Runnable, RunnableConfig, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import AliasChoices, BaseModel, Field, field_validator

from vast_llm import AsyncStream, Chunk, Completion, Stream, Usage
from vast_llm.fields import checked_worker_headers, setting_field
from vast_llm.integration import aobserved, observed, observing

from ._common import (
    SAMPLING,
    VastFields,
    completion_info,
    finish_info,
    lc_errors,
    usage_dict,
)
from ._progress import listener_for, model_run

__all__ = ["ChatVast"]


# Generation parameters that are ChatVast fields (sent when set, overridable per call).
_FIELDS = (*SAMPLING, "frequency_penalty", "presence_penalty", "n", "logprobs", "top_logprobs")
# What only OpenAI-compatible workers understand.
_OPENAI_ONLY = ("logprobs", "top_logprobs")


def _usage_metadata(usage: Usage | None) -> UsageMetadata | None:
    if usage is None or usage.prompt_tokens is None or usage.completion_tokens is None:
        return None
    total = usage.total_tokens or usage.prompt_tokens + usage.completion_tokens
    counts: dict[str, Any] = {
        "input_tokens": usage.prompt_tokens,
        "output_tokens": usage.completion_tokens,
        "total_tokens": total,
    }
    if usage.cached_tokens is not None:
        counts["input_token_details"] = {"cache_read": usage.cached_tokens}
    if usage.reasoning_tokens is not None:
        counts["output_token_details"] = {"reasoning": usage.reasoning_tokens}
    return cast(UsageMetadata, counts)


def _reasoning(text: str | None) -> dict[str, Any]:
    return {"reasoning_content": text} if text else {}


def _logprobs(entries: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {"logprobs": {"content": entries}} if entries is not None else {}


class _Request:
    """One call's parameters, split into what goes to the worker and what does not."""

    __slots__ = ("headers", "params", "stream_usage")

    def __init__(
        self, params: dict[str, Any], headers: dict[str, str] | None, stream_usage: bool
    ) -> None:
        self.params = params
        self.headers = headers
        self.stream_usage = stream_usage


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

    Key init args — what ChatOpenAI users know:
        extra_body: dict
            Merged into the top level of the request (vLLM's ``guided_json``...).
        max_completion_tokens, request_timeout
            Other names of ``max_tokens`` and ``timeout``.
        logprobs, top_logprobs, n, frequency_penalty, presence_penalty
            Sent to OpenAI-compatible workers; logprobs in ``response_metadata["logprobs"]``.
        stream_usage: bool
            Usage on the last streamed chunk (default True).
        default_headers: dict
            Sent to workers (never to the autoscaler; credential headers are refused).

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

    Reasoning models:
        vLLM's ``reasoning_content`` / ``reasoning`` (or a leading ``<think>...</think>``) is
        ``additional_kwargs["reasoning_content"]`` of messages and chunks, and a reasoning block
        in ``content_blocks``.

    Route facts:
        ``response_metadata["vast"]`` holds the worker, reqnum, request_idx, attempts, route
        latency, signature recipe and time to first token of each answer.

    Progress (cold starts, retries):
        Before its answer starts, each call reports what it is doing (waiting for a worker,
        with the router's worker states; routed; verified; retrying; answering) as custom
        events named ``vast_progress`` of the model's own run, whose data are the fields of a
        ``vast_llm.Progress``: in ``astream_events(version="v2")`` (``on_custom_event``) and
        to callback handlers' ``on_custom_event``.
    """

    api: Literal["tgi", "openai"] = "openai"
    """The worker template's API: ``openai`` (vLLM) or ``tgi``."""
    timeout: float | httpx.Timeout | None = setting_field(
        "timeout", validation_alias=AliasChoices("timeout", "request_timeout")
    )
    max_tokens: int = Field(
        default=256,
        validation_alias=AliasChoices("max_tokens", "max_new_tokens", "max_completion_tokens"),
    )
    """Most tokens to generate (also the cost sent to the router); ``max_completion_tokens``
    and ``max_new_tokens`` are other names for it."""
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    n: int | None = None
    """Answers to generate per call (OpenAI-compatible workers; not when streaming)."""
    logprobs: bool | None = None
    """Return the answer's token log probabilities (``response_metadata["logprobs"]``)."""
    top_logprobs: int | None = None
    """With ``logprobs``: how many most likely tokens to give for each position."""
    extra_body: dict[str, Any] | None = None
    """Parameters merged into the top level of the model request, as the OpenAI SDK does:
    vLLM's own (``guided_json``, ``guided_choice``, ``chat_template_kwargs``...)."""
    stream_usage: bool = True
    """Report token usage at the end of a stream (``usage_metadata`` on the last chunk)."""
    default_headers: dict[str, str] | None = None
    """Headers sent with every worker request (never to the autoscaler; credentials such as
    ``Authorization`` are refused: workers must not see them). Whether a worker passes them
    on to its model server is up to the worker's template."""
    chat_template: Callable[[Sequence[Mapping[str, Any]]], str] | None = Field(
        default=None, exclude=True
    )
    """For ``api="tgi"``: renders OpenAI-style messages into a prompt (default: ChatML)."""

    @field_validator("default_headers")
    @classmethod
    def _no_credentials(cls, headers: dict[str, str] | None) -> dict[str, str] | None:
        return checked_worker_headers(headers)

    @property
    def _llm_type(self) -> str:
        return "vast-chat"

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        return ["langchain_vast", "chat_models"]

    @property
    def _identifying_params(self) -> dict[str, Any]:
        extra = {name: getattr(self, name) for name in _FIELDS if name not in SAMPLING}
        return {
            **self._sampling_identity(),
            "max_tokens": self.max_tokens,
            **{k: v for k, v in extra.items() if v is not None},
            **({"extra_body": self.extra_body} if self.extra_body else {}),
        }

    def _resolve_model_profile(self) -> ModelProfile | None:
        """What the endpoint can do, as LangChain reads it (``create_agent`` picks its
        structured-output strategy from it): vLLM chat workers call tools and follow JSON
        schemas (guided decoding); TGI's ``/generate`` does neither."""
        openai = self.api == "openai"
        return ModelProfile(
            text_inputs=True,
            text_outputs=True,
            tool_calling=openai,
            tool_choice=openai,
            tool_call_streaming=openai,
            structured_output=openai,
        )

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return self._ls_params("chat", kwargs.get("max_tokens", self.max_tokens), stop, kwargs)

    # -- request and answer ---------------------------------------------------------------

    def _messages(self, messages: list[BaseMessage]) -> list[dict[str, Any]]:
        converted = convert_to_openai_messages(messages)
        return [dict(m) for m in converted]

    def _request(self, stop: list[str] | None, kwargs: dict[str, Any]) -> _Request:
        """One call's worker parameters, headers and stream-usage choice."""
        kwargs = dict(kwargs)
        kwargs.pop("stream", None)
        stream_usage = kwargs.pop("stream_usage", None)
        extra_body = kwargs.pop("extra_body", None)
        headers = {**(self.default_headers or {}), **(kwargs.pop("extra_headers", None) or {})}
        if "max_completion_tokens" in kwargs:
            kwargs["max_tokens"] = kwargs.pop("max_completion_tokens")
        params = self._params(stop, kwargs, self.max_tokens, _FIELDS)
        # As the OpenAI SDK does: extra_body's keys go to the top level of the request.
        for body in (self.extra_body, params.pop("extra_body", None), extra_body):
            if body:
                params.update(body)
        if self.api != "openai":
            asked = [name for name in _OPENAI_ONLY if params.get(name)]
            if asked:
                raise ValueError(
                    f"{asked[0]} needs an OpenAI-compatible worker (api='openai'); TGI's "
                    "/generate does not return them in the same form"
                )
            for name in _OPENAI_ONLY:
                params.pop(name, None)
        if stream_usage is None:
            stream_usage = self.stream_usage
        return _Request(params, checked_worker_headers(headers) or None, bool(stream_usage))

    def _call_params(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        return self._request(stop, kwargs).params

    def _for_stream(self, request: _Request) -> dict[str, Any]:
        params = dict(request.params)
        if int(params.get("n") or 1) > 1:
            raise ValueError("n must be 1 when streaming (ask for several answers with invoke)")
        if not request.stream_usage and self.api == "openai":
            params["stream_options"] = {"include_usage": False}
        return params

    def _model_name(self, reported: str | None, params: Mapping[str, Any]) -> str:
        return reported or params.get("model") or self.model_name or self._endpoint() or "vast"

    def _chat_result(self, answer: Completion, params: Mapping[str, Any]) -> ChatResult:
        model_name = self._model_name(answer.model, params)
        generations = [
            self._generation(choice, model_name) for choice in (answer, *answer.alternatives)
        ]
        return ChatResult(
            generations=generations,
            llm_output={"token_usage": usage_dict(answer.usage), "model_name": model_name},
        )

    def _generation(self, answer: Completion, model_name: str) -> ChatGeneration:
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
        info.update(_logprobs(answer.logprobs))
        info["model_name"] = model_name
        info["model_provider"] = "vast"
        message = AIMessage(
            content=answer.text,
            additional_kwargs=_reasoning(answer.reasoning),
            tool_calls=calls,
            invalid_tool_calls=invalid,
            usage_metadata=_usage_metadata(answer.usage),
            response_metadata=info,
        )
        return ChatGeneration(
            message=message,
            generation_info={**finish_info(answer.finish_reason), **_logprobs(answer.logprobs)},
        )

    def _chunk(self, piece: Chunk) -> ChatGenerationChunk:
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content=piece.text,
                additional_kwargs=_reasoning(piece.reasoning),
                tool_call_chunks=[
                    tool_call_chunk(name=d.name, args=d.arguments or None, id=d.id, index=d.index)
                    for d in piece.tool_calls
                ],
            ),
            generation_info=_logprobs(piece.logprobs) or None,
        )

    def _last_chunk(self, stream: Stream | AsyncStream, request: _Request) -> ChatGenerationChunk:
        info = stream.facts()
        info["model_name"] = self._model_name(stream.model, request.params)
        info["model_provider"] = "vast"
        usage = _usage_metadata(stream.usage) if request.stream_usage else None
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=usage,
                response_metadata=info,
                chunk_position="last",
            ),
            generation_info=finish_info(stream.finish_reason),
        )

    # -- the public calls: progress events go to the model's own run ------------------------
    # LangChain calls _stream/_astream without a run manager from these; model_run picks the
    # run's id beforehand so that the waiting, retrying... events (langchain_vast._progress)
    # reach its handlers as `vast_progress` custom events of this model's run.

    def invoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        config, run = model_run(self, config, asynchronous=False)
        with run or contextlib.nullcontext():
            return super().invoke(input, config, stop=stop, **kwargs)

    async def ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        config, run = model_run(self, config, asynchronous=True)
        with run or contextlib.nullcontext():
            return await super().ainvoke(input, config, stop=stop, **kwargs)

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        config, run = model_run(self, config, asynchronous=False)
        chunks = super().stream(input, config, stop=stop, **kwargs)
        return chunks if run is None else run.steps(chunks)

    def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        config, run = model_run(self, config, asynchronous=True)
        chunks = super().astream(input, config, stop=stop, **kwargs)
        return chunks if run is None else run.asteps(chunks)

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
        request = self._request(stop, kwargs)
        with lc_errors(), observing(listener_for(self, run_manager)):
            if self.api == "tgi":
                # TGI's /generate reports no prompt token count; its stream's last event does.
                with self.client.stream_chat(
                    self._messages(messages), headers=request.headers, **request.params
                ) as stream:
                    answer = stream.completion()
            else:
                answer = self.client.chat(
                    self._messages(messages), headers=request.headers, **request.params
                )
        return self._chat_result(answer, request.params)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        request = self._request(stop, kwargs)
        params = self._for_stream(request)
        with (
            lc_errors(),
            self.client.stream_chat(
                self._messages(messages), headers=request.headers, **params
            ) as stream,
        ):
            for piece in observed(stream, listener_for(self, run_manager)):
                if not (piece.text or piece.tool_calls or piece.reasoning or piece.logprobs):
                    continue
                chunk = self._chunk(piece)
                if run_manager:
                    run_manager.on_llm_new_token(piece.text, chunk=chunk, logprobs=piece.logprobs)
                yield chunk
            last = self._last_chunk(stream, request)
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
        request = self._request(stop, kwargs)
        with lc_errors(), observing(listener_for(self, run_manager)):
            if self.api == "tgi":
                async with self.async_client.stream_chat(
                    self._messages(messages), headers=request.headers, **request.params
                ) as stream:
                    answer = await stream.completion()
            else:
                answer = await self.async_client.chat(
                    self._messages(messages), headers=request.headers, **request.params
                )
        return self._chat_result(answer, request.params)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        request = self._request(stop, kwargs)
        params = self._for_stream(request)
        with lc_errors():
            async with self.async_client.stream_chat(
                self._messages(messages), headers=request.headers, **params
            ) as stream:
                async for piece in aobserved(stream, listener_for(self, run_manager)):
                    if not (piece.text or piece.tool_calls or piece.reasoning or piece.logprobs):
                        continue
                    chunk = self._chunk(piece)
                    if run_manager:
                        await run_manager.on_llm_new_token(
                            piece.text, chunk=chunk, logprobs=piece.logprobs
                        )
                    yield chunk
                last = self._last_chunk(stream, request)
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
        if formatted:  # an empty list is no tools (some servers refuse "tools": [])
            kwargs["tools"] = formatted
        return super().bind(**kwargs)

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
            ls_structured_output_format={
                "kwargs": {"method": method, "strict": strict},
                "schema": schema,
            },
        )
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
