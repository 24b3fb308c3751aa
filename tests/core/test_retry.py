"""Backoff and retry decisions. Pure: the random source is seeded."""

from __future__ import annotations

import random

import pytest

from vast_llm import Backoff
from vast_llm._retry import FAR_FUTURE, parse_retry_after, retryable_status


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, False),
        (400, False),
        (401, False),
        (404, False),
        (408, True),
        (410, False),
        (413, False),
        (422, False),
        (429, True),
        (500, True),
        (503, True),
        (599, True),
    ],
)
def test_retryable_statuses(status: int, expected: bool) -> None:
    assert retryable_status(status) is expected


def test_retry_delay_is_full_jitter_under_a_doubling_ceiling() -> None:
    backoff = Backoff(base=0.5, cap=8.0)
    rng = random.Random(1)
    for retry, ceiling in enumerate([0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]):
        delays = [backoff.retry_delay(retry, rng) for _ in range(200)]
        assert min(delays) >= 0 and max(delays) <= ceiling
        assert max(delays) > ceiling * 0.8  # the whole range is used


def test_retry_after_is_honoured_up_to_a_cap() -> None:
    backoff = Backoff(base=0.1, cap=0.2, retry_after_cap=5.0)
    rng = random.Random(2)
    assert backoff.retry_delay(0, rng, retry_after=3.0) == 3.0
    assert backoff.retry_delay(0, rng, retry_after=60.0) == 5.0


def test_poll_schedule_matches_the_official_client() -> None:
    backoff = Backoff()
    rng = random.Random(3)
    assert backoff.poll_delay(0, rng) == 1.0
    for poll in range(1, 10):
        delays = [backoff.poll_delay(poll, rng) for _ in range(100)]
        assert all(0.1 <= d <= 5.0 for d in delays)
        assert max(delays) <= min(2**poll + 1, 5.0)


def test_tiny_poll_caps_stay_tiny() -> None:
    backoff = Backoff(poll_first=0.01, poll_cap=0.02)
    assert all(backoff.poll_delay(k, random.Random(k)) <= 0.02 for k in range(1, 20))


@pytest.mark.parametrize("value", [-1.0, float("nan")])
def test_backoff_rejects_bad_numbers(value: float) -> None:
    with pytest.raises(ValueError, match="Backoff"):
        Backoff(base=value)


@pytest.mark.parametrize(
    ("header", "expected"),
    [("2", 2.0), ("0.5", 0.5), ("-3", 0.0), ("soon", None), ("", None)],
)
def test_parse_retry_after_seconds(header: str, expected: float | None) -> None:
    assert parse_retry_after({"retry-after": header}) == expected


def test_parse_retry_after_http_date() -> None:
    seconds = parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=1445412480.0)
    assert seconds == 10.0


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Sat, 01 Jan 10000 00:00:00 GMT", FAR_FUTURE),  # ValueError: year out of range
        ("Mon, 01 Jan 99999999999999999999 00:00:00 GMT", FAR_FUTURE),  # OverflowError
        ("Fri, 31 Dec 9999 23:59:59 GMT", FAR_FUTURE),
        ("99999999999999999999999", FAR_FUTURE),
        ("1e400", None),  # inf
        ("nan", None),
        ("Wed, 99 Foo 2015 07:28:00 GMT", None),
    ],
)
def test_hostile_retry_after_is_never_an_exception(header: str, expected: float | None) -> None:
    """Issue 14 item 4: a Retry-After dated year 10000 raised ValueError/OverflowError."""
    assert parse_retry_after({"retry-after": header}, now=0.0) == expected
    assert Backoff(retry_after_cap=5.0).retry_delay(0, random.Random(0), expected) <= 5.0


def test_parse_retry_after_reads_an_injected_wall_clock_only_for_dates() -> None:
    reads: list[int] = []

    def wall() -> float:
        reads.append(1)
        return 1445412480.0

    assert parse_retry_after({"retry-after": "4"}, now=wall) == 4.0 and not reads
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=wall) == 10.0
    assert len(reads) == 1
