"""How many requests a client runs at once: one gate for threads, one per event loop.

Requests beyond the connection pool's size would queue inside httpcore's pool, whose
bookkeeping grows with the queue (measured here: 1,000 concurrent requests on 256 connections
all ran into pool timeouts; on 1,100 connections they took 6.6 s). Waiting at this gate instead
keeps the pool's queue short; a request's deadline starts once it is through.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from types import TracebackType

__all__ = ["Gate"]


class Gate:
    """A bound on concurrent requests, usable with ``with`` (threads) and ``async with``."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.limit = limit
        self._threads = threading.BoundedSemaphore(limit)
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]
        self._loops = weakref.WeakKeyDictionary()

    def __enter__(self) -> Gate:
        self._threads.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._threads.release()

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        semaphore = self._loops.get(loop)
        if semaphore is None:
            semaphore = self._loops[loop] = asyncio.Semaphore(self.limit)
        return semaphore

    async def __aenter__(self) -> Gate:
        await self._semaphore().acquire()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._semaphore().release()
