"""Scriptable faults: what the emulator can be told to get wrong, and how often."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["FAULTS", "Fault", "FaultBook", "FaultSource"]

# name -> what it does. Route faults strike on /route/, signature faults on a ready answer,
# pubkey faults on /pubkey/, worker faults on the worker call.
FAULTS: dict[str, str] = {
    "route_429": "/route/ answers 429 (with Retry-After: 0)",
    "route_500": "/route/ answers 500",
    "route_503": "/route/ answers 503 with an HTML page",
    "route_timeout": "/route/ answers only after `delay` seconds",
    "route_error_msg": '/route/ answers 200 {"error_msg": ...}',
    "route_garbage": "/route/ answers 200 with an HTML body",
    "not_ready": "/route/ answers 'no worker ready' (one poll per use)",
    "stopped": "/route/ answers that the endpoint is stopped (status 'endpoint stopped')",
    "bad_signature": "the signature is over another url",
    "missing_signature": "the answer has no signature",
    "foreign_key": "the answer is signed with a key that is not the router's",
    "tampered_url": "the url is changed after signing (to the same worker as 'localhost')",
    "tampered_reqnum": "reqnum is changed after signing (g3 does not sign it)",
    "tampered_cost": "cost is changed after signing (g3 does not sign it)",
    "pubkey_down": "/pubkey/ answers 503",
    "pubkey_garbage": "/pubkey/ answers 200 with text that is not a key",
    "worker_refuse": "the assigned url is a port where nothing listens",
    "foreign_ca": "the assigned url is an HTTPS impostor whose certificate is from a foreign CA "
    "(needs tls=True; it records any request that reaches it)",
    "worker_401": "the worker answers 401 with an empty body",
    "worker_422": "the worker answers 422 with a JSON error",
    "worker_429": "the worker answers 429 with an empty body",
    "worker_500": "the worker answers 500 with an empty body",
    "slow_first_token": "the worker waits `delay` seconds before its first token",
    "stream_cut": "the worker drops the connection after `after` tokens",
    "stream_truncated": "the stream ends cleanly after `after` tokens, without its final event",
    "malformed_sse": "the worker sends an event whose data is not JSON after `after` tokens",
    "stream_error": "the worker sends an in-stream error event after `after` tokens",
    "session_lost": "the worker forgets the session of the next call carrying one (410)",
}

ROUTE_FAULTS = frozenset(
    {
        "route_429",
        "route_500",
        "route_503",
        "route_timeout",
        "route_error_msg",
        "route_garbage",
        "not_ready",
        "stopped",
    }
)
SIGNATURE_FAULTS = frozenset(
    {
        "bad_signature",
        "missing_signature",
        "foreign_key",
        "tampered_url",
        "tampered_reqnum",
        "tampered_cost",
        "worker_refuse",
        "foreign_ca",
    }
)
PUBKEY_FAULTS = frozenset({"pubkey_down", "pubkey_garbage"})
WORKER_STATUS_FAULTS = frozenset({"worker_401", "worker_422", "worker_429", "worker_500"})
STREAM_FAULTS = frozenset(
    {"slow_first_token", "stream_cut", "stream_truncated", "malformed_sse", "stream_error"}
)
SESSION_FAULTS = frozenset({"session_lost"})

# Faults a worker applies to a request it has read (a script can tie them to that request);
# every other fault strikes before a worker sees the request.
WORKER_FAULTS = WORKER_STATUS_FAULTS | STREAM_FAULTS

# Something else that holds faults for an endpoint (a script's Fail turns): called with a
# family, it hands over one fault of that family or None.
FaultSource = Callable[[frozenset[str]], "Fault | None"]
_REMEMBERED = 10_000


@dataclass
class Fault:
    """One scripted fault.

    Args:
        name: one of :data:`FAULTS`.
        times: how many requests it strikes (None: every one until cleared).
        delay: seconds, for ``route_timeout`` and ``slow_first_token``.
        after: tokens sent before a stream fault strikes.
        worker: strike only requests to this worker (index), for worker faults.
        endpoint: strike only this endpoint (default: any).
    """

    name: str
    times: int | None = 1
    delay: float = 2.0
    after: int = 2
    worker: int | None = None
    endpoint: str | None = None

    def __post_init__(self) -> None:
        if self.name not in FAULTS:
            raise ValueError(
                f"unknown fault {self.name!r}; known faults: {', '.join(sorted(FAULTS))}"
            )
        if self.times is not None and self.times < 1:
            raise ValueError("Fault.times must be >= 1 (or None for always)")

    @classmethod
    def parse(cls, spec: str | Fault) -> Fault:
        """``"name"``, ``"name:3"`` (three times) or ``"name:*"`` (always)."""
        if isinstance(spec, Fault):
            return spec
        name, _, count = spec.partition(":")
        if not count:
            return cls(name)
        if count == "*":
            return cls(name, times=None)
        try:
            return cls(name, times=int(count))
        except ValueError:
            raise ValueError(f"bad fault {spec!r}: expected NAME, NAME:COUNT or NAME:*") from None


class FaultBook:
    """The active faults; each request takes (and uses up) at most one of a family.

    It also remembers every fault added since the last :meth:`clear` and how often each struck,
    so a test can check that all of them were used (:meth:`unused`).
    """

    def __init__(self, faults: Iterable[str | Fault] = ()) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        # Each fault with the `times` it was given (the most recent ones: a long load run may
        # inject thousands), and how often each struck.
        self._added: collections.deque[tuple[Fault, int | None]] = collections.deque()
        self._struck: dict[int, int] = {}
        self._sources: dict[str, FaultSource] = {}
        for fault in faults:
            self.add(fault)

    def add(self, fault: str | Fault) -> Fault:
        parsed = Fault.parse(fault)
        with self._lock:
            self._faults.append(parsed)
            if len(self._added) >= _REMEMBERED:
                self._struck.pop(id(self._added.popleft()[0]), None)
            self._added.append((parsed, parsed.times))
        return parsed

    def attach(self, endpoint: str, source: FaultSource) -> None:
        """Let ``source`` (an endpoint's script) supply faults for ``endpoint`` too."""
        with self._lock:
            self._sources[endpoint] = source

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self._added.clear()
            self._struck.clear()

    def unused(self) -> list[str]:
        """The faults added since :meth:`clear` that did not strike as often as they were told
        (a fault for every request, ``times=None``, counts as used once it struck)."""
        with self._lock:
            left = []
            for fault, times in self._added:
                struck = self._struck.get(id(fault), 0)
                if (times is None and struck == 0) or (times is not None and struck < times):
                    wanted = "always" if times is None else f"{times} time(s)"
                    where = "".join(
                        f", {k}={v!r}"
                        for k, v in (("endpoint", fault.endpoint), ("worker", fault.worker))
                        if v is not None
                    )
                    left.append(f"{fault.name} ({wanted}{where}): struck {struck} time(s)")
            return left

    @property
    def active(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def take(
        self, family: frozenset[str], *, endpoint: str | None = None, worker: int | None = None
    ) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.name not in family:
                    continue
                if fault.endpoint is not None and fault.endpoint != endpoint:
                    continue
                if fault.worker is not None and worker is not None and fault.worker != worker:
                    continue
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                self._struck[id(fault)] = self._struck.get(id(fault), 0) + 1
                return fault
            sources = [s for name, s in self._sources.items() if endpoint in (None, name)]
        for source in sources:  # outside the lock: a source has its own
            found = source(family)
            if found is not None:
                return found
        return None
