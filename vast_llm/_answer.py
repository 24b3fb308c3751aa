"""Building the caller's answer from what the worker sent. Pure: the clock comes in.

One :class:`AnswerBuilder` per streamed call does everything between "an event arrived" and
"a chunk goes to the caller": decoding, client-side stop sequences, accumulation and timing.
The sync and async stream drivers only move events into it and chunks out of it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ._apis import WorkerCall, parse_answer
from ._errors import WorkerError, WorkerStreamError, excerpt
from ._stream import Accumulator, StopCutter
from ._types import Chunk, Completion, RouteInfo, ToolCall, Usage

__all__ = ["AnswerBuilder", "whole_answer"]


def _has_payload(chunk: Chunk) -> bool:
    return bool(chunk.text or chunk.finish_reason or chunk.usage or chunk.tool_calls)


class AnswerBuilder:
    """Turns a streamed answer's events into chunks for the caller and, at the end, a Completion."""

    def __init__(self, call: WorkerCall, started: float, clock: Callable[[], float]) -> None:
        self._decoder = call.decoder()
        self._cutter = StopCutter(call.stop)
        self._acc = Accumulator()
        self._started = started
        self._clock = clock
        self.time_to_first_token: float | None = None
        self.route: RouteInfo | None = None

    def restart(self, started: float) -> None:
        """The request really starts now (after waiting for a turn): time from here."""
        self._started = started

    @property
    def complete(self) -> bool:
        """True once the final event came (the model ended; not a client-side stop cut)."""
        return self._decoder.done

    @property
    def finished(self) -> bool:
        """True once nothing more should be read: the final event came, or a stop was cut."""
        return self._decoder.done or self._cutter.stopped

    def feed(self, event: str, data: str) -> Chunk | None:
        """One server-sent event in; the chunk to hand out (or None) back."""
        if event == "error":
            raise WorkerStreamError(
                f"the worker sent an error event mid-stream: {excerpt(data)}", body=excerpt(data)
            )
        if self._cutter.stopped:
            return None
        chunk = self._decoder.feed(data)
        if chunk is None:
            return None
        chunk.text = self._cutter.feed(chunk.text)
        if self._stop_cut():
            chunk.finish_reason = "stop"
        elif chunk.finish_reason or self._decoder.done:
            # The final event: whatever was held back for a possible stop was not one.
            chunk.text += self._cutter.flush()
        return self._emit(chunk)

    def end(self) -> Chunk | None:
        """The body ended (or reading stopped): raise if the answer is incomplete."""
        if not self._cutter.stopped:
            self._decoder.finish()
        tail = self._cutter.flush()
        return self._emit(Chunk(text=tail)) if tail else None

    def _stop_cut(self) -> bool:
        return self._cutter.stopped

    def _emit(self, chunk: Chunk) -> Chunk | None:
        self._acc.add(chunk)
        if self.time_to_first_token is None and (chunk.text or chunk.tool_calls):
            self.time_to_first_token = self._clock() - self._started
        return chunk if _has_payload(chunk) else None

    @property
    def text(self) -> str:
        return self._acc.text

    @property
    def finish_reason(self) -> str | None:
        return self._acc.finish_reason

    @property
    def usage(self) -> Usage | None:
        return self._acc.usage

    @property
    def model(self) -> str | None:
        return self._acc.model

    @property
    def tool_calls(self) -> list[ToolCall]:
        return self._acc.tool_calls

    @property
    def last_raw(self) -> Any:
        return self._acc.last_raw

    def completion(self) -> Completion:
        """The whole answer so far (call after the stream ended for the final one)."""
        if self.route is None:
            raise RuntimeError("the stream has not started: iterate it first")
        return Completion(
            text=self._acc.text,
            finish_reason=self._acc.finish_reason,
            usage=self._acc.usage,
            route=self.route,
            model=self._acc.model,
            tool_calls=self._acc.tool_calls,
            latency=self._clock() - self._started,
            time_to_first_token=self.time_to_first_token,
            raw=self._acc.last_raw,
        )


def whole_answer(
    call: WorkerCall,
    content: bytes,
    route: RouteInfo,
    started: float,
    clock: Callable[[], float],
) -> Completion:
    """Parse a non-streamed answer and apply the client-side stop sequences."""
    try:
        body = json.loads(content)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply to parse
        raise WorkerError(
            f"worker {route.worker_url} answered with something that is not JSON: "
            f"{excerpt(content)!r}",
            status_code=200,
            body=excerpt(content),
            worker_url=route.worker_url,
        ) from None
    parsed = parse_answer(call.kind, body)
    text, finish = parsed.text, parsed.finish_reason
    cutter = StopCutter(call.stop)
    cut = cutter.feed(text)
    if cutter.stopped:
        text, finish = cut, "stop"
    elapsed = clock() - started
    return Completion(
        text=text,
        finish_reason=finish,
        usage=parsed.usage,
        route=route,
        model=parsed.model,
        tool_calls=parsed.tool_calls,
        latency=elapsed,
        time_to_first_token=elapsed,
        raw=body,
    )
