"""Resources that belong to one event loop: one set per running loop, closed with it.

An ``httpx.AsyncClient``'s connections, an ``asyncio.Lock`` and an ``asyncio.Semaphore`` all
belong to the loop that made or first used them. A client object, though, outlives loops:
``asyncio.run`` twice in a script, pytest-asyncio's loop per test, a notebook, threads that each
run their own loop. So every loop-bound thing a client needs lives in a :class:`PerLoop`:

- the first use in a loop builds that loop's set (threads may race; a lock keeps it to one);
- when the loop shuts down through ``asyncio.run`` / ``asyncio.Runner`` (which close every
  async generator still open), the set is closed *in that loop*, so its connections end
  cleanly: each set is watched by a suspended async generator the loop knows about;
- a loop closed without that shutdown is noticed at the next use from another loop: its set is
  dropped without touching the dead loop (no call on it, no await), and the sockets go with it;
- nothing ever waits on a primitive of another loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["PerLoop"]

T = TypeVar("T")


class _Slot(Generic[T]):
    __slots__ = ("dead", "item", "loop", "watcher")

    def __init__(self, loop: asyncio.AbstractEventLoop, item: T) -> None:
        self.loop = loop
        self.item = item
        self.dead = False
        self.watcher: AsyncGenerator[None, None] | None = None


class PerLoop(Generic[T]):
    """One ``T`` per running event loop, built on first use there and closed with the loop."""

    def __init__(self, make: Callable[[], T], close: Callable[[T], Awaitable[None]]) -> None:
        self._make = make
        self._close = close
        self._slots: dict[int, _Slot[T]] = {}  # id(loop) -> slot; the slot keeps the loop alive
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """How many loops currently hold a set (closed loops are pruned on the next use)."""
        return len(self._slots)

    async def get(self) -> T:
        """This loop's set, built now if it has none."""
        loop = asyncio.get_running_loop()
        slot = self._slots.get(id(loop))
        if slot is not None and slot.loop is loop:
            return slot.item
        with self._lock:
            self._prune()
            slot = self._slots.get(id(loop))
            if slot is None or slot.loop is not loop:
                slot = _Slot(loop, self._make())
                self._slots[id(loop)] = slot
                fresh = True
            else:
                fresh = False
        if fresh:
            # Start the watcher here, in the loop: the loop registers it (its async generator
            # hooks) and closes it at shutdown, which runs the `finally` below.
            watcher = self._watch(slot)
            slot.watcher = watcher
            await watcher.__anext__()
        return slot.item

    async def _watch(self, slot: _Slot[T]) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            # Whoever set `dead` first has already removed the slot (and holds the lock now,
            # perhaps: so this must not take it then).
            if not slot.dead:
                slot.dead = True
                with self._lock:
                    if self._slots.get(id(slot.loop)) is slot:
                        del self._slots[id(slot.loop)]
                await self._close(slot.item)

    def _prune(self) -> None:
        for key, slot in list(self._slots.items()):
            if slot.loop.is_closed():
                del self._slots[key]
                _abandon(slot)

    async def aclose_current(self) -> None:
        """Close the running loop's set now (the next use builds a new one)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            slot = self._slots.pop(id(loop), None)
        if slot is not None and slot.loop is loop and not slot.dead:
            slot.dead = True
            _finish(slot)
            await self._close(slot.item)

    def forget_all(self) -> list[T]:
        """Drop every loop's set without touching any loop; returns them (for a sync close of
        whatever can be closed without a loop)."""
        with self._lock:
            slots = list(self._slots.values())
            self._slots.clear()
        for slot in slots:
            _abandon(slot)
        return [slot.item for slot in slots]


def _finish(slot: _Slot[T]) -> None:
    # Run the watcher's `finally` to its end right here: with `dead` set it awaits nothing, so
    # it completes synchronously, and the loop's finalizer hook (which would call into the loop,
    # perhaps a closed one) never fires for it.
    watcher, slot.watcher = slot.watcher, None
    if watcher is None:
        return
    closing = watcher.aclose()
    try:
        closing.send(None)
    except StopIteration:
        pass
    except RuntimeError:  # pragma: no cover - already closing in its loop
        closing.close()
    else:  # pragma: no cover - the finally awaited something: never with `dead` set
        closing.close()


def _abandon(slot: _Slot[T]) -> None:
    slot.dead = True
    _finish(slot)
