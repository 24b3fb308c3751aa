"""Time limits on awaits, all of one event loop's on a single timer.

``asyncio.timeout`` arms a timer per await and cancels it after: a timer handle made, pushed
on the loop's heap (ordered by Python-level comparisons) and left there cancelled until the
loop next cleans its heap. The aiohttp driver bounds two waits per worker call (the answer's
headers by the deadline, a whole answer's body by the read timeout), which made those timers
about 5% of a call's CPU (measured in instructions, tests/benchmarks in docs/benchmarks.md).

:class:`Deadlines` keeps the limits of the awaits in progress in a dict and one timer armed
at the soonest of them. Calls on a loop mostly come with later and later limits, so the timer
rarely moves: an await costs a dict insert and removal. When the timer fires, every await
past its limit is cancelled and turned into ``TimeoutError`` (exactly as ``asyncio.timeout``
does: a cancellation from elsewhere still propagates as one), and the timer re-arms at the
next limit. A limit fires when it is due, never later than ``asyncio.timeout`` would.
"""

from __future__ import annotations

import asyncio
import math
import sys
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["Deadlines"]

_T = TypeVar("_T")


class _Watch:
    __slots__ = ("at", "cancelling", "expired", "task")

    def __init__(self, task: asyncio.Task[object], at: float, cancelling: int) -> None:
        self.task = task
        self.at = at
        self.cancelling = cancelling  # the task's pending cancellations when the watch began
        self.expired = False


class Deadlines:
    """The limits of the awaits in progress on one event loop (the loop of the first await;
    another loop starts afresh), watched by one timer: ``await deadlines.within(awaitable,
    seconds)``."""

    __slots__ = ("_loop", "_wake", "_wake_at", "_watches")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watches: dict[_Watch, None] = {}
        self._wake: asyncio.TimerHandle | None = None
        self._wake_at = math.inf

    if sys.version_info >= (3, 11):

        async def within(self, awaitable: Awaitable[_T], seconds: float | None) -> _T:
            """``await awaitable``, cancelled after ``seconds`` with ``TimeoutError`` (None:
            no limit)."""
            if seconds is None:
                return await awaitable
            watch = self._watch(seconds)
            try:
                return await awaitable
            finally:
                self._settle(watch, sys.exc_info()[1])

    else:  # pragma: no cover - no Task.uncancel before 3.11: a timer per await

        async def within(self, awaitable: Awaitable[_T], seconds: float | None) -> _T:
            if seconds is None:
                return await awaitable
            return await asyncio.wait_for(awaitable, seconds)

    def _watch(self, seconds: float) -> _Watch:
        # Bound the current task's wait (Python 3.11+): cancelled ``seconds`` from now unless
        # settled first.
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        assert task is not None
        if loop is not self._loop:
            self._loop, self._watches, self._wake, self._wake_at = loop, {}, None, math.inf
        cancelling = task.cancelling()  # type: ignore[attr-defined,unused-ignore]
        watch = _Watch(task, loop.time() + seconds, cancelling)
        self._watches[watch] = None
        if watch.at < self._wake_at:
            self._arm(loop, watch.at)
        return watch

    def _settle(self, watch: _Watch, failure: BaseException | None) -> None:
        # ``failure``: what the wait ended in, if anything. A cancellation of the watch's own
        # becomes TimeoutError; one asked for elsewhere stays a cancellation; if the watch
        # fired as the wait ended otherwise, the cancellation is withdrawn.
        self._watches.pop(watch, None)
        if watch.expired:
            pending = watch.task.uncancel()  # type: ignore[attr-defined,unused-ignore]
            if isinstance(failure, asyncio.CancelledError) and pending <= watch.cancelling:
                raise TimeoutError from None

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self._wake is not None:
            self._wake.cancel()
        self._wake = loop.call_at(at, self._fire)
        self._wake_at = at

    def _fire(self) -> None:
        self._wake, self._wake_at = None, math.inf
        loop = self._loop
        assert loop is not None
        # The loop runs a timer up to its clock's resolution early: count those as due.
        now = loop.time() + getattr(loop, "_clock_resolution", 1e-9)
        soonest = math.inf
        for watch in list(self._watches):
            if watch.at <= now:
                del self._watches[watch]
                watch.expired = True
                watch.task.cancel()
            elif watch.at < soonest:
                soonest = watch.at
        if soonest < math.inf:
            self._arm(loop, soonest)
