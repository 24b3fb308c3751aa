"""Progress events as LlamaIndex instrumentation events (:class:`VastProgressEvent`).

The core hands each :class:`vast_llm.Progress` event (waiting for a worker, routed, verified,
retrying, answering) to the listeners of :func:`vast_llm.observe`; the listener made here
dispatches it through LlamaIndex's dispatcher, so every event handler added to the root
dispatcher (or to ``llamaindex_vast``'s) sees it, inside the span of the call that made it
(the LLM's ``chat``, ``complete``..., an embedding or a rerank). When no event handler is
installed, no listener is either, and the core builds no event.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.instrumentation.event_handlers import NullEventHandler
from llama_index.core.instrumentation.events import BaseEvent

from vast_llm import Progress
from vast_llm.integration import ProgressListener, progress_data

__all__ = ["VastProgressEvent", "listener"]

dispatcher = get_dispatcher(__name__)


class VastProgressEvent(BaseEvent):
    """What a request to a Vast.ai endpoint is doing before its answer starts: the fields of a
    :class:`vast_llm.Progress` event.

    Attributes:
        kind: ``"waiting"`` (no worker ready yet: ``status`` is the router's, e.g. "no worker
            ready (1 Stopped)" while a worker cold-starts), ``"routed"`` (``worker_url``),
            ``"verified"`` (``signature``: the recipe that verified), ``"retrying"``
            (``error``; the next attempt in ``retry_in`` seconds) or ``"answering"``.
        endpoint: the endpoint's name.
        elapsed: seconds since the request started.
        attempt: the worker attempt (1 for the first).
        status: for ``waiting``, the router's status as it sent it.
        worker_url: the assigned worker, once there is one.
        signature: for ``verified``, the recipe.
        retry_in: seconds until the next poll or attempt.
        error: for ``retrying``, what failed (short, secret-free).
    """

    kind: str
    endpoint: str
    elapsed: float
    attempt: int = 1
    status: Any = None
    worker_url: str | None = None
    signature: str | None = None
    retry_in: float | None = None
    error: str | None = None

    @classmethod
    def class_name(cls) -> str:
        return "VastProgressEvent"

    def describe(self) -> str:
        """One line for people, as :meth:`vast_llm.Progress.describe` says it."""
        fields = {name: getattr(self, name) for name in _FIELDS}
        return Progress(**fields).describe()


_FIELDS = tuple(progress_data(Progress("routed", "", 0.0)))


def _listening() -> bool:
    # The dispatcher chain a handler would hear this module's events on (this module's, then
    # root): what Dispatcher.event walks. Root always has a NullEventHandler.
    current: Any = dispatcher
    while current is not None:
        if any(not isinstance(h, NullEventHandler) for h in current.event_handlers):
            return True
        current = current.parent if current.propagate else None
    return False


def _send(event: Progress) -> None:
    dispatcher.event(VastProgressEvent(**progress_data(event)))


def listener() -> ProgressListener | None:
    """The listener for one call: it dispatches a :class:`VastProgressEvent` per event (None
    when no event handler is installed)."""
    return _send if _listening() else None
