"""Progress events as LangChain custom events named ``vast_progress``.

The core hands each :class:`vast_llm.Progress` event (waiting for a worker, routed, verified,
retrying, answering) to the listeners of :func:`vast_llm.observe`; the listeners made here pass
it on to the callback handlers of a run as a custom event whose data is the event's fields, so
it shows in ``astream_events(version="v2")`` (``event == "on_custom_event"``, ``name ==
"vast_progress"``) and in handlers' ``on_custom_event``.

**The models' events belong to the model's own run** (the custom event's ``run_id`` is the
model's). LangChain hands ``_generate`` its run manager, but calls ``_stream`` / ``_astream``
without one from ``stream()``, ``astream()`` and from ``invoke()`` under ``astream_events``, and
dispatches nothing on a chat model's behalf. So each public call of a model
(:func:`model_run`) chooses the run's id before LangChain starts the run (LangChain takes a
``run_id`` from the config) and finds the handlers the run will have (the config's callbacks
and the model's own); while the call runs, a context variable (set and reset around each step,
never across a ``yield``) tells the model's ``_stream`` whom to tell. Nothing of this happens,
and the core builds no event, when no handler would hear it.

**Embeddings and document compressors** have no run of their own in LangChain: their events
belong to the run they are called in (a chain's, a retriever's: :func:`call_listener`), as
``dispatch_custom_event``'s do, and go nowhere when they are called on their own.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    BaseCallbackHandler,
    BaseCallbackManager,
    CallbackManager,
    CallbackManagerForLLMRun,
    Callbacks,
)
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import ensure_config
from langchain_core.utils.uuid import uuid7

from vast_llm import Progress
from vast_llm.integration import ProgressListener, progress_data

__all__ = [
    "PROGRESS_EVENT",
    "ModelRun",
    "call_listener",
    "listener_for",
    "model_run",
]

PROGRESS_EVENT = "vast_progress"
"""The name of the custom event that carries a :class:`vast_llm.Progress` event's fields."""

_T = TypeVar("_T")

# (the model, its listener) while one of the model's public calls runs a step.
_RUN: contextvars.ContextVar[tuple[object, ProgressListener] | None] = contextvars.ContextVar(
    "langchain_vast_run", default=None
)


# What a run manager and a callback manager both have.
_Run = BaseCallbackManager | CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun


def _sync(manager: _Run, run_id: Any) -> ProgressListener:
    sync = CallbackManager(handlers=manager.handlers, tags=manager.tags, metadata=manager.metadata)

    def listener(event: Progress) -> None:
        sync.on_custom_event(PROGRESS_EVENT, progress_data(event), run_id=run_id)

    return listener


def _async(manager: _Run, run_id: Any) -> ProgressListener:
    amanager = AsyncCallbackManager(
        handlers=manager.handlers, tags=manager.tags, metadata=manager.metadata
    )

    async def listener(event: Progress) -> None:
        await amanager.on_custom_event(PROGRESS_EVENT, progress_data(event), run_id=run_id)

    return listener


def listener_for(
    model: object,
    run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
) -> ProgressListener | None:
    """The listener for one of a model's ``_generate`` / ``_stream`` (or async) calls: on the
    run manager LangChain handed it, else on the run of the public call running it
    (:func:`model_run`); None when no handler would hear."""
    if run_manager is not None:
        if not run_manager.handlers:
            return None
        if isinstance(run_manager, AsyncCallbackManagerForLLMRun):
            return _async(run_manager, run_manager.run_id)
        return _sync(run_manager, run_manager.run_id)
    current = _RUN.get()
    return current[1] if current is not None and current[0] is model else None


def _handlers(callbacks: Any) -> list[BaseCallbackHandler]:
    if isinstance(callbacks, BaseCallbackManager):
        return list(callbacks.handlers)
    return list(callbacks or ())


def _tags(callbacks: Any) -> list[str]:
    return list(callbacks.inheritable_tags) if isinstance(callbacks, BaseCallbackManager) else []


def _metadata(callbacks: Any) -> dict[str, Any]:
    if isinstance(callbacks, BaseCallbackManager):
        return dict(callbacks.inheritable_metadata)
    return {}


class ModelRun:
    """One public call of a model, whose run id and handlers are known before the run starts."""

    def __init__(self, model: object, listener: ProgressListener) -> None:
        self.model = model
        self.listener = listener
        self._token: contextvars.Token[tuple[object, ProgressListener] | None] | None = None

    def __enter__(self) -> ModelRun:
        self._token = _RUN.set((self.model, self.listener))
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None:
            _RUN.reset(self._token)
            self._token = None

    def steps(self, chunks: Iterator[_T]) -> Iterator[_T]:
        """``chunks`` (a model's ``stream()``), each step run inside this call's context."""
        try:
            while True:
                token = _RUN.set((self.model, self.listener))
                try:
                    chunk = next(chunks)
                except StopIteration:
                    return
                finally:
                    _RUN.reset(token)
                yield chunk
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    async def asteps(self, chunks: AsyncIterator[_T]) -> AsyncIterator[_T]:
        """:meth:`steps` for ``astream()``."""
        try:
            while True:
                token = _RUN.set((self.model, self.listener))
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    return
                finally:
                    _RUN.reset(token)
                yield chunk
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()


def model_run(
    model: Any, config: RunnableConfig | None, *, asynchronous: bool
) -> tuple[RunnableConfig | None, ModelRun | None]:
    """The config to hand LangChain for one public call of ``model`` (with the run's id chosen
    when some handler may hear progress; the caller's own otherwise), and the
    :class:`ModelRun` (None: nobody listens)."""
    ensured = ensure_config(config)  # the caller's, merged with the runnable context's
    callbacks = ensured.get("callbacks")
    handlers = _handlers(callbacks) + _handlers(model.callbacks)
    if not handlers:
        return config, None
    config = ensured
    run_id = config.get("run_id") or uuid7()
    config["run_id"] = run_id  # a fresh dict: ensure_config copied the caller's
    tags = [*_tags(callbacks), *(config.get("tags") or ()), *(model.tags or ())]
    manager = BaseCallbackManager(
        handlers=list(dict.fromkeys(handlers)),
        tags=list(dict.fromkeys(tags)),
        metadata={
            **_metadata(callbacks),
            **(config.get("metadata") or {}),
            **(model.metadata or {}),
        },
    )
    listener = _async(manager, run_id) if asynchronous else _sync(manager, run_id)
    return config, ModelRun(model, listener)


def call_listener(callbacks: Callbacks = None, *, asynchronous: bool) -> ProgressListener | None:
    """A listener for a call with no run of its own (embeddings, compressors): it dispatches on
    the run it is called in (``callbacks``, the child manager a retriever passes, or the
    runnable context's); None outside any run."""
    config = ensure_config({"callbacks": callbacks} if callbacks is not None else None)
    manager = config.get("callbacks")
    if not isinstance(manager, BaseCallbackManager) or manager.parent_run_id is None:
        return None
    if not manager.handlers:
        return None
    make = _async if asynchronous else _sync
    return make(manager, manager.parent_run_id)
