"""Turning the data of server-sent events into chunks, and chunks into an answer. Pure.

The bytes-to-events step is httpx-sse's (it splits lines on CR, LF and CRLF only); what is
here starts from each event's ``data`` text:

- :class:`TGIStreamDecoder` for ``/generate_stream`` (``data:`` with no space, no ``[DONE]``;
  the last event carries ``generated_text`` and ``details``; special tokens are not text);
- :class:`OpenAIStreamDecoder` for ``/v1/completions`` and ``/v1/chat/completions``
  (``[DONE]`` ends it; a last chunk with ``choices: []`` carries usage);
- :class:`StopCutter`, which cuts the text before a stop sequence even when the sequence is
  split across chunks;
- :class:`Accumulator`, which folds chunks into the final text, finish reason, usage and
  tool calls.
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
            chunk.usage = Usage(
                _int(usage.get("prompt_tokens")),
                _int(usage.get("completion_tokens")),
                _int(usage.get("total_tokens")),
            )
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


class Accumulator:
    """Folds chunks into the final answer (text, finish reason, usage, model, tool calls)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.model: str | None = None
        self.last_raw: Any = None
        self._calls: dict[int, list[Any]] = {}

    def add(self, chunk: Chunk) -> None:
        if chunk.text:
            self.parts.append(chunk.text)
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
    def tool_calls(self) -> list[ToolCall]:
        return [
            ToolCall(id=call[0] or f"call_{index}", name=call[1] or "", arguments="".join(call[2]))
            for index, call in sorted(self._calls.items())
        ]
