"""What ChatOpenAI users bring to ChatVast, against the emulator: extra_body, token limits,
timeouts, stream usage, headers, logprobs, n, cached tokens, penalties, token counts, the
profile create_agent reads, reasoning, TGI's usage and finish reasons, and the error classes.

Each behaviour runs through invoke, ainvoke, stream and astream (``MODES``)."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.exceptions import ModelTimeoutError
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from pydantic import BaseModel

from langchain_vast import ChatVast, errors
from tests.conftest import FAST
from vast_llm import ConfigError, VastTimeout
from vast_llm.emulator import Emulator, Fault, Reasoning

MODES = ["invoke", "ainvoke", "stream", "astream"]


@pytest.fixture(scope="module")
def served() -> Iterator[Emulator]:
    """Workers serving both APIs; endpoints that think in each of vLLM's formats."""
    emu = Emulator(api="both", workers=1)
    emu.add_endpoint("rc", api="both", reasoning="reasoning_content")
    emu.add_endpoint("r", api="openai", reasoning="reasoning")
    emu.add_endpoint("think", api="both", reasoning="think")
    with emu.serve():
        yield emu


@pytest.fixture
def emu(served: Emulator) -> Emulator:
    served.reset()
    return served


def chat(emu: Emulator, endpoint: str | None = None, **kwargs: Any) -> ChatVast:
    return ChatVast(
        endpoint=endpoint or emu.endpoint,
        api_key=emu.api_key,
        base_url=emu.base_url,
        backoff=FAST,
        max_retries=0,
        **kwargs,
    )


async def run(llm: Any, mode: str, prompt: Any = "Hello there", **kwargs: Any) -> AIMessage:
    """The answer as the user gets it in ``mode`` (streams summed into one message)."""
    if mode == "invoke":
        return llm.invoke(prompt, **kwargs)  # type: ignore[no-any-return]
    if mode == "ainvoke":
        return await llm.ainvoke(prompt, **kwargs)  # type: ignore[no-any-return]
    chunks: list[AIMessageChunk] = (
        list(llm.stream(prompt, **kwargs))
        if mode == "stream"
        else [c async for c in llm.astream(prompt, **kwargs)]
    )
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    return total  # type: ignore[return-value]


def payload(emu: Emulator) -> dict[str, Any]:
    return emu.worker_requests[-1].json["payload"]  # type: ignore[no-any-return]


# -- request parameters ------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_extra_body_goes_to_the_top_level_of_the_request(emu: Emulator, mode: str) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    llm = chat(emu, extra_body={"guided_json": schema, "top_k": 5})
    await run(llm, mode, extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    sent = payload(emu)
    assert sent["guided_json"] == schema and sent["top_k"] == 5
    assert sent["chat_template_kwargs"] == {"enable_thinking": False}
    assert "extra_body" not in sent


@pytest.mark.parametrize("mode", MODES)
async def test_max_completion_tokens_is_max_tokens(emu: Emulator, mode: str) -> None:
    answer = await run(chat(emu, max_completion_tokens=3), mode)
    assert payload(emu)["max_tokens"] == 3 and "max_completion_tokens" not in payload(emu)
    assert answer.usage_metadata and answer.usage_metadata["output_tokens"] == 3
    await run(chat(emu), mode, max_completion_tokens=2)
    assert payload(emu)["max_tokens"] == 2


@pytest.mark.parametrize("mode", MODES)
async def test_request_timeout_bounds_the_call_and_is_never_sent(emu: Emulator, mode: str) -> None:
    llm = chat(emu, request_timeout=0.3)
    assert llm.timeout == 0.3
    emu.inject(Fault("slow_first_token", delay=2.0))
    with pytest.raises(ModelTimeoutError) as info:
        await run(llm, mode)
    # A stream that never started is the same retryable timeout as invoke.
    assert isinstance(info.value, errors.VastModelTimeoutError)
    assert isinstance(info.value, VastTimeout) and info.value.is_retryable
    emu.clear_faults()
    emu.inject(Fault("slow_first_token", delay=2.0))
    with pytest.raises(ModelTimeoutError):
        await run(chat(emu), mode, request_timeout=0.3)
    for request in emu.worker_requests:
        assert not {"timeout", "request_timeout"} & set(request.json["payload"])


@pytest.mark.parametrize("mode", MODES)
async def test_frequency_and_presence_penalties(emu: Emulator, mode: str) -> None:
    await run(chat(emu, frequency_penalty=0.5, presence_penalty=0.25), mode)
    assert (payload(emu)["frequency_penalty"], payload(emu)["presence_penalty"]) == (0.5, 0.25)
    await run(chat(emu), mode, frequency_penalty=1.0)
    assert payload(emu)["frequency_penalty"] == 1.0 and "presence_penalty" not in payload(emu)


@pytest.mark.parametrize("mode", ["stream", "astream"])
async def test_stream_usage_is_honoured_and_never_sent(emu: Emulator, mode: str) -> None:
    with_usage = await run(chat(emu), mode)
    assert with_usage.usage_metadata and with_usage.usage_metadata["input_tokens"] > 0
    without = await run(chat(emu, stream_usage=False), mode)
    assert without.usage_metadata is None
    assert payload(emu)["stream_options"] == {"include_usage": False}
    again = await run(chat(emu, stream_usage=False), mode, stream_usage=True)
    assert again.usage_metadata is not None
    assert all("stream_usage" not in r.json["payload"] for r in emu.worker_requests)


@pytest.mark.parametrize("mode", MODES)
async def test_default_headers_reach_workers_only(emu: Emulator, mode: str) -> None:
    llm = chat(emu, default_headers={"X-Team": "search"})
    await run(llm, mode, extra_headers={"X-Request-Id": "r1"})
    worker = emu.worker_requests[-1].headers
    assert (worker["x-team"], worker["x-request-id"]) == ("search", "r1")
    assert all("x-team" not in r.headers for r in emu.requests if r.target == "route")


def test_default_headers_never_carry_credentials(emu: Emulator) -> None:
    with pytest.raises(ConfigError, match="credentials"):
        chat(emu, default_headers={"Authorization": "Bearer x"})


class Logprobs(BaseCallbackHandler):
    def __init__(self) -> None:
        self.seen: list[Any] = []

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        logprobs = kwargs["chunk"].message.response_metadata.get("logprobs")
        if logprobs:
            self.seen.append(logprobs)


@pytest.mark.parametrize("mode", MODES)
async def test_logprobs_in_response_metadata(emu: Emulator, mode: str) -> None:
    handler = Logprobs()
    answer = await run(
        chat(emu, logprobs=True, top_logprobs=1, max_tokens=4),
        mode,
        config={"callbacks": [handler]},
    )
    entries = answer.response_metadata["logprobs"]["content"]
    assert "".join(e["token"] for e in entries) == answer.content
    assert all(e["logprob"] == -0.25 and e["top_logprobs"] for e in entries)
    assert payload(emu)["logprobs"] is True and payload(emu)["top_logprobs"] == 1


@pytest.mark.parametrize("mode", ["invoke", "stream", "astream"])
async def test_streamed_logprobs_reach_callbacks_token_by_token(emu: Emulator, mode: str) -> None:
    handler = Logprobs()
    llm = chat(emu, logprobs=True, max_tokens=4, streaming=True)
    await run(llm, mode, config={"callbacks": [handler]})
    assert [len(seen["content"]) for seen in handler.seen] == [1, 1, 1, 1]


async def test_n_gives_several_generations(emu: Emulator) -> None:
    llm = chat(emu, n=2, max_tokens=3)
    prompt: list[list[BaseMessage]] = [[HumanMessage("Hello")]]
    for result in (llm.generate(prompt), await llm.agenerate(prompt)):
        [generations] = result.generations
        assert len(generations) == 2 and all(g.text for g in generations)
    assert payload(emu)["n"] == 2
    with pytest.raises(ValueError, match="n must be 1 when streaming"):
        list(llm.stream("Hello"))


@pytest.mark.parametrize("mode", MODES)
async def test_cached_prompt_tokens_are_usage_details(emu: Emulator, mode: str) -> None:
    llm = chat(emu)
    prompt = f"A prompt seen twice ({mode})"
    first = await run(llm, mode, prompt)
    second = await run(llm, mode, prompt)
    assert first.usage_metadata is not None and second.usage_metadata is not None
    assert first.usage_metadata.get("input_token_details") == {"cache_read": 0}
    assert second.usage_metadata["input_token_details"] == {
        "cache_read": second.usage_metadata["input_tokens"]
    }


def test_token_counts_without_transformers(emu: Emulator) -> None:
    llm = chat(emu)
    assert llm.get_num_tokens("The capital of France is Paris.") == 8  # 31 ASCII chars / 4
    assert llm.get_num_tokens("東京") == 2
    assert llm.get_num_tokens_from_messages([HumanMessage("Hello there")]) > 0
    exact = chat(emu, custom_get_token_ids=lambda text: list(range(len(text.split()))))
    assert exact.get_num_tokens("one two three") == 3


# -- the profile: create_agent's structured-output strategy ------------------------------


class City(BaseModel):
    """A city."""

    name: str
    country: str


def test_profile_says_what_the_endpoint_can_do(emu: Emulator) -> None:
    profile = chat(emu).profile
    assert profile and profile["structured_output"] and profile["tool_calling"]
    tgi = chat(emu, api="tgi").profile
    assert tgi and not tgi["structured_output"] and not tgi["tool_calling"]


def test_create_agent_picks_the_provider_strategy(emu: Emulator) -> None:
    agents = pytest.importorskip("langchain.agents", reason="create_agent needs `langchain`")
    agent = agents.create_agent(chat(emu), tools=[], response_format=City)
    result = agent.invoke({"messages": [{"role": "user", "content": "Paris, in France"}]})
    assert isinstance(result["structured_response"], City)
    sent = payload(emu)
    assert sent["response_format"]["type"] == "json_schema"  # the provider strategy
    assert "tools" not in sent  # not a forced tool call (the tool strategy)


# -- reasoning ---------------------------------------------------------------------------


class Tokens(BaseCallbackHandler):
    def __init__(self) -> None:
        self.chunks: list[Any] = []

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.chunks.append(kwargs["chunk"].message)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("endpoint", "api"), [("rc", "openai"), ("r", "openai"), ("think", "openai"), ("think", "tgi")]
)
async def test_reasoning_in_additional_kwargs_and_content_blocks(
    emu: Emulator, mode: str, endpoint: str, api: str
) -> None:
    handler = Tokens()
    answer = await run(chat(emu, endpoint, api=api), mode, config={"callbacks": [handler]})
    thought = answer.additional_kwargs["reasoning_content"]
    assert thought and answer.content and "<think>" not in str(answer.content)
    blocks = answer.content_blocks
    assert blocks[0] == {"type": "reasoning", "reasoning": thought}
    assert blocks[1]["type"] == "text"
    if mode in ("stream", "astream"):
        # Reasoning streams token by token through the callbacks too.
        thinking = [m for m in handler.chunks if m.additional_kwargs.get("reasoning_content")]
        assert len(thinking) > 1
        assert "".join(m.additional_kwargs["reasoning_content"] for m in thinking) == thought


@pytest.mark.parametrize("mode", MODES)
async def test_reasoning_as_v1_content_blocks(emu: Emulator, mode: str) -> None:
    answer = await run(chat(emu, "rc", output_version="v1"), mode)
    kinds = [block["type"] for block in answer.content]  # type: ignore[index]
    assert kinds[0] == "reasoning" and "text" in kinds


def test_a_scripted_reasoning_turn() -> None:
    script = [Reasoning("The user greets me.", "Hello!")]
    with Emulator(api="openai", reasoning="reasoning_content", script=script).serve() as emu:
        answer = chat(emu).invoke("Hi")
    assert answer.additional_kwargs["reasoning_content"] == "The user greets me."
    assert answer.content == "Hello!"


def test_reasoning_is_not_sent_back_in_history(emu: Emulator) -> None:
    llm = chat(emu, "rc")
    first = llm.invoke("Hi")
    history: list[BaseMessage | tuple[str, str]] = [("human", "Hi"), first, ("human", "More")]
    llm.invoke(history)
    sent = payload(emu)["messages"][1]
    assert sent["role"] == "assistant" and "reasoning_content" not in sent


# -- TGI: usage and finish reasons as OpenAI workers give them ------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_tgi_usage_and_finish_reasons(emu: Emulator, mode: str) -> None:
    llm = chat(emu, api="tgi", max_tokens=4)
    answer = await run(llm, mode)
    usage = answer.usage_metadata
    assert usage and usage["input_tokens"] > 0 and usage["output_tokens"] == 4
    assert answer.response_metadata["finish_reason"] == "length"
    assert "native_finish_reason" not in answer.response_metadata
    natural = await run(chat(emu, api="tgi", max_tokens=200), mode)
    assert natural.response_metadata["finish_reason"] == "stop"
    assert natural.response_metadata["native_finish_reason"] == "eos_token"
    openai = await run(chat(emu, max_tokens=200), mode)
    assert openai.response_metadata["finish_reason"] == "stop"


# -- errors ------------------------------------------------------------------------------


def test_error_classes_are_static_importable_and_pickle(emu: Emulator) -> None:
    emu.inject(Fault("worker_429", times=None))
    with pytest.raises(errors.WorkerRateLimitError) as info:
        chat(emu).invoke("x")
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is errors.WorkerRateLimitError
    assert again.status_code == 429
    assert errors.WorkerRateLimitError.__module__ == "langchain_vast.errors"


@pytest.mark.parametrize("streaming", [False, True])
def test_vast_llm_finish_reasons_in_one_vocabulary(emu: Emulator, streaming: bool) -> None:
    from langchain_vast import VastLLM

    llm = VastLLM(
        endpoint=emu.endpoint,
        api_key=emu.api_key,
        base_url=emu.base_url,
        max_new_tokens=300,
        streaming=streaming,
    )
    [[generation]] = llm.generate(["Hello"]).generations
    info = generation.generation_info or {}
    assert (info["finish_reason"], info["native_finish_reason"]) == ("stop", "eos_token")
