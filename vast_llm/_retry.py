"""Backoff and "may I retry this?" decisions. Pure: randomness and time come in as arguments."""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["FAR_FUTURE", "Backoff", "parse_retry_after", "retryable_status"]

# Statuses worth another attempt (after a fresh route): the request did not run, or the
# worker said "not now". Everything else in 4xx is the caller's to fix.
_RETRYABLE_4XX = frozenset({408, 409, 425, 429})


def retryable_status(status_code: int) -> bool:
    """True for statuses where a backed-off, re-routed attempt may succeed (408, 429, 5xx...)."""
    return status_code in _RETRYABLE_4XX or 500 <= status_code <= 599


# A server's wait beyond this is "much later" (the backoff caps what it honours far lower).
FAR_FUTURE = 1e9


def parse_retry_after(
    headers: Mapping[str, str], *, now: float | Callable[[], float] | None = None
) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date), or None.

    Never raises: a header that is not a number or a date is None, and one far in the future
    (up to dates past year 9999, which the calendar functions refuse) is :data:`FAR_FUTURE`.
    ``now`` is the wall clock for an HTTP date: epoch seconds, or a function that reads them
    (called only when the header is a date); by default ``time.time``. The flow passes its
    context's clock, so its decisions read no clock of their own.
    """
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        if now is None:
            now = time.time
        try:
            seconds = email.utils.mktime_tz(parsed) - (now() if callable(now) else now)
        except (ValueError, OverflowError):
            # Year 10000 and beyond: out of the calendar's range, and certainly far off.
            return FAR_FUTURE if parsed[0] > 9999 else None
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return min(max(0.0, seconds), FAR_FUTURE)


@dataclass(frozen=True)
class Backoff:
    """How long to wait between attempts.

    Args:
        base: first retry waits up to this many seconds; each retry doubles it (full jitter).
        cap: no single retry wait exceeds this.
        poll_first: the first re-poll of a "no worker ready" answer, as the official client does.
        poll_cap: later re-polls wait ``uniform(0.1, min(2**k + uniform(0, 1), poll_cap))``.
        retry_after_cap: a server's ``Retry-After`` is honoured up to this many seconds.
    """

    base: float = 0.5
    cap: float = 8.0
    poll_first: float = 1.0
    poll_cap: float = 5.0
    retry_after_cap: float = 30.0

    def __post_init__(self) -> None:
        for name in ("base", "cap", "poll_first", "poll_cap", "retry_after_cap"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0 or math.isnan(value):
                raise ValueError(f"Backoff.{name} must be a number >= 0, got {value!r}")

    def retry_delay(
        self, retry: int, rng: random.Random, retry_after: float | None = None
    ) -> float:
        """Wait before retry number ``retry`` (0-based): full jitter, honouring Retry-After."""
        ceiling = min(self.cap, self.base * (2 ** min(retry, 30)))
        delay = rng.uniform(0.0, ceiling)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_after_cap))
        return delay

    def poll_delay(self, poll: int, rng: random.Random) -> float:
        """Wait before re-poll number ``poll`` (0-based) while no worker is ready."""
        if poll == 0:
            return self.poll_first
        high = min(2 ** min(poll, 30) + rng.uniform(0.0, 1.0), self.poll_cap)
        return rng.uniform(min(0.1, high), high)
