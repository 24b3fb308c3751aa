"""Deadlines: time limits on awaits, one loop's on one timer (the aiohttp driver's waits)."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import pytest

from vast_llm._deadlines import Deadlines

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="before 3.11 Deadlines is asyncio.wait_for"
)


class _CountingLoop(asyncio.SelectorEventLoop):
    """A loop that counts the timers armed on it."""

    armed = 0

    def call_at(self, when: float, callback: Any, *args: Any, **kwargs: Any) -> Any:
        self.armed += 1
        return super().call_at(when, callback, *args, **kwargs)


def _run(coro: Any) -> Any:
    loop = _CountingLoop()
    try:
        return loop.run_until_complete(coro), loop.armed
    finally:
        loop.close()


async def test_a_wait_past_its_limit_ends_in_timeout_error() -> None:
    deadlines = Deadlines()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await deadlines.within(asyncio.sleep(30), 0.05)
    assert time.monotonic() - started < 5  # bounded, not a speed claim
    assert await deadlines.within(asyncio.sleep(0, "done"), 0.05) == "done"
    assert await deadlines.within(asyncio.sleep(0.01, "unbounded"), None) == "unbounded"


async def test_each_wait_ends_at_its_own_limit_whatever_the_order_they_came_in() -> None:
    deadlines = Deadlines()
    ended: list[str] = []

    async def wait(name: str, seconds: float, takes: float) -> None:
        try:
            await deadlines.within(asyncio.sleep(takes), seconds)
            ended.append(f"{name} done")
        except TimeoutError:
            ended.append(f"{name} timed out")

    # A long limit first (the timer is armed for it), then a shorter one (it must move).
    await asyncio.gather(
        wait("long", 0.4, 30),
        wait("short", 0.1, 30),
        wait("quick", 30, 0.01),
    )
    assert ended == ["quick done", "short timed out", "long timed out"]


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    deadlines = Deadlines()
    task = asyncio.ensure_future(deadlines.within(asyncio.sleep(30), 10))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_timeout_leaves_the_task_uncancelled() -> None:
    deadlines = Deadlines()
    with pytest.raises(TimeoutError):
        await deadlines.within(asyncio.sleep(30), 0.01)
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0.01)  # no cancellation left pending


def test_waits_with_later_and_later_limits_share_one_timer() -> None:
    deadlines = Deadlines()

    async def calls() -> int:
        for _ in range(100):
            await deadlines.within(asyncio.sleep(0), 60)
        return len(deadlines._watches)

    left, armed = _run(calls())
    assert left == 0
    assert armed == 1  # asyncio.timeout would arm (and cancel) 100


def test_one_instance_serves_one_loop_after_another() -> None:
    deadlines = Deadlines()

    async def timed_out() -> bool:
        try:
            await deadlines.within(asyncio.sleep(30), 0.01)
        except TimeoutError:
            return True
        return False

    assert asyncio.run(timed_out())
    assert asyncio.run(timed_out())  # the first loop's timer is gone with it
