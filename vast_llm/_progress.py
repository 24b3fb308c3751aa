"""Progress events: what a request is doing while it has nothing to show yet.

A cold start takes minutes; a user staring at a silent call deserves to see why. The flow yields
a :class:`Progress` at each step (waiting for a worker, routed, verified, retrying, answering);
the drivers hand it to the listeners:

- the client's ``on_progress`` setting (every request of that client), and
- whatever :func:`observe` installed around the call (a context variable, so it follows the
  call into the tasks it runs in; the framework wrappers use it to forward events to LangChain
  callbacks and LlamaIndex instrumentation).

A listener that raises is logged and ignored: showing progress must never break a request. An
async driver awaits a listener's result when it is awaitable.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from ._errors import excerpt

__all__ = ["Progress", "ProgressKind", "ProgressListener", "adeliver", "deliver", "observe"]

logger = logging.getLogger("vast_llm")

ProgressKind = Literal["waiting", "routed", "verified", "retrying", "answering", "session"]


@dataclass(frozen=True, slots=True)
class Progress:
    """One step of one request.

    Attributes:
        kind: ``"waiting"`` (the router has no ready worker yet: ``status`` says why, the next
            poll is in ``retry_in`` seconds), ``"routed"`` (a worker was assigned:
            ``worker_url``), ``"verified"`` (its signature checked: ``signature`` is the recipe,
            or "unverified" / "unchecked" under the warn / off policies), ``"retrying"`` (an
            attempt failed: ``error``; the next one in ``retry_in`` seconds, on a fresh route)
            ``"answering"`` (the worker's answer started: its first byte arrived) or
            ``"session"`` (a worker session changed: ``status`` is ``"created"``, ``"lost"``
            (``error`` says why; a new session is made on a fresh route, the conversation
            loses only the worker's cache) or ``"ended"``; ``worker_url`` is its worker).
        endpoint: the endpoint's name.
        elapsed: seconds since the request started.
        attempt: the worker attempt this event belongs to (1 for the first).
        status: for ``waiting``, the router's status exactly as it sent it (often a breakdown
            of worker states such as "1 Stopped"); never parsed for control flow. For
            ``session``, what happened to the session.
        worker_url: the assigned worker, once there is one.
        signature: for ``verified``, the recipe that verified.
        retry_in: seconds until the next poll or attempt.
        error: for ``retrying`` and a lost session, what failed (a short, secret-free
            message).
    """

    kind: ProgressKind
    endpoint: str
    elapsed: float
    attempt: int = 1
    status: Any = None
    worker_url: str | None = None
    signature: str | None = None
    retry_in: float | None = None
    error: str | None = None

    def describe(self) -> str:
        """One line for people (the CLI and the demo print it)."""
        at = f"[{self.elapsed:6.1f}s]"
        if self.kind == "waiting":
            status = excerpt(str(self.status)) if self.status is not None else "no status"
            return (
                f"{at} waiting for a worker of {self.endpoint!r}: {status} "
                f"(next poll in {self.retry_in or 0:.1f}s)"
            )
        if self.kind == "routed":
            return f"{at} routed to {self.worker_url} (attempt {self.attempt})"
        if self.kind == "verified":
            return f"{at} assignment {self.signature} for {self.worker_url}"
        if self.kind == "session":
            why = f" ({self.error}); making a new one" if self.error else ""
            return f"{at} session on {self.worker_url} {self.status}{why}"
        if self.kind == "retrying":
            wait = self.retry_in or 0
            return f"{at} attempt {self.attempt} failed ({self.error}); retrying in {wait:.2f}s"
        return f"{at} {self.worker_url} is answering"


ProgressListener = Callable[[Progress], object]

_OBSERVERS: contextvars.ContextVar[tuple[ProgressListener, ...]] = contextvars.ContextVar(
    "vast_llm_observers", default=()
)


@contextlib.contextmanager
def observe(listener: ProgressListener) -> Iterator[None]:
    """Send the :class:`Progress` events of the calls made inside this block to ``listener``.

    Works for sync and async calls alike (it follows the context into the call's tasks); blocks
    nest, and every listener of the enclosing blocks hears each event::

        with vast_llm.observe(lambda p: print(p.describe())):
            client.generate("Hello")
    """
    token = _OBSERVERS.set((*_OBSERVERS.get(), listener))
    try:
        yield
    finally:
        _OBSERVERS.reset(token)


def _listeners(own: ProgressListener | None) -> tuple[ProgressListener, ...]:
    observers = _OBSERVERS.get()
    return observers if own is None else (own, *observers)


def _failed(listener: ProgressListener, exc: BaseException) -> None:
    logger.warning("a progress listener (%r) raised %r; ignored", listener, exc)


def deliver(event: Progress, own: ProgressListener | None) -> None:
    """Hand ``event`` to the listeners (sync drivers)."""
    for listener in _listeners(own):
        try:
            result = listener(event)
            if inspect.isawaitable(result):
                _close_unawaited(result)
                raise TypeError("an async progress listener needs an async client")
        except Exception as exc:
            _failed(listener, exc)


async def adeliver(event: Progress, own: ProgressListener | None) -> None:
    """Hand ``event`` to the listeners, awaiting those that return an awaitable."""
    for listener in _listeners(own):
        try:
            result = listener(event)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            _failed(listener, exc)


def listening(own: ProgressListener | None) -> bool:
    """True when some listener would hear an event (so none is built for nobody)."""
    return own is not None or bool(_OBSERVERS.get())


def _close_unawaited(result: Awaitable[Any]) -> None:
    close = getattr(result, "close", None)
    if callable(close):
        close()
