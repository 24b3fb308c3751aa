"""How many requests a client runs at once: a gate for threads, one per event loop.

Requests beyond the connection pool's size would queue inside httpcore's pool, whose
bookkeeping grows with the queue (1,000 concurrent requests on 256 connections all ran into
pool timeouts: docs/reliability.md). Waiting at this gate instead keeps the pool's queue short.
A request's deadline starts once it is through; the wait itself is bounded by the deadline too,
so a gate held by stuck calls ends in a typed error instead of a hang.
"""

from __future__ import annotations

import asyncio
import threading

from ._errors import VastTimeout

__all__ = ["Gate", "acquire_async"]


def _full(limit: int, waited: float) -> VastTimeout:
    return VastTimeout(
        f"waited {waited:g}s (the deadline) for one of this client's {limit} request slots "
        "(max_concurrency): every slot stayed busy; raise max_concurrency or deadline, or make "
        "fewer calls at once"
    )


class Gate:
    """A bound on concurrent requests across threads."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)

    def acquire(self, timeout: float) -> None:
        """Take a slot, waiting at most ``timeout`` seconds (else :class:`VastTimeout`)."""
        if not self._slots.acquire(timeout=timeout):
            raise _full(self.limit, timeout)

    def release(self) -> None:
        self._slots.release()


async def acquire_async(slots: asyncio.Semaphore, limit: int, timeout: float) -> None:
    """Take a slot of this loop's semaphore, waiting at most ``timeout`` seconds."""
    if not slots.locked():
        await slots.acquire()  # the common case: no timer to arm
        return
    try:
        await asyncio.wait_for(slots.acquire(), timeout)
    except asyncio.TimeoutError:
        raise _full(limit, timeout) from None
