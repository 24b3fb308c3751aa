"""VastLLM: a LangChain text LLM on a Vast.ai Serverless endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LangSmithParams, LanguageModelInput
from langchain_core.language_models.llms import LLM
from langchain_core.outputs import Generation, GenerationChunk, LLMResult
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import AliasChoices, Field

from vast_llm import AsyncStream, Completion, Stream
from vast_llm.integration import aobserved, observed, observing

from ._common import (
    VastFields,
    completion_info,
    lc_errors,
    usage_dict,
)
from ._progress import listener_for, model_run

__all__ = ["VastLLM"]

# Prompts of one batch run at once when max_concurrency is not set (LangChain's own default
# would be a thread per prompt).
_BATCH_DEFAULT = 16


def _final_info(stream: Stream | AsyncStream) -> dict[str, Any]:
    return stream.facts()


def _add_counts(total: dict[str, Any], counts: dict[str, Any]) -> None:
    for name, count in counts.items():
        if isinstance(count, dict):  # prompt_tokens_details, completion_tokens_details
            _add_counts(total.setdefault(name, {}), count)
        else:
            total[name] = total.get(name, 0) + count


def _sum_usage(infos: Sequence[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {}
    for info in infos:
        _add_counts(total, info.get("usage") or {})
    return total


class VastLLM(VastFields, LLM):
    """A text-completion LLM served by a Vast.ai Serverless endpoint (TGI or vLLM).

    Setup:
        .. code-block:: bash

            pip install "vast-llm[langchain]"
            export VAST_API_KEY="..."   # your Vast.ai API key

    Key init args:
        endpoint, api_key, base_url: default to ``VAST_ENDPOINT``, ``VAST_API_KEY``,
            ``VAST_BASE_URL``.
        api: ``"tgi"`` (default; ``/generate``, ``/generate_stream``) or ``"openai"``
            (``/v1/completions``).
        max_new_tokens: most tokens to generate (alias ``max_tokens``; default 256).
        temperature, top_p, top_k, repetition_penalty, seed, stop: sampling.
        streaming: stream even in ``invoke`` (tokens reach callbacks as they come).
        timeout, max_retries, deadline, signature_policy, public_key, payload_format.

    Instantiate:
        .. code-block:: python

            from langchain_vast import VastLLM

            llm = VastLLM(endpoint="my-tgi-endpoint", max_new_tokens=128)

    Invoke / stream / batch:
        .. code-block:: python

            llm.invoke("The capital of France is")
            for token in llm.stream("Once upon a time"):
                print(token, end="", flush=True)
            await llm.abatch(["a", "b", "c"])     # concurrent, at most max_concurrency at once

    In a chain:
        .. code-block:: python

            from langchain_core.output_parsers import StrOutputParser
            from langchain_core.prompts import PromptTemplate

            chain = PromptTemplate.from_template("Q: {q}\\nA:") | llm | StrOutputParser()
            chain.invoke({"q": "Why is the sky blue?"})

    ``generation_info`` carries ``finish_reason`` (OpenAI's words for both APIs; TGI's own in
    ``native_finish_reason``), token usage and ``vast`` (the route facts:
    worker, reqnum, request_idx, attempts, route latency, signature, time to first token);
    ``llm_output`` carries ``token_usage`` and ``model_name``. Before the answer starts, each
    step of the request (waiting for a worker, routed, verified, retrying, answering) is a
    ``vast_progress`` custom event of the model's run (``astream_events``, ``on_custom_event``).
    """

    api: Literal["tgi", "openai"] = "tgi"
    """The worker template's API: ``tgi`` or ``openai`` (vLLM completions)."""
    max_new_tokens: int = Field(
        default=256, validation_alias=AliasChoices("max_new_tokens", "max_tokens")
    )
    """Most tokens to generate (also the cost sent to the router)."""

    @property
    def _llm_type(self) -> str:
        return "vast"

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        return ["langchain_vast", "llms"]

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {**self._sampling_identity(), "max_new_tokens": self.max_new_tokens}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return self._ls_params(
            "llm",
            kwargs.get("max_new_tokens", kwargs.get("max_tokens", self.max_new_tokens)),
            stop,
            kwargs,
        )

    def _call_params(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        return self._params(stop, kwargs, self.max_new_tokens)

    @staticmethod
    def _generation(answer: Completion) -> Generation:
        info = completion_info(answer)
        info["usage"] = usage_dict(answer.usage)
        return Generation(text=answer.text, generation_info=info)

    # -- the public streams: progress events go to the model's own run -----------------------
    # LangChain calls _stream/_astream without a run manager from these; model_run picks the
    # run's id beforehand (langchain_vast._progress). invoke() reaches _generate, which has one.

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[str]:
        config, run = model_run(self, config, asynchronous=False)
        chunks = super().stream(input, config, stop=stop, **kwargs)
        return chunks if run is None else run.steps(chunks)

    def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[str]:
        config, run = model_run(self, config, asynchronous=True)
        chunks = super().astream(input, config, stop=stop, **kwargs)
        return chunks if run is None else run.asteps(chunks)

    # -- one prompt ------------------------------------------------------------------------

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        params = self._call_params(stop, kwargs)
        with lc_errors(), self.client.stream(prompt, **params) as stream:
            for piece in observed(stream, listener_for(self, run_manager)):
                if not piece.text:
                    continue
                chunk = GenerationChunk(text=piece.text)
                if run_manager:
                    run_manager.on_llm_new_token(piece.text, chunk=chunk)
                yield chunk
            # Always one last chunk: the answer's facts, and a chunk even for an empty answer.
            last = GenerationChunk(text="", generation_info=_final_info(stream))
            if run_manager:
                run_manager.on_llm_new_token("", chunk=last)
            yield last

    async def _astream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[GenerationChunk]:
        params = self._call_params(stop, kwargs)
        with lc_errors():
            async with self.async_client.stream(prompt, **params) as stream:
                async for piece in aobserved(stream, listener_for(self, run_manager)):
                    if not piece.text:
                        continue
                    chunk = GenerationChunk(text=piece.text)
                    if run_manager:
                        await run_manager.on_llm_new_token(piece.text, chunk=chunk)
                    yield chunk
                last = GenerationChunk(text="", generation_info=_final_info(stream))
                if run_manager:
                    await run_manager.on_llm_new_token("", chunk=last)
                yield last

    def _one(
        self, prompt: str, stop: list[str] | None, run_manager: Any, kwargs: dict[str, Any]
    ) -> Generation:
        if self.streaming:
            whole: GenerationChunk | None = None
            for chunk in self._stream(prompt, stop, run_manager, **kwargs):
                whole = chunk if whole is None else whole + chunk
            assert whole is not None  # _stream always yields its last chunk
            return Generation(text=whole.text, generation_info=whole.generation_info)
        with lc_errors(), observing(listener_for(self, run_manager)):
            answer = self.client.generate(prompt, **self._call_params(stop, kwargs))
        return self._generation(answer)

    async def _aone(
        self, prompt: str, stop: list[str] | None, run_manager: Any, kwargs: dict[str, Any]
    ) -> Generation:
        if self.streaming:
            whole: GenerationChunk | None = None
            async for chunk in self._astream(prompt, stop, run_manager, **kwargs):
                whole = chunk if whole is None else whole + chunk
            assert whole is not None
            return Generation(text=whole.text, generation_info=whole.generation_info)
        with lc_errors(), observing(listener_for(self, run_manager)):
            answer = await self.async_client.generate(prompt, **self._call_params(stop, kwargs))
        return self._generation(answer)

    def _call(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> str:
        return self._one(prompt, stop, run_manager, kwargs).text

    async def _acall(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> str:
        return (await self._aone(prompt, stop, run_manager, kwargs)).text

    # -- many prompts ----------------------------------------------------------------------

    def _result(self, generations: list[Generation]) -> LLMResult:
        infos = [g.generation_info or {} for g in generations]
        model = next((i.get("model_name") for i in infos if i.get("model_name")), None)
        return LLMResult(
            generations=[[g] for g in generations],
            llm_output={
                "token_usage": _sum_usage(infos),
                "model_name": model or self.model_name or self._endpoint(),
            },
        )

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        if len(prompts) == 1:
            return self._result([self._one(prompts[0], stop, run_manager, kwargs)])
        with ThreadPoolExecutor(max_workers=min(self._batch_limit(), len(prompts))) as pool:
            done = pool.map(lambda p: self._one(p, stop, run_manager, kwargs), prompts)
            return self._result(list(done))

    async def _agenerate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        gate = asyncio.Semaphore(self._batch_limit())

        async def one(prompt: str) -> Generation:
            async with gate:
                return await self._aone(prompt, stop, run_manager, kwargs)

        return self._result(list(await asyncio.gather(*(one(p) for p in prompts))))

    # Batches run each prompt as its own call (its own callbacks and route), at most
    # max_concurrency at once unless the config says otherwise.

    def _batch_limit(self) -> int:
        # The client admits max_concurrency requests at once anyway; threads beyond that
        # would only wait at its gate.
        return self.max_concurrency or _BATCH_DEFAULT

    def _bounded(self, config: RunnableConfig | list[RunnableConfig] | None) -> Any:
        limit = self._batch_limit()
        if config is None:
            return {"max_concurrency": limit}
        if isinstance(config, list):
            return [{"max_concurrency": limit, **c} for c in config]
        return {"max_concurrency": limit, **config}

    def batch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[str]:
        return Runnable.batch(
            self, inputs, self._bounded(config), return_exceptions=return_exceptions, **kwargs
        )

    async def abatch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[str]:
        return await Runnable.abatch(
            self, inputs, self._bounded(config), return_exceptions=return_exceptions, **kwargs
        )
