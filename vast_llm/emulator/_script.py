"""Scripts for the fake model: what an endpoint answers, turn by turn.

A :class:`Script` is a sequence of turns (:class:`Turn`). Each turn holds a reply —
:class:`Answer`, :class:`ToolCall` (or several, for parallel calls), :class:`Reasoning`,
:class:`Json` or :class:`Fail` — and, optionally, a condition on the request (:class:`Match`
or any callable of the :class:`~vast_llm.emulator.GenRequest`) and how many requests it
serves. Each request a worker receives takes the first turn, in order, that is not used up and
whose condition holds; a request no turn takes gets the deterministic fake's answer (or, with
``unscripted="error"``, a 422 that says why). The script remembers which turns were used and
which requests passed a turn by, so :meth:`Script.assert_all_used` can say what went
differently than planned.

In Python::

    Script([
        ToolCall("get_weather", {"city": "Paris"}),
        Turn(Answer("Sunny in Paris."), when=Match(has_tool_results=True)),
        Reasoning("The user greets me.", "Hello!"),
        Json({"city": "Paris"}),
        Fail("worker_500"),
    ])

The same script written as JSON or YAML (:meth:`Script.from_data`, :meth:`Script.load`)::

    [{"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}},
     {"answer": "Sunny in Paris.", "when": {"has_tool_results": true}},
     {"reasoning": "The user greets me.", "answer": "Hello!"},
     {"json": {"city": "Paris"}},
     {"fail": "worker_500"}]
"""

from __future__ import annotations

import importlib
import json
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal, Union

from ._faults import FAULTS, WORKER_FAULTS, WORKER_STATUS_FAULTS, Fault

if TYPE_CHECKING:
    from ._models import GenRequest

__all__ = [
    "Answer",
    "Fail",
    "Json",
    "Match",
    "Reasoning",
    "Reply",
    "Script",
    "ScriptError",
    "ScriptLike",
    "Taken",
    "ToolCall",
    "Turn",
    "TurnLike",
]


class ScriptError(ValueError):
    """A script that cannot be read, or a scripted turn that cannot answer the request."""


@dataclass(frozen=True)
class Answer:
    """Answer in plain text (even when tools are bound: the model chose not to call one)."""

    text: str


@dataclass(frozen=True)
class ToolCall:
    """Call a tool (chat requests; other APIs get the call written as JSON text).

    Args:
        name: the tool to call; None: the tool the fake model would pick (the one whose name
            and description best match the last user message; the first on ties).
        arguments: the call's arguments; None: filled from the prompt where the tool's schema
            allows (see :class:`~vast_llm.emulator.FakeModel`).
    """

    name: str | None = None
    arguments: Mapping[str, Any] | None = field(default=None, hash=False)


@dataclass(frozen=True)
class Json:
    """Answer with a JSON document (as a model in JSON mode would).

    Args:
        value: the document; None: the fake model's own, with the keys the response format's
            schema or the prompt names.
    """

    value: Any = field(default=None, hash=False)


@dataclass(frozen=True)
class Reasoning:
    """Think, then answer: the reasoning goes out in vLLM's format (``reasoning_content`` or
    ``reasoning`` on endpoints with ``reasoning=`` set, ``<think>...</think>`` text elsewhere).

    Args:
        reasoning: the thinking.
        answer: what follows it: text, or any reply but :class:`Fail` and :class:`Reasoning`.
    """

    reasoning: str
    answer: str | Answer | Json | ToolCall | tuple[ToolCall, ...] = ""

    def __post_init__(self) -> None:
        reply = as_reply(self.answer, where="Reasoning.answer")
        if isinstance(reply, (Fail, Reasoning)):
            raise ScriptError("Reasoning.answer must be text, Json or tool calls")
        object.__setattr__(self, "answer", reply)


@dataclass(frozen=True)
class Fail:
    """Strike the request with one of the emulator's faults (``vast-llm emulator --list-faults``).

    Worker faults (``worker_500``, ``stream_cut``...) strike the request this turn matched.
    Faults that strike before a worker sees a request (``route_*``, ``not_ready``, signature
    and pubkey faults) strike the endpoint's next such call while this turn is the first unused
    turn without a condition; they cannot have a ``when`` condition.

    Args:
        fault: the fault's name.
        after: tokens sent before a stream fault strikes.
        delay: seconds, for ``route_timeout`` and ``slow_first_token``.
    """

    fault: str
    after: int = 2
    delay: float = 2.0

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ScriptError(
                f"unknown fault {self.fault!r}; known faults: {', '.join(sorted(FAULTS))}"
            )

    @property
    def at_worker(self) -> bool:
        """True when the worker applies it to the matched request."""
        return self.fault in WORKER_FAULTS

    @property
    def status_only(self) -> bool:
        """True for faults that replace the whole answer with an error status."""
        return self.fault in WORKER_STATUS_FAULTS

    def as_fault(self, endpoint: str | None = None) -> Fault:
        return Fault(self.fault, times=1, delay=self.delay, after=self.after, endpoint=endpoint)


Reply = Answer | ToolCall | tuple[ToolCall, ...] | Reasoning | Json | Fail
"""What a turn says."""

Predicate = Callable[["GenRequest"], bool]


@dataclass(frozen=True)
class Match:
    """A condition on a request; every condition given must hold (text checks ignore case).

    Args:
        last_user_contains: the last user message (the prompt, for text requests) contains this.
        prompt_contains: the whole conversation (or prompt) contains this.
        has_tool_results: the conversation holds tool results (True) or none (False).
        tool_offered: a tool of this name is bound to the request.
        kind: the request's API: ``"chat"``, ``"completions"`` or ``"tgi"``.
    """

    last_user_contains: str | None = None
    prompt_contains: str | None = None
    has_tool_results: bool | None = None
    tool_offered: str | None = None
    kind: Literal["chat", "completions", "tgi"] | None = None

    def __post_init__(self) -> None:
        if self.kind not in (None, "chat", "completions", "tgi"):
            raise ScriptError(
                f"Match.kind must be 'chat', 'completions' or 'tgi', got {self.kind!r}"
            )

    def __call__(self, request: GenRequest) -> bool:
        if self.kind is not None and request.kind != self.kind:
            return False
        if self.last_user_contains is not None and (
            self.last_user_contains.casefold() not in request.last_user_message.casefold()
        ):
            return False
        if self.prompt_contains is not None and (
            self.prompt_contains.casefold() not in request.text.casefold()
        ):
            return False
        if self.has_tool_results is not None and (
            bool(request.tool_results) != self.has_tool_results
        ):
            return False
        return self.tool_offered is None or self.tool_offered in request.tool_names

    def __str__(self) -> str:
        said = {
            "last_user_contains": "last user message contains {!r}",
            "prompt_contains": "prompt contains {!r}",
            "tool_offered": "tool {!r} offered",
            "kind": "a {} request",
        }
        parts = [
            said[f.name].format(getattr(self, f.name))
            for f in fields(self)
            if f.name in said and getattr(self, f.name) is not None
        ]
        if self.has_tool_results is not None:
            parts.append("has tool results" if self.has_tool_results else "no tool results")
        return " and ".join(parts) or "any request"


ReplyLike = Reply | str | Sequence[ToolCall]
"""A reply or its short forms: text, a list of tool calls."""


def as_reply(value: Any, *, where: str = "turn") -> Reply:
    """A reply from its short forms: text is an :class:`Answer`, a list of tool calls is one
    turn of parallel calls."""
    if isinstance(value, str):
        return Answer(value)
    if isinstance(value, (Answer, ToolCall, Reasoning, Json, Fail)):
        return value
    if isinstance(value, Sequence) and value and all(isinstance(v, ToolCall) for v in value):
        return tuple(value)
    raise ScriptError(
        f"{where}: expected text, Answer, ToolCall (or a list of them), Reasoning, Json or Fail; "
        f"got {value!r}"
    )


@dataclass(frozen=True)
class Turn:
    """One scripted turn.

    Args:
        reply: what to say; text and lists of :class:`ToolCall` are short forms. A callable
            ``(GenRequest) -> reply`` decides when the turn is taken (Python scripts only).
        when: take this turn only for requests that satisfy this (a :class:`Match`, or any
            callable ``(GenRequest) -> bool``); None: any request.
        times: how many requests it serves; None: every request it matches, never used up.
    """

    reply: Reply | Callable[[GenRequest], Any]
    when: Match | Predicate | None = None
    times: int | None = 1

    def __post_init__(self) -> None:
        if not _is_reply_function(self.reply):
            object.__setattr__(self, "reply", as_reply(self.reply))
        if self.times is not None and self.times < 1:
            raise ScriptError("Turn.times must be >= 1 (or None: no limit)")
        if isinstance(self.reply, Fail) and not self.reply.at_worker and self.when is not None:
            raise ScriptError(
                f"Fail({self.reply.fault!r}) strikes before a worker sees the request, so it "
                "cannot have a `when` condition"
            )

    @property
    def early_fault(self) -> Fail | None:
        """The fault, if this turn is one the router (not a worker) applies."""
        reply = self.reply
        return reply if isinstance(reply, Fail) and not reply.at_worker else None

    def __str__(self) -> str:
        reply = self.reply
        said = getattr(reply, "__qualname__", None) if _is_reply_function(reply) else None
        text = f"<reply from {said}>" if said else _short(repr(reply), 90)
        if self.when is not None:
            condition = (
                str(self.when)
                if isinstance(self.when, Match)
                else (getattr(self.when, "__qualname__", None) or repr(self.when))
            )
            text += f" when {condition}"
        if self.times != 1:
            text += " (every time)" if self.times is None else f" ({self.times} times)"
        return text


def _is_reply_function(value: Any) -> bool:
    return callable(value) and not isinstance(value, (type, Match))


def as_turn(value: Any, where: str = "turn") -> Turn:
    if isinstance(value, Turn):
        return value
    if _is_reply_function(value):
        return Turn(value)
    return Turn(as_reply(value, where=where))


TurnLike = Union[Turn, ReplyLike, Callable[["GenRequest"], Any]]  # noqa: UP007 (a forward name)
"""A :class:`Turn`, a reply or its short forms, or a callable reply."""


@dataclass(frozen=True)
class Taken:
    """What a script decided for one request."""

    number: int | None  # the turn's number (1-based), None when no turn took the request
    reply: Reply | None
    error: str | None = None  # unscripted="error": why no turn took it


def _ask(function: Callable[[GenRequest], Any], request: GenRequest, what: str) -> Any:
    """Call a user's condition or reply; its failure becomes a ScriptError that says whose."""
    try:
        return function(request)
    except Exception as exc:
        raise ScriptError(f"{what} raised {type(exc).__name__}: {exc}") from exc


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    half = (limit - 3) // 2
    return text[:half] + " … " + text[-half:]


def describe_request(request: GenRequest) -> str:
    """One line about a request, for failure messages."""
    if request.messages is not None:
        said = f"last user message {_short(request.last_user_message)!r}"
        results = request.tool_results
        if results:
            said += f", {len(results)} tool result(s)"
        if request.tool_names:
            said += f", tools {', '.join(request.tool_names)}"
        return f"{request.kind or 'chat'}: {said}"
    return f"{request.kind or 'text'}: prompt {_short(request.prompt or '')!r}"


_MISSES_KEPT = 3

ScriptLike = Union["Script", Sequence[TurnLike], str, "os.PathLike[str]"]
"""A :class:`Script`, a list of turns, or the path of a JSON/YAML script file."""


class Script:
    """A sequence of scripted turns for one endpoint, and its progress.

    Args:
        turns: :class:`Turn` objects or their short forms (text, a reply, a list of tool calls,
            a callable reply).
        unscripted: what a request no turn takes gets: ``"fake"`` (the deterministic fake's
            answer) or ``"error"`` (a 422 whose body says which turns it did not match).
        repeat: start again from the first turn once every turn is used up.

    A script keeps its own progress: give each endpoint its own script.
    """

    def __init__(
        self,
        turns: Iterable[TurnLike] = (),
        *,
        unscripted: Literal["fake", "error"] = "fake",
        repeat: bool = False,
    ) -> None:
        if unscripted not in ("fake", "error"):
            raise ScriptError(f"unscripted must be 'fake' or 'error', got {unscripted!r}")
        self.turns: tuple[Turn, ...] = tuple(
            as_turn(t, f"turn {i}") for i, t in enumerate(turns, 1)
        )
        self.unscripted = unscripted
        self.repeat = repeat
        self._lock = threading.Lock()
        self.rewind()

    def __repr__(self) -> str:
        used = sum(1 for n in self._uses if n)
        return f"Script({len(self.turns)} turns, {used} used, {self.requests_seen} requests seen)"

    # -- building ---------------------------------------------------------------------------

    @classmethod
    def of(cls, value: ScriptLike) -> Script:
        """A script from a :class:`Script` (itself), a list of turns, or a JSON/YAML file path."""
        if isinstance(value, Script):
            return value
        if isinstance(value, (str, os.PathLike)):
            if not os.fspath(value).endswith((".json", ".yaml", ".yml")):
                raise ScriptError(
                    f"a script given as text is the path of a .json or .yaml file, got "
                    f"{os.fspath(value)!r}; for one answer, give a list: [{os.fspath(value)!r}]"
                )
            return cls.load(value)
        return cls(value)

    @classmethod
    def from_responses(cls, responses: Sequence[str] | Callable[[GenRequest], str]) -> Script:
        """The script ``responses=`` stands for: fixed answers in turn, over and over (or a
        callable deciding every answer)."""
        if callable(responses):
            return cls([Turn(responses, times=None)])
        return cls([Answer(text) for text in responses], repeat=True)

    @classmethod
    def from_data(cls, data: Any) -> Script:
        """A script from its JSON form: a list of turns, or ``{"turns": [...], "unscripted":
        "error", "repeat": false}``. A turn is text, or an object with one reply key
        (``answer``, ``tool_call``, ``tool_calls``, ``reasoning`` [with ``answer``,
        ``tool_call``, ``tool_calls`` or ``json``], ``json``, ``fail`` [with ``after``,
        ``delay``]) and optional ``when`` (the fields of :class:`Match`) and ``times``."""
        options: dict[str, Any] = {}
        if isinstance(data, Mapping):
            unknown = set(data) - {"turns", "unscripted", "repeat"}
            if unknown or "turns" not in data:
                raise ScriptError(
                    "a script object has 'turns' and optionally 'unscripted' and 'repeat'; "
                    f"got keys {sorted(data)}"
                )
            options = {k: data[k] for k in ("unscripted", "repeat") if k in data}
            data = data["turns"]
        if not isinstance(data, list):
            raise ScriptError(f"a script is a list of turns, got {type(data).__name__}")
        return cls([_turn_from(t, f"turn {i}") for i, t in enumerate(data, 1)], **options)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Script:
        """Read a script from a ``.json`` file, or a ``.yaml``/``.yml`` file (needs PyYAML)."""
        name = os.fspath(path)
        with open(name, encoding="utf-8") as handle:
            text = handle.read()
        if name.endswith((".yaml", ".yml")):
            try:
                yaml: Any = importlib.import_module("yaml")
            except ImportError:
                raise ScriptError(
                    f"{name}: reading a YAML script needs PyYAML (pip install pyyaml); "
                    "or write the script as JSON"
                ) from None
            data = yaml.safe_load(text)
        else:
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise ScriptError(f"{name}: not valid JSON ({exc})") from None
        try:
            return cls.from_data(data)
        except ScriptError as exc:
            raise ScriptError(f"{name}: {exc}") from None

    def to_data(self) -> dict[str, Any]:
        """The JSON form (:meth:`from_data` reads it back). Callables have none."""
        return {
            "turns": [_turn_data(t, i) for i, t in enumerate(self.turns, 1)],
            "unscripted": self.unscripted,
            "repeat": self.repeat,
        }

    # -- progress ---------------------------------------------------------------------------

    def rewind(self) -> None:
        """Forget all progress (every turn unused again)."""
        with self._lock:
            self._left: list[int | None] = [t.times for t in self.turns]
            self._uses: list[int] = [0] * len(self.turns)
            self._misses: list[list[str]] = [[] for _ in self.turns]
            self._reached: list[int] = [0] * len(self.turns)
            self.requests_seen = 0

    @property
    def uses(self) -> tuple[int, ...]:
        """How many requests each turn served, in script order."""
        with self._lock:
            return tuple(self._uses)

    @property
    def unused(self) -> tuple[int, ...]:
        """The numbers (1-based) of the turns that did not serve all the requests they were
        meant to (a turn with ``times=None``: none at all)."""
        with self._lock:
            return tuple(
                i + 1
                for i, turn in enumerate(self.turns)
                if (self._uses[i] == 0)
                or (turn.times is not None and not self.repeat and self._uses[i] < turn.times)
            )

    def problems(self) -> list[str]:
        """One line per unused turn, saying which requests passed it by."""
        unused = self.unused
        with self._lock:
            lines = []
            for number in unused:
                i = number - 1
                turn = self.turns[i]
                line = f"turn {number}: {turn}"
                if turn.times is not None and self._uses[i]:
                    line += f" served {self._uses[i]} of {turn.times} requests"
                if self._misses[i]:
                    line += "; did not match " + "; ".join(self._misses[i])
                    if self._reached[i] > len(self._misses[i]):
                        line += f" (and {self._reached[i] - len(self._misses[i])} more)"
                elif turn.early_fault is not None:
                    line += "; no request was routed while it was next"
                else:
                    line += f"; no request was left for it ({self.requests_seen} seen in all)"
                lines.append(line)
            return lines

    def assert_all_used(self) -> None:
        """Raise AssertionError, naming each unused turn and the requests it did not match."""
        problems = self.problems()
        if problems:
            raise AssertionError(
                f"{len(problems)} of {len(self.turns)} scripted turns not used:\n  "
                + "\n  ".join(problems)
            )

    # -- playing (the emulator calls these) -------------------------------------------------

    def take(self, request: GenRequest) -> Taken:
        """The turn for a request a worker received (marked used)."""
        with self._lock:
            self.requests_seen += 1
            seen = self.requests_seen
            found = self._find(request, seen)
            if found is None and self.repeat and all(left == 0 for left in self._left):
                self._left = [t.times for t in self.turns]
                found = self._find(request, seen)
            if found is not None:
                return found
            if self.unscripted == "error":
                pending = [
                    f"turn {i + 1}: {t}"
                    for i, t in enumerate(self.turns)
                    if self._left[i] != 0 and t.early_fault is None
                ]
                why = (
                    "no scripted turn matches request #"
                    f"{seen} ({describe_request(request)}); "
                    + ("turns left: " + "; ".join(pending) if pending else "the script is used up")
                )
                return Taken(None, None, f"vast emulator script: {why}")
            return Taken(None, None)

    def _find(self, request: GenRequest, seen: int) -> Taken | None:
        summary: str | None = None
        for i, turn in enumerate(self.turns):
            if self._left[i] == 0 or turn.early_fault is not None:
                continue
            if turn.when is None or _ask(turn.when, request, f"turn {i + 1}'s condition"):
                if self._left[i] is not None:
                    self._left[i] = self._left[i] - 1  # type: ignore[operator]
                self._uses[i] += 1
                reply = turn.reply
                if _is_reply_function(reply):
                    where = f"turn {i + 1}'s reply"
                    reply = as_reply(_ask(reply, request, where), where=where)  # type: ignore[arg-type]
                return Taken(i + 1, reply)  # type: ignore[arg-type]
            self._reached[i] += 1
            if len(self._misses[i]) < _MISSES_KEPT:
                summary = summary or f"request #{seen} ({describe_request(request)})"
                self._misses[i].append(summary)
        return None

    def take_fault(self, family: frozenset[str]) -> Fault | None:
        """A fault of ``family`` for a call made before a worker sees the request: the first
        unused turn without a condition, if it is such a fault."""
        with self._lock:
            for i, turn in enumerate(self.turns):
                if self._left[i] == 0 or turn.when is not None:
                    continue
                fail = turn.early_fault
                if fail is None or fail.fault not in family:
                    return None
                if self._left[i] is not None:
                    self._left[i] = self._left[i] - 1  # type: ignore[operator]
                self._uses[i] += 1
                return fail.as_fault()
            return None


# -- the JSON form ---------------------------------------------------------------------------

_REPLY_KEYS = ("answer", "tool_call", "tool_calls", "reasoning", "json", "fail")
_TURN_KEYS = frozenset({*_REPLY_KEYS, "when", "times", "after", "delay"})


def _tool_call_from(value: Any, where: str) -> ToolCall:
    if isinstance(value, str):
        return ToolCall(value)
    if value is None:
        return ToolCall()
    if not isinstance(value, Mapping) or set(value) - {"name", "arguments"}:
        raise ScriptError(
            f"{where}: a tool call is a name, or an object with 'name' and "
            f"'arguments' (both optional); got {value!r}"
        )
    arguments = value.get("arguments")
    if arguments is not None and not isinstance(arguments, Mapping):
        raise ScriptError(f"{where}: 'arguments' must be an object, got {arguments!r}")
    return ToolCall(value.get("name"), arguments)


def _match_from(value: Any, where: str) -> Match:
    if not isinstance(value, Mapping):
        raise ScriptError(f"{where}: 'when' must be an object, got {value!r}")
    known = {f.name for f in fields(Match)}
    unknown = set(value) - known
    if unknown:
        raise ScriptError(
            f"{where}: unknown condition(s) {sorted(unknown)}; known: {sorted(known)}"
        )
    return Match(**value)


def _reply_from(data: Mapping[str, Any], where: str, key: str) -> Reply:
    value = data[key]
    if key == "answer":
        if not isinstance(value, str):
            raise ScriptError(f"{where}: 'answer' must be text, got {value!r}")
        return Answer(value)
    if key == "tool_call":
        return _tool_call_from(value, where)
    if key == "tool_calls":
        if not isinstance(value, list) or not value:
            raise ScriptError(f"{where}: 'tool_calls' must be a non-empty list")
        return tuple(_tool_call_from(v, where) for v in value)
    if key == "json":
        return Json(value)
    if key == "fail":
        options = {k: data[k] for k in ("after", "delay") if k in data}
        return Fail(value, **options)
    raise AssertionError(key)  # pragma: no cover


def _turn_from(data: Any, where: str) -> Turn:
    if isinstance(data, str):
        return Turn(Answer(data))
    if not isinstance(data, Mapping):
        raise ScriptError(f"{where}: a turn is text or an object, got {data!r}")
    unknown = set(data) - _TURN_KEYS
    if unknown:
        raise ScriptError(
            f"{where}: unknown key(s) {sorted(unknown)}; a turn has one of "
            f"{', '.join(_REPLY_KEYS)}, and optionally 'when' and 'times'"
        )
    keys = [k for k in _REPLY_KEYS if k in data]
    try:
        if "reasoning" in data:
            if not isinstance(data["reasoning"], str):
                raise ScriptError(f"{where}: 'reasoning' must be text")
            rest = [k for k in keys if k != "reasoning"]
            if len(rest) > 1 or "fail" in rest:
                raise ScriptError(
                    f"{where}: 'reasoning' goes with at most one of 'answer', "
                    "'tool_call', 'tool_calls' or 'json'"
                )
            then: Any = _reply_from(data, where, rest[0]) if rest else ""
            reply: Reply = Reasoning(data["reasoning"], then)
        elif len(keys) != 1:
            raise ScriptError(
                f"{where}: a turn has exactly one of {', '.join(_REPLY_KEYS)}; got {keys or 'none'}"
            )
        else:
            reply = _reply_from(data, where, keys[0])
        when = _match_from(data["when"], where) if data.get("when") is not None else None
        return Turn(reply, when=when, times=data.get("times", 1))
    except ScriptError as exc:
        message = str(exc)
        raise ScriptError(message if message.startswith(where) else f"{where}: {message}") from None
    except TypeError as exc:
        raise ScriptError(f"{where}: {exc}") from None


def _tool_call_data(call: ToolCall) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if call.name is not None:
        out["name"] = call.name
    if call.arguments is not None:
        out["arguments"] = dict(call.arguments)
    return out


def _reply_data(reply: Reply, out: dict[str, Any]) -> None:
    if isinstance(reply, Answer):
        out["answer"] = reply.text
    elif isinstance(reply, ToolCall):
        out["tool_call"] = _tool_call_data(reply)
    elif isinstance(reply, tuple):
        out["tool_calls"] = [_tool_call_data(c) for c in reply]
    elif isinstance(reply, Json):
        out["json"] = reply.value
    elif isinstance(reply, Fail):
        out.update(fail=reply.fault, after=reply.after, delay=reply.delay)
    else:
        out["reasoning"] = reply.reasoning
        _reply_data(reply.answer, out)  # type: ignore[arg-type]


def _turn_data(turn: Turn, number: int) -> dict[str, Any]:
    if _is_reply_function(turn.reply):
        raise ScriptError(f"turn {number}: a callable reply has no JSON form")
    out: dict[str, Any] = {}
    _reply_data(turn.reply, out)  # type: ignore[arg-type]  # not a callable: checked above
    if turn.when is not None:
        if not isinstance(turn.when, Match):
            raise ScriptError(f"turn {number}: a callable condition has no JSON form")
        out["when"] = {
            f.name: getattr(turn.when, f.name)
            for f in fields(Match)
            if getattr(turn.when, f.name) is not None
        }
    if turn.times != 1:
        out["times"] = turn.times
    return out
