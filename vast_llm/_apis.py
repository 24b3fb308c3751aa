"""The model APIs behind a worker: request bodies and whole-answer parsing. Pure.

- TGI: ``/generate`` and ``/generate_stream`` (``{"inputs", "parameters"}``);
- OpenAI-compatible (vLLM): ``/v1/completions`` and ``/v1/chat/completions``.

Sampling parameters use one vocabulary whatever the API (``max_tokens`` or
``max_new_tokens``, ``temperature``, ``top_p``, ``top_k``, ``repetition_penalty``, ``seed``,
``stop``); anything else is passed through to the model server as given.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._decoders import (
    OpenAIStreamDecoder,
    StreamDecoder,
    TGIStreamDecoder,
    parse_logprobs,
    parse_usage,
    reasoning_of,
)
from ._errors import WorkerError, excerpt, json_excerpt
from ._types import ToolCall, Usage

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "Choice",
    "Parsed",
    "WorkerCall",
    "chat_call",
    "chatml",
    "completion_call",
    "max_tokens_of",
    "parse_answer",
]

DEFAULT_MAX_TOKENS = 256
# TGI refuses more stop sequences than this by default; the client cuts the rest itself.
_TGI_MAX_STOP = 4

ChatTemplate = Callable[[Sequence[Mapping[str, Any]]], str]


@dataclass(frozen=True, slots=True)
class WorkerCall:
    """What to send to a worker: the route path, the model request, its cost and stops."""

    kind: str  # "tgi", "completions" or "chat"
    path: str
    payload: dict[str, Any]
    max_tokens: int
    stream: bool
    stop: tuple[str, ...]
    think: bool = False  # a chat answer: a leading <think>...</think> is reasoning

    def decoder(self) -> StreamDecoder:
        if self.kind == "tgi":
            return TGIStreamDecoder()
        return OpenAIStreamDecoder(chat=self.kind == "chat")


@dataclass(slots=True)
class Choice:
    """One choice of a whole answer, parsed."""

    text: str
    finish_reason: str | None
    usage: Usage | None
    model: str | None
    tool_calls: list[ToolCall]
    reasoning: str | None = None
    logprobs: list[dict[str, Any]] | None = None


@dataclass(slots=True)
class Parsed(Choice):
    """A whole (non-streamed) answer, parsed: the first choice, and all of them in order
    (more than one when the request asked for ``n > 1``)."""

    choices: list[Choice] = field(default_factory=list)


def _stops(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(s) for s in value if s)


def _split_params(params: Mapping[str, Any]) -> tuple[int, tuple[str, ...], dict[str, Any]]:
    rest = {k: v for k, v in params.items() if v is not None}
    max_new = rest.pop("max_new_tokens", None)
    max_tokens = rest.pop("max_tokens", None)
    chosen = max_new if max_new is not None else max_tokens
    limit = DEFAULT_MAX_TOKENS if chosen is None else int(chosen)
    if limit < 1:
        raise ValueError(f"max_tokens must be at least 1, got {chosen!r}")
    return limit, _stops(rest.pop("stop", None)), rest


def max_tokens_of(payload: Mapping[str, Any]) -> int | None:
    """The token budget in a model request body (OpenAI or TGI shape), if it has one."""
    for name in ("max_tokens", "max_completion_tokens", "max_new_tokens"):
        value = payload.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return int(value)
    parameters = payload.get("parameters")
    if isinstance(parameters, Mapping):
        value = parameters.get("max_new_tokens")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return int(value)
    return None


def completion_call(api: str, prompt: str, params: Mapping[str, Any], stream: bool) -> WorkerCall:
    """The worker call for a text completion under ``api`` ("tgi" or "openai")."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    limit, stops, rest = _split_params(params)
    if api == "tgi":
        parameters: dict[str, Any] = {"max_new_tokens": limit}
        temperature = rest.pop("temperature", None)
        if temperature is not None:
            # TGI rejects temperature 0; greedy decoding is how it spells "deterministic".
            if temperature <= 0:
                parameters["do_sample"] = False
            else:
                parameters["temperature"] = temperature
        top_p = rest.pop("top_p", None)
        if top_p is not None and 0 < top_p < 1:  # TGI accepts only the open interval
            parameters["top_p"] = top_p
        if stops:
            parameters["stop"] = list(stops[:_TGI_MAX_STOP])
        parameters.update(rest)
        parameters.setdefault("details", True)
        parameters.setdefault("return_full_text", False)
        return WorkerCall(
            kind="tgi",
            path="/generate_stream" if stream else "/generate",
            payload={"inputs": prompt, "parameters": parameters},
            max_tokens=limit,
            stream=stream,
            stop=stops,
        )
    payload = {"prompt": prompt, "max_tokens": limit, **rest}
    return _openai_call("completions", "/v1/completions", payload, limit, stops, stream)


def chat_call(
    api: str,
    messages: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    stream: bool,
    template: ChatTemplate,
) -> WorkerCall:
    """The worker call for a chat turn: ``/v1/chat/completions``, or a templated TGI prompt."""
    if not isinstance(messages, Sequence) or not all(isinstance(m, Mapping) for m in messages):
        raise TypeError("messages must be a sequence of {'role': ..., 'content': ...} mappings")
    if api == "tgi":
        if params.get("tools"):
            raise ValueError("tools need an OpenAI-compatible chat worker (api='openai')")
        if int(params.get("n") or 1) > 1:
            raise ValueError("n > 1 needs an OpenAI-compatible chat worker (api='openai')")
        templated = completion_call("tgi", template(messages), params, stream)
        return WorkerCall(**{**_fields(templated), "think": True})
    limit, stops, rest = _split_params(params)
    payload = {"messages": [dict(m) for m in messages], "max_tokens": limit, **rest}
    return _openai_call("chat", "/v1/chat/completions", payload, limit, stops, stream, think=True)


def _fields(call: WorkerCall) -> dict[str, Any]:
    return {name: getattr(call, name) for name in WorkerCall.__dataclass_fields__}


def _openai_call(
    kind: str,
    path: str,
    payload: dict[str, Any],
    limit: int,
    stops: tuple[str, ...],
    stream: bool,
    think: bool = False,
) -> WorkerCall:
    if stops:
        payload["stop"] = list(stops)
    if stream:
        payload["stream"] = True
        # Without this an OpenAI-compatible server never reports usage in a stream.
        options = dict(payload.get("stream_options") or {})
        options.setdefault("include_usage", True)
        payload["stream_options"] = options
    else:
        payload.pop("stream", None)
        payload.pop("stream_options", None)
    return WorkerCall(kind, path, payload, limit, stream, stops, think)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        texts = (part.get("text") for part in content if isinstance(part, Mapping))
        return "".join(text for text in texts if isinstance(text, str))
    return json_excerpt(content)


def chatml(messages: Sequence[Mapping[str, Any]]) -> str:
    """The default chat template for TGI workers: ChatML (SmolLM2, Qwen, many others)."""
    lines = [
        f"<|im_start|>{m.get('role', 'user')}\n{_content_text(m.get('content'))}<|im_end|>\n"
        for m in messages
    ]
    return "".join(lines) + "<|im_start|>assistant\n"


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _malformed(kind: str, body: Any) -> WorkerError:
    text = body if isinstance(body, str) else json_excerpt(body)
    return WorkerError(
        f"the worker's answer is not a {kind} answer: {excerpt(text)!r}",
        status_code=200,
        body=excerpt(text),
    )


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_answer(kind: str, body: Any) -> Parsed:
    """Parse a whole answer of the given kind ("tgi", "completions", "chat")."""
    if kind == "tgi":
        # Some TGI front ends wrap the answer in a one-element list.
        if isinstance(body, list) and len(body) == 1:
            body = body[0]
        if not isinstance(body, dict) or not isinstance(body.get("generated_text"), str):
            raise _malformed("TGI /generate", body)
        details = body.get("details")
        finish, usage = None, None
        if isinstance(details, dict):
            finish = _str_or_none(details.get("finish_reason"))
            prefill = details.get("prefill")
            usage = Usage.from_counts(
                len(prefill) if isinstance(prefill, list) and prefill else None,
                _int(details.get("generated_tokens")),
            )
        return Parsed(body["generated_text"], finish, usage, None, [])
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
        raise _malformed(f"OpenAI {kind}", body)
    raw_usage = body.get("usage")
    usage = parse_usage(raw_usage) if isinstance(raw_usage, dict) else None
    model = _str_or_none(body.get("model"))
    by_index: dict[int, dict[str, Any]] = {}
    for choice in body["choices"]:
        index = _int(choice.get("index", 0)) if isinstance(choice, dict) else None
        if index is not None:
            by_index.setdefault(index, choice)
    if 0 not in by_index:
        raise _malformed(f"OpenAI {kind}", body)
    choices = [_choice(kind, by_index[i], usage, model, body) for i in sorted(by_index)]
    first = choices[0]
    return Parsed(
        first.text,
        first.finish_reason,
        usage,
        model,
        first.tool_calls,
        first.reasoning,
        first.logprobs,
        choices,
    )


def _choice(
    kind: str, choice: dict[str, Any], usage: Usage | None, model: str | None, body: Any
) -> Choice:
    calls: list[ToolCall] = []
    reasoning: str | None = None
    if kind == "chat":
        message = choice.get("message")
        if not isinstance(message, dict):
            raise _malformed("OpenAI chat", body)
        text = _content_text(message.get("content"))
        reasoning = reasoning_of(message) or None
        raw_calls = message.get("tool_calls") or []
        if not isinstance(raw_calls, list):
            raise _malformed("OpenAI chat", body)
        for index, call in enumerate(raw_calls):
            function = call.get("function") or {} if isinstance(call, dict) else None
            if not isinstance(function, dict):
                raise _malformed("OpenAI chat", body)
            arguments = function.get("arguments")
            if not (arguments is None or isinstance(arguments, str)):
                try:
                    arguments = json.dumps(arguments)
                except (RecursionError, ValueError):
                    raise _malformed("OpenAI chat", body) from None
            calls.append(
                ToolCall(
                    id=_str_or_none(call.get("id")) or f"call_{index}",
                    name=_str_or_none(function.get("name")) or "",
                    arguments=arguments or "",
                )
            )
    else:
        raw_text = choice.get("text")
        if not isinstance(raw_text, str):
            raise _malformed("OpenAI completions", body)
        text = raw_text
    return Choice(
        text,
        _str_or_none(choice.get("finish_reason")),
        usage,
        model,
        calls,
        reasoning,
        parse_logprobs(choice.get("logprobs")),
    )
