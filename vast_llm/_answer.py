"""Building the caller's answer from what the worker sent. Pure: the clock comes in.

One :class:`AnswerBuilder` per streamed call does everything between "an event arrived" and
"a chunk goes to the caller": decoding, client-side stop sequences, accumulation and timing.
The sync and async stream drivers only move events into it and chunks out of it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ._apis import Choice, WorkerCall, parse_answer
from ._decoders import Accumulator, StopCutter, ThinkSplitter
from ._errors import WorkerError, WorkerStreamError, excerpt
from ._types import Chunk, Completion, RouteInfo, ToolCall, Usage

__all__ = ["AnswerBuilder", "whole_answer"]


def _has_payload(chunk: Chunk) -> bool:
    return bool(
        chunk.text
        or chunk.reasoning
        or chunk.finish_reason
        or chunk.usage
        or chunk.tool_calls
        or chunk.logprobs
    )


class AnswerBuilder:
    """Turns a streamed answer's events into chunks for the caller and, at the end, a Completion."""

    def __init__(self, call: WorkerCall, started: float, clock: Callable[[], float]) -> None:
        self._decoder = call.decoder()
        self._cutter = StopCutter(call.stop)
        self._think = ThinkSplitter() if call.think else None
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
        final = bool(chunk.finish_reason) or self._decoder.done
        think = self._think
        if think is not None and think.active:
            thought, chunk.text = think.feed(chunk.text)
            if final:
                more_thought, more_text = think.flush()
                thought, chunk.text = thought + more_thought, chunk.text + more_text
            if thought:
                chunk.reasoning += thought
        chunk.text = self._cutter.feed(chunk.text)
        if self._stop_cut():
            chunk.finish_reason = "stop"
        elif final:
            # The final event: whatever was held back for a possible stop was not one.
            chunk.text += self._cutter.flush()
        return self._emit(chunk)

    def end(self) -> Chunk | None:
        """The body ended (or reading stopped): raise if the answer is incomplete."""
        if not self._cutter.stopped:
            self._decoder.finish()
        thought, text = self._think.flush() if self._think is not None else ("", "")
        if text and not self._cutter.stopped:
            text = self._cutter.feed(text)
        tail = text + self._cutter.flush()
        if not (tail or thought):
            return None
        return self._emit(Chunk(text=tail, reasoning=thought))

    def _stop_cut(self) -> bool:
        return self._cutter.stopped

    def _emit(self, chunk: Chunk) -> Chunk | None:
        self._acc.add(chunk)
        if self.time_to_first_token is None and (chunk.text or chunk.tool_calls or chunk.reasoning):
            self.time_to_first_token = self._clock() - self._started
        return chunk if _has_payload(chunk) else None

    @property
    def started(self) -> bool:
        """True once output (text, reasoning or a tool call) was handed out: from then on a
        failure cuts an answer the caller has partly seen."""
        return self.time_to_first_token is not None

    @property
    def text(self) -> str:
        return self._acc.text

    @property
    def reasoning(self) -> str | None:
        return self._acc.reasoning

    @property
    def logprobs(self) -> list[dict[str, Any]] | None:
        return self._acc.logprobs

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
            reasoning=self._acc.reasoning,
            logprobs=self._acc.logprobs,
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
    elapsed = clock() - started
    first, *others = [
        _choice(call, choice, route, elapsed, body) for choice in parsed.choices or [parsed]
    ]
    first.alternatives = others
    return first


def _choice(
    call: WorkerCall, choice: Choice, route: RouteInfo, elapsed: float, body: Any
) -> Completion:
    text, finish, reasoning = choice.text, choice.finish_reason, choice.reasoning
    if call.think and reasoning is None:
        splitter = ThinkSplitter()
        thought, text = splitter.feed(text)
        more_thought, more_text = splitter.flush()
        thought, text = thought + more_thought, text + more_text
        reasoning = thought or None
    if call.stop:
        cutter = StopCutter(call.stop)
        cut = cutter.feed(text)
        if cutter.stopped:
            text, finish = cut, "stop"
    return Completion(
        text=text,
        finish_reason=finish,
        usage=choice.usage,
        route=route,
        model=choice.model,
        tool_calls=choice.tool_calls,
        latency=elapsed,
        time_to_first_token=elapsed,
        raw=body,
        reasoning=reasoning,
        logprobs=choice.logprobs,
    )
