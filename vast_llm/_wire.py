"""The request and response shapes the flow speaks, independent of any HTTP library."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Fetched", "Opened", "Req"]


@dataclass(slots=True)
class Req:
    """A request as the flow wants it sent, before any HTTP library touches it.

    ``timeout`` has httpx's shape (``connect``/``read``/``write``/``pool`` seconds). Building
    one costs a few attribute stores; each driver turns it into its own stack's request.
    ``worker`` says who it goes to: a worker (rented, verified against the worker CA, never
    given credentials) or the autoscaler (public TLS trust). Drivers keep the two apart.
    ``read_after_start``, when set, replaces the ``read`` timeout once the answer's headers are
    in (the wait for them is bounded by the deadline, the rest by the idle timeout).
    ``budget`` bounds the whole exchange in seconds: until the headers for an answer that stays
    open, until the end of the body for one read whole (:class:`~vast_llm._flow.Send` with a
    ``read_limit``).
    """

    method: str
    url: str
    headers: dict[str, str]
    content: bytes
    timeout: dict[str, float | None]
    worker: bool = False
    read_after_start: float | None = None
    budget: float | None = None

    def __repr__(self) -> str:
        # Headers and body can carry the API key (the route call): never shown.
        return f"<Req {self.method} {self.url}>"


class Opened(Protocol):
    """A response whose headers have arrived (status and headers are all the flow reads)."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...


@dataclass(frozen=True, slots=True)
class Fetched:
    """A response read whole (up to a limit) and closed."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes
