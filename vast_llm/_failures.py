"""How a worker's answer fails once it has started, in one vocabulary for every caller.

The clients' wrapped calls, the generic ``request`` calls and the transports' relays all read
answers the same way (``_body``) and fail the same way: a timeout before any output is a
``VastTimeout`` (as for a worker that never answered), a timeout or a cut after output is a
``WorkerStreamError``, and bytes that break a bound or their own encoding are a final
``WorkerError`` / ``WorkerStreamError``. None of these is retried: the worker may have done
the work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from ._body import EventReader
from ._config import Settings
from ._errors import VastError, VastTimeout, WorkerError, WorkerStreamError, abbreviate

__all__ = ["check_event_stream", "cut", "event_reader", "unreadable"]


def cut(exc: httpx.TransportError, url: str, started: bool = True) -> VastError:
    where = abbreviate(url)
    if isinstance(exc, httpx.TimeoutException) and not started:
        # Nothing was handed out: the same timeout as a worker that never answered at all.
        return VastTimeout(
            f"worker {where} did not answer in time ({type(exc).__name__}: no output within "
            "the idle timeout); raise timeout= if the model is slow to start"
        )
    if isinstance(exc, httpx.TimeoutException):
        return WorkerStreamError(
            f"worker {where} went silent mid-answer: no progress within the idle timeout "
            f"({exc or type(exc).__name__}); raise timeout= if the model is slow",
            worker_url=url,
        )
    return WorkerStreamError(
        f"the answer from worker {where} was cut ({type(exc).__name__}: "
        f"{exc or 'no detail'}); it is not retried because the worker may already have done "
        "the work",
        worker_url=url,
    )


def unreadable(exc: Exception, url: str, *, stream: bool) -> WorkerError:
    """An answer whose bytes broke a bound or their own encoding: a typed, final error."""
    kind = WorkerStreamError if stream else WorkerError
    return kind(
        f"the answer from worker {abbreviate(url)} could not be read: {exc}; it is not retried "
        "because the worker may already have done the work (raise max_answer_bytes or "
        "max_event_bytes if the answer is legitimately that large)",
        status_code=200,
        worker_url=url,
    )


def event_reader(
    s: Settings, response: Any, max_events: int, clock: Callable[[], float]
) -> EventReader:
    """The bounds a streamed answer is read under, from the call's settings."""
    return EventReader(
        response,
        max_bytes=s.max_answer_bytes,
        max_event=s.max_event_bytes,
        max_events=max_events,
        idle=s.timeout.read or float("inf"),
        clock=clock,
    )


def check_event_stream(response: Any, url: str) -> None:
    kind = response.headers.get("content-type", "")
    if "text/event-stream" not in kind:
        raise WorkerStreamError(
            f"worker {abbreviate(url)} did not answer with a stream: expected a "
            f"text/event-stream, got {kind or 'no content type'!r}",
            worker_url=url,
        )
