"""Decoders: the data of server-sent events into chunks, and chunks into an answer. Pure.

(``Stream`` and ``AsyncStream``, which read a worker's answer and use these, are in ``_client``.)

The bytes-to-events step is ``_sse``'s (lines split on CR, LF and CRLF only); what is
here starts from each event's ``data`` text:

- :class:`TGIStreamDecoder` for ``/generate_stream`` (``data:`` with no space, no ``[DONE]``;
  the last event carries ``generated_text`` and ``details``; special tokens are not text);
- :class:`OpenAIStreamDecoder` for ``/v1/completions`` and ``/v1/chat/completions``
  (``[DONE]`` ends it; a last chunk with ``choices: []`` carries usage);
- :class:`StopCutter`, which cuts the text before a stop sequence even when the sequence is
  split across chunks;
- :class:`ThinkSplitter`, which moves a chat answer's leading ``<think>...</think>`` (a
  reasoning model served without a reasoning parser, or through TGI) into ``reasoning``;
- :class:`Accumulator`, which folds chunks into the final text, reasoning, finish reason,
  usage, logprobs and tool calls.

Reasoning comes from vLLM's fields (``delta.reasoning_content``, or ``delta.reasoning`` in newer
versions); usage details from ``prompt_tokens_details.cached_tokens`` and
``completion_tokens_details.reasoning_tokens``; logprobs from ``choice.logprobs`` (chat:
``content`` entries; completions: the ``tokens`` / ``token_logprobs`` / ``top_logprobs``
columns, turned into entries of the chat shape).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

from ._errors import WorkerStreamError, excerpt
from ._types import Chunk, ToolCall, ToolCallDelta, Usage

__all__ = [
    "Accumulator",
    "OpenAIStreamDecoder",
    "StopCutter",
    "StreamDecoder",
    "TGIStreamDecoder",
    "ThinkSplitter",
    "parse_logprobs",
    "parse_usage",
    "reasoning_of",
]


class StreamDecoder(Protocol):
    """Decodes one event's data at a time; ``done`` once the final event has been seen."""

    done: bool

    def feed(self, data: str) -> Chunk | None:
        """Decode one event's data; None for events that carry nothing for the caller."""
        ...

    def finish(self) -> None:
        """Called at the end of the body: raise WorkerStreamError if the answer is incomplete."""
        ...


def _load(data: str, api: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply to parse
        raise WorkerStreamError(
            f"malformed {api} stream: an event's data is not JSON: {excerpt(data)!r}"
        ) from None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _bad_chunk(data: str) -> WorkerStreamError:
    return WorkerStreamError(f"malformed OpenAI stream chunk: {excerpt(data)!r}")


def _text(value: Any, data: str) -> str:
    """A text field: a string, or absent (null); anything else is a malformed event."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _bad_chunk(data)
    return value


def _detail(details: Any, name: str) -> int | None:
    return _int(details.get(name)) if isinstance(details, dict) else None


def parse_usage(usage: dict[str, Any]) -> Usage:
    """An OpenAI-style ``usage`` object (cached and reasoning token details included)."""
    return Usage(
        _int(usage.get("prompt_tokens")),
        _int(usage.get("completion_tokens")),
        _int(usage.get("total_tokens")),
        _detail(usage.get("prompt_tokens_details"), "cached_tokens"),
        _detail(usage.get("completion_tokens_details"), "reasoning_tokens"),
    )


def reasoning_of(fields: dict[str, Any]) -> str:
    """The reasoning in a chat message or delta: vLLM's ``reasoning_content``, or
    ``reasoning`` (its newer name); "" when there is none."""
    value = fields.get("reasoning_content")
    if not isinstance(value, str):
        value = fields.get("reasoning")
    return value if isinstance(value, str) else ""


def parse_logprobs(value: Any) -> list[dict[str, Any]] | None:
    """A choice's ``logprobs`` as a list of per-token entries (OpenAI chat's shape: ``token``,
    ``logprob``, ``bytes``, ``top_logprobs``); completions' column form is turned into it."""
    if not isinstance(value, dict):
        return None
    content = value.get("content")
    if isinstance(content, list):
        return [entry for entry in content if isinstance(entry, dict)]
    tokens = value.get("tokens")
    if not isinstance(tokens, list):
        return None
    logprobs = value.get("token_logprobs")
    tops = value.get("top_logprobs")
    entries: list[dict[str, Any]] = []
    for at, token in enumerate(tokens):
        entry: dict[str, Any] = {
            "token": token,
            "logprob": logprobs[at] if isinstance(logprobs, list) and at < len(logprobs) else None,
        }
        top = tops[at] if isinstance(tops, list) and at < len(tops) else None
        if isinstance(top, dict):
            entry["top_logprobs"] = [{"token": t, "logprob": lp} for t, lp in top.items()]
        entries.append(entry)
    return entries


class TGIStreamDecoder:
    """Events of a TGI ``/generate_stream`` answer."""

    def __init__(self) -> None:
        self.done = False

    def feed(self, data: str) -> Chunk | None:
        if not data.strip() or self.done:
            return None
        event = _load(data, "TGI")
        if not isinstance(event, dict):
            raise WorkerStreamError(f"malformed TGI stream event: {excerpt(data)!r}")
        if "error" in event:
            kind = event.get("error_type")
            raise WorkerStreamError(
                f"the worker reported an error mid-stream: {excerpt(str(event['error']))}"
                + (f" ({excerpt(str(kind))})" if kind else ""),
                body=excerpt(data),
            )
        token = event.get("token")
        if not isinstance(token, dict):
            raise WorkerStreamError(f"malformed TGI stream event (no token): {excerpt(data)!r}")
        text = token.get("text")
        if not isinstance(text, str):
            raise WorkerStreamError(f"malformed TGI stream token: {excerpt(data)!r}")
        chunk = Chunk(text="" if token.get("special") else text, raw=event)
        if event.get("generated_text") is not None:
            self.done = True
            details = event.get("details")
            if isinstance(details, dict):
                reason = details.get("finish_reason")
                chunk.finish_reason = reason if isinstance(reason, str) and reason else "unknown"
                chunk.usage = Usage.from_counts(
                    _int(details.get("input_length")), _int(details.get("generated_tokens"))
                )
            else:
                chunk.finish_reason = "unknown"
        return chunk

    def finish(self) -> None:
        if not self.done:
            raise WorkerStreamError(
                "the worker's TGI stream ended before its final event: the answer is incomplete"
            )


def _openai_error(event: dict[str, Any]) -> str | None:
    error = event.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or error)
    if error:
        return str(error)
    if event.get("object") == "error":
        return str(event.get("message") or event)
    return None


class OpenAIStreamDecoder:
    """Chunks of an OpenAI-compatible ``/v1/completions`` or ``/v1/chat/completions`` stream."""

    def __init__(self, chat: bool) -> None:
        self.chat = chat
        self.done = False
        self._finished = False

    def feed(self, data: str) -> Chunk | None:
        if self.done:
            return None
        stripped = data.strip()
        if not stripped:
            return None
        if stripped == "[DONE]":
            self.done = True
            return None
        event = _load(data, "OpenAI")
        if not isinstance(event, dict):
            raise WorkerStreamError(f"malformed OpenAI stream chunk: {excerpt(data)!r}")
        message = _openai_error(event)
        if message is not None:
            raise WorkerStreamError(
                f"the worker reported an error mid-stream: {excerpt(message)}", body=excerpt(data)
            )
        model = event.get("model")
        chunk = Chunk(raw=event, model=model if isinstance(model, str) else None)
        usage = event.get("usage")
        if isinstance(usage, dict):
            chunk.usage = parse_usage(usage)
        choices = event.get("choices")
        if choices is None and chunk.usage is not None:
            choices = []  # a usage-only chunk may leave choices out
        if not isinstance(choices, list):
            raise _bad_chunk(data)
        for choice in choices:
            # One answer per request: choices other than index 0 (n > 1) are not ours.
            if not isinstance(choice, dict) or _int(choice.get("index", 0)) != 0:
                continue
            if self.chat:
                delta = choice.get("delta") or {}
                if not isinstance(delta, dict):
                    raise _bad_chunk(data)
                chunk.text = _text(delta.get("content"), data)
                chunk.reasoning = reasoning_of(delta)
                calls = delta.get("tool_calls") or []
                if not isinstance(calls, list):
                    raise _bad_chunk(data)
                for call in calls:
                    function = call.get("function") or {} if isinstance(call, dict) else None
                    if not isinstance(function, dict):
                        raise _bad_chunk(data)
                    name, call_id = function.get("name"), call.get("id")
                    chunk.tool_calls.append(
                        ToolCallDelta(
                            index=_int(call.get("index")) or 0,
                            id=call_id if isinstance(call_id, str) else None,
                            name=name if isinstance(name, str) else None,
                            arguments=_text(function.get("arguments"), data),
                        )
                    )
            else:
                chunk.text = _text(choice.get("text"), data)
            if choice.get("logprobs") is not None:
                chunk.logprobs = parse_logprobs(choice["logprobs"])
            reason = choice.get("finish_reason")
            if isinstance(reason, str) and reason:
                chunk.finish_reason = reason
                self._finished = True
        return chunk

    def finish(self) -> None:
        # Some servers end without [DONE]; a finish reason is enough to call the answer whole.
        if not (self.done or self._finished):
            raise WorkerStreamError(
                "the worker's OpenAI stream ended without a finish reason or [DONE]: "
                "the answer is incomplete"
            )


class StopCutter:
    """Cuts streamed text before the first stop sequence to complete, across chunk boundaries.

    Text that could be the start of a stop sequence is held back until the next chunk
    settles it, so nothing after a stop sequence is ever handed out.
    """

    def __init__(self, stops: Sequence[str] | None) -> None:
        self.stops = [s for s in (stops or ()) if s]
        self.held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """The part of ``text`` (plus what was held) that is safe to hand out now."""
        if not self.stops or self.stopped:
            return "" if self.stopped else text
        buffer = self.held + text
        # The stop that completes first wins (ties: the one that starts first), as when text is
        # generated one character at a time: so the cut never depends on how text was chunked.
        cut, end = -1, -1
        for stop in self.stops:
            at = buffer.find(stop)
            if at < 0:
                continue
            stop_end = at + len(stop)
            if cut < 0 or stop_end < end or (stop_end == end and at < cut):
                cut, end = at, stop_end
        if cut >= 0:
            self.stopped = True
            self.held = ""
            return buffer[:cut]
        keep = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(buffer)), keep, -1):
                if buffer.endswith(stop[:size]):
                    keep = size
                    break
        self.held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """At the end of the answer: the held text was not a stop after all."""
        held, self.held = self.held, ""
        return held


_OPEN, _CLOSE = "<think>", "</think>"


class ThinkSplitter:
    """Moves a chat answer's leading ``<think>...</think>`` from the text to the reasoning.

    A reasoning model (Qwen3, DeepSeek-R1...) served without a reasoning parser, or through
    TGI, writes its thinking into the text. When the answer *starts* with ``<think>`` (after
    whitespace), what follows up to ``</think>`` is reasoning and the answer begins after the
    whitespace that follows the tag; otherwise the text is left alone. Tags split across
    chunks are recognised: text that may be the start of a tag is held until it is settled.
    """

    def __init__(self) -> None:
        self._state = "start"  # start → thinking → after → answer, or start → plain
        self._held = ""
        self._thought = False  # some reasoning was handed out

    @property
    def active(self) -> bool:
        """False once the text is known to be plain: nothing more to do."""
        return self._state != "plain"

    def feed(self, text: str) -> tuple[str, str]:
        """(reasoning, text) that can be handed out now."""
        if self._state == "plain" or not text:
            return "", text
        buffer = self._held + text
        self._held = ""
        if self._state == "start":
            stripped = buffer.lstrip()
            if not stripped or (len(stripped) < len(_OPEN) and _OPEN.startswith(stripped)):
                self._held = buffer  # still undecided
                return "", ""
            if not stripped.startswith(_OPEN):
                self._state = "plain"
                return "", buffer
            self._state = "thinking"
            buffer = stripped[len(_OPEN) :]
        if self._state == "thinking":
            if not self._thought:
                buffer = buffer.lstrip("\n")  # the line break after <think>
            end = buffer.find(_CLOSE)
            if end < 0:
                # Hold what may begin the closing tag, and line breaks that may precede it.
                keep = _partial_suffix(buffer, _CLOSE)
                keep += len(buffer[: len(buffer) - keep]) - len(
                    buffer[: len(buffer) - keep].rstrip("\n")
                )
                self._held = buffer[len(buffer) - keep :] if keep else ""
                thought = buffer[: len(buffer) - keep]
                self._thought = self._thought or bool(thought)
                return thought, ""
            self._state = "after"
            thought, buffer = buffer[:end].rstrip("\n"), buffer[end + len(_CLOSE) :]
            answer = self.feed(buffer)[1] if buffer else ""
            return thought, answer
        if self._state == "after":
            # The whitespace between the closing tag and the answer is not part of it.
            rest = buffer.lstrip()
            if not rest:
                return "", ""
            self._state = "answer"
            return "", rest
        return "", buffer

    def flush(self) -> tuple[str, str]:
        """At the end: held text was not a tag after all."""
        held, self._held = self._held, ""
        if self._state == "thinking":
            return held.rstrip("\n"), ""
        return "", held if self._state in ("start", "plain", "answer") else ""


def _partial_suffix(text: str, tag: str) -> int:
    """How many characters at the end of ``text`` could begin ``tag``."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


class Accumulator:
    """Folds chunks into the final answer (text, reasoning, finish reason, usage, model,
    logprobs, tool calls)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.reasoning_parts: list[str] = []
        self.logprobs: list[dict[str, Any]] | None = None
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.model: str | None = None
        self.last_raw: Any = None
        self._calls: dict[int, list[Any]] = {}

    def add(self, chunk: Chunk) -> None:
        if chunk.text:
            self.parts.append(chunk.text)
        if chunk.reasoning:
            self.reasoning_parts.append(chunk.reasoning)
        if chunk.logprobs:
            if self.logprobs is None:
                self.logprobs = []
            self.logprobs.extend(chunk.logprobs)
        if chunk.finish_reason:
            self.finish_reason = chunk.finish_reason
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.model:
            self.model = chunk.model
        if chunk.raw is not None:
            self.last_raw = chunk.raw
        for delta in chunk.tool_calls:
            call = self._calls.setdefault(delta.index, [None, None, []])
            call[0] = call[0] or delta.id
            call[1] = call[1] or delta.name
            call[2].append(delta.arguments)

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def reasoning(self) -> str | None:
        return "".join(self.reasoning_parts) if self.reasoning_parts else None

    @property
    def tool_calls(self) -> list[ToolCall]:
        return [
            ToolCall(id=call[0] or f"call_{index}", name=call[1] or "", arguments="".join(call[2]))
            for index, call in sorted(self._calls.items())
        ]
