"""The values the client hands back: assignments, route facts, completions and stream chunks."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FINISH_REASONS",
    "Assignment",
    "Chunk",
    "Completion",
    "RouteInfo",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
    "common_finish_reason",
]

FINISH_REASONS: Mapping[str, str] = {
    # TGI's: the model's end-of-sequence token, a stop sequence ("length" is the same word).
    "eos_token": "stop",
    "stop_sequence": "stop",
}
"""TGI's finish reasons in OpenAI's vocabulary; OpenAI's own (``stop``, ``length``,
``tool_calls``...) and anything unknown are kept as they are."""


def common_finish_reason(reason: str | None) -> str | None:
    """A worker's finish reason in OpenAI's vocabulary (``stop``, ``length``, ``tool_calls``...),
    whichever API the worker speaks: TGI's ``eos_token`` and ``stop_sequence`` are ``stop``."""
    if reason is None:
        return None
    return FINISH_REASONS.get(reason, reason)


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts as the model server reported them (None where it did not say)."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cached_tokens: int | None = None
    """Prompt tokens served from the server's prefix cache (vLLM's
    ``prompt_tokens_details.cached_tokens``, reported when the server enables it)."""
    reasoning_tokens: int | None = None
    """Completion tokens spent reasoning (``completion_tokens_details.reasoning_tokens``)."""

    @classmethod
    def from_counts(cls, prompt: int | None, completion: int | None) -> Usage:
        total = prompt + completion if prompt is not None and completion is not None else None
        return cls(prompt, completion, total)

    def to_dict(self) -> dict[str, Any]:
        """The known counts, OpenAI-style (``prompt_tokens``, ``completion_tokens``,
        ``prompt_tokens_details`` with ``cached_tokens``...)."""
        counts: dict[str, Any] = {
            name: count
            for name, count in (
                ("prompt_tokens", self.prompt_tokens),
                ("completion_tokens", self.completion_tokens),
                ("total_tokens", self.total_tokens),
            )
            if count is not None
        }
        if self.cached_tokens is not None:
            counts["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        if self.reasoning_tokens is not None:
            counts["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
        return counts


def answer_facts(
    finish_reason: str | None,
    model: str | None,
    usage: Usage | None,
    route: RouteInfo | None,
    time_to_first_token: float | None,
) -> dict[str, Any]:
    """What the framework wrappers report about an answer, in one shape (see
    :meth:`Completion.facts`)."""
    common = common_finish_reason(finish_reason)
    facts: dict[str, Any] = {"finish_reason": common}
    if finish_reason != common:
        facts["native_finish_reason"] = finish_reason
    facts["model_name"] = model
    facts["usage"] = {} if usage is None else usage.to_dict()
    facts["vast"] = {} if route is None else route.to_dict(time_to_first_token)
    return facts


@dataclass(frozen=True, slots=True)
class RouteInfo:
    """Facts about how one request reached its worker.

    Attributes:
        endpoint: the endpoint name.
        worker_url: the worker that served the request.
        reqnum: the worker's request number from the signed assignment.
        request_idx: the router's index for this logical request (stable across re-polls).
        attempts: worker calls made (1 unless a failure was retried on a fresh route).
        route_calls: ``/route/`` calls made, re-polls and retries included.
        route_latency: seconds from the start of the request to the verified assignment used.
        signature: the recipe that verified ("g3", "g2", "g1"), or "unverified" (policy
            ``warn``) or "unchecked" (policy ``off``).
        session_id: the worker session the request was sent in (None for a routed request).
            In a session, ``route_calls`` and ``route_latency`` count only the routing this
            request did itself (none, unless it had to make a new session); the other facts
            are the session's assignment.
    """

    endpoint: str
    worker_url: str
    reqnum: int | None
    request_idx: int | None
    attempts: int
    route_calls: int
    route_latency: float
    signature: str
    session_id: str | None = None

    @property
    def verified(self) -> bool:
        """True when the assignment's signature verified against the autoscaler's key."""
        return self.signature in ("g3", "g2", "g1")

    def to_dict(self, time_to_first_token: float | None = None) -> dict[str, Any]:
        """The facts as plain data (for framework metadata and logs)."""
        facts: dict[str, Any] = {
            "worker_url": self.worker_url,
            "reqnum": self.reqnum,
            "request_idx": self.request_idx,
            "attempts": self.attempts,
            "route_calls": self.route_calls,
            "route_latency": self.route_latency,
            "signature": self.signature,
        }
        if self.session_id is not None:
            facts["session_id"] = self.session_id
        if time_to_first_token is not None:
            facts["time_to_first_token"] = time_to_first_token
        return facts


@dataclass(frozen=True, slots=True)
class Assignment:
    """One verified worker assignment: the route answer exactly as received, plus facts."""

    body: Mapping[str, Any] = field(repr=False)
    route: RouteInfo

    @property
    def url(self) -> str:
        """The worker's base address."""
        return self.route.worker_url


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A whole tool call from an OpenAI-compatible chat worker; ``arguments`` is JSON text."""

    id: str
    name: str
    arguments: str

    @property
    def args(self) -> dict[str, Any]:
        """The arguments parsed as a JSON object ({} when empty)."""
        if not self.arguments.strip():
            return {}
        value = json.loads(self.arguments)
        if not isinstance(value, dict):
            raise ValueError(f"tool call {self.name!r} arguments are not a JSON object")
        return value


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a streamed tool call; pieces with the same ``index`` concatenate."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(slots=True)
class Chunk:
    """One streamed piece of an answer.

    ``text`` is the new text (may be empty on chunks that only carry reasoning, a finish
    reason, usage or tool-call pieces); ``reasoning`` is new reasoning text of a reasoning
    model (vLLM's ``reasoning_content`` / ``reasoning``, or a chat answer's leading
    ``<think>...</think>``); ``logprobs`` holds the new tokens' log probabilities when the
    request asked for them (OpenAI's ``logprobs.content`` entries: ``token``, ``logprob``,
    ``bytes``, ``top_logprobs``); ``raw`` is the decoded event as the worker sent it.
    """

    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    tool_calls: list[ToolCallDelta] = field(default_factory=list)
    model: str | None = None
    raw: Any = field(default=None, repr=False)
    reasoning: str = ""
    logprobs: list[dict[str, Any]] | None = field(default=None, repr=False)


@dataclass(slots=True)
class Completion:
    """A whole answer.

    Attributes:
        text: the generated text (stop sequences cut off; without the reasoning).
        finish_reason: as the model server said it ("length", "eos_token", "stop", ...);
            "stop" when the client cut a stop sequence. :func:`common_finish_reason` gives it
            in OpenAI's vocabulary whatever the worker's API.
        usage: token counts when the worker reported them.
        route: how the request was routed.
        model: the model name, when the worker said it.
        tool_calls: tool calls from a chat worker.
        latency: seconds from the start of the call to the end of the answer.
        time_to_first_token: seconds to the first output: text, reasoning or a tool call (for a
            non-streamed call: to the answer).
        raw: the worker's decoded answer (the last event for a stream).
        reasoning: what a reasoning model thought before answering (None when it did not).
        logprobs: the answer's tokens with their log probabilities, when asked for
            (``logprobs=True``, ``top_logprobs=N`` on OpenAI-compatible workers).
        alternatives: the other choices when a whole answer was asked for ``n > 1`` (this
            answer is the first); each has its own text, finish reason, tool calls, reasoning
            and logprobs, and shares the route, usage and timing.
    """

    text: str
    finish_reason: str | None
    usage: Usage | None
    route: RouteInfo
    model: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    latency: float = 0.0
    time_to_first_token: float | None = None
    raw: Any = field(default=None, repr=False)
    reasoning: str | None = None
    logprobs: list[dict[str, Any]] | None = field(default=None, repr=False)
    alternatives: list[Completion] = field(default_factory=list, repr=False)

    def facts(self) -> dict[str, Any]:
        """What a framework reports about this answer, in one shape: ``finish_reason`` (in
        OpenAI's words whatever the worker; ``native_finish_reason`` when the worker said
        another), ``model_name``, ``usage`` (OpenAI-style counts) and ``vast`` (the route facts,
        with the time to first token)."""
        return answer_facts(
            self.finish_reason, self.model, self.usage, self.route, self.time_to_first_token
        )
