"""The autoscaler's ``/route/`` call: building the request and reading the answer. Pure."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from ._errors import AuthenticationError, RouteError, abbreviate, excerpt, json_excerpt
from ._retry import parse_retry_after, retryable_status
from ._version import __version__
from ._wire import Req

__all__ = ["Ready", "Rejected", "Waiting", "build_route_request", "parse_route_answer"]

# What the official SDK sends: after this many seconds an unanswered request may be replayed.
REPLAY_TIMEOUT = 60.0
USER_AGENT = f"vast-llm/{__version__}"


@dataclass(frozen=True, slots=True)
class Ready:
    """A worker was assigned. ``body`` is the answer exactly as parsed (forward it verbatim)."""

    body: dict[str, Any]
    url: str
    request_idx: int | None


@dataclass(frozen=True, slots=True)
class Waiting:
    """No worker is ready yet; ``status`` is whatever the router said (shown, never parsed)."""

    status: Any
    request_idx: int | None
    stopped: bool


@dataclass(frozen=True, slots=True)
class Rejected:
    """The call failed; ``retryable`` says whether a backed-off retry may succeed."""

    error: RouteError
    retryable: bool
    retry_after: float | None = None


def build_route_request(
    base_url: str,
    endpoint: str,
    api_key: str,
    cost: float,
    request_idx: int | None,
    timeout: float,
) -> Req:
    """``POST /route/``: the key in the body and as a Bearer header (docs/protocol.md §2)."""
    body = {
        "endpoint": endpoint,
        "api_key": api_key,
        "cost": cost,
        "request_idx": request_idx or 0,
        "replay_timeout": REPLAY_TIMEOUT,
    }
    return Req(
        "POST",
        base_url + "/route/",
        {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        },
        json.dumps(body).encode(),
        {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout},
        budget=timeout,  # one bound for the whole call, however the router drips its answer
    )


# Route answer fields never forwarded to a worker (compared lower-case).
_CREDENTIALS = frozenset(
    {
        "api_key",
        "apikey",
        "api-key",
        "key",
        "token",
        "access_token",
        "secret",
        "password",
        "authorization",
        "cookie",
    }
)
_URL_MAX = 65536  # httpx's own limit; a real worker address is an IP and a port
_URL_CACHED = 2048  # only addresses this short are remembered (a cache of 60 KB URLs is not)


def _url_problem(url: str) -> str | None:
    """Why a worker URL from a route answer cannot be used, or None."""
    if len(url) > _URL_CACHED:
        if len(url) > _URL_MAX:
            return f"(an address of {len(url)} characters)"
        return _check_url(url)
    return _checked_url(url)


@functools.lru_cache(maxsize=256)
def _checked_url(url: str) -> str | None:
    return _check_url(url)  # parsed once per URL: the same few come back on every call


def _check_url(url: str) -> str | None:
    try:
        parsed = httpx.URL(url)
        port = parsed.port
    except (httpx.InvalidURL, ValueError, TypeError):
        return "(not a valid URL)"
    if not parsed.host:
        return "(no host)"
    if port is not None and not 0 < port < 65536:
        return f"(port {port} is out of range)"
    return None


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _is_stopped(status: Any) -> bool:
    # The one place the status text steers control flow: an ENDPOINT that is stopped manages no
    # workers at all, so nothing will come and the call fails fast. A worker that is "Stopped"
    # is only cold (scale to zero: it wakes on demand), so that status means "wait".
    if not isinstance(status, str):
        return False
    text = " ".join(status.lower().replace("_", " ").split())
    return "endpoint stopped" in text or "endpoint is stopped" in text


def _where(base_url: str, endpoint: str) -> str:
    return f"{base_url}/route/ for endpoint {endpoint!r}"


def _error_text(body: Mapping[str, Any]) -> str | None:
    for name in ("error", "error_msg", "msg", "detail"):
        value = body.get(name)
        if value:
            return value if isinstance(value, str) else json_excerpt(value)
    return None


# A route answer is a flat object; nesting deeper than this is refused like malformed JSON.
MAX_DEPTH = 32


def _too_deep(body: dict[str, Any]) -> bool:
    """True if containers in ``body`` nest more than :data:`MAX_DEPTH` levels (iteratively)."""
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        items = value.values() if isinstance(value, dict) else value
        for item in items:
            if isinstance(item, (dict, list)):
                if depth >= MAX_DEPTH:
                    return True
                stack.append((item, depth + 1))
    return False


_STATUS_HINTS: dict[int, str] = {
    400: "the router refused the request; check the endpoint name and cost",
    401: "the API key was rejected; check api_key / VAST_API_KEY",
    403: "the API key may not use this endpoint; check api_key / VAST_API_KEY",
    404: "no such endpoint or route; check the endpoint name and base_url",
    429: "the router is rate limiting",
}


def parse_route_answer(
    status_code: int,
    headers: Mapping[str, str],
    content: bytes,
    *,
    endpoint: str,
    base_url: str,
    api_key: str,
    now: Callable[[], float] | None = None,
) -> Ready | Waiting | Rejected:
    """Classify one ``/route/`` answer as ready, waiting, or rejected (retryable or not).

    ``now`` reads the wall clock for a ``Retry-After`` HTTP date (``time.time`` by default).
    """
    if status_code == 200:
        try:
            body = json.loads(content)
        except (ValueError, RecursionError):  # RecursionError: nested too deeply to parse
            body = None
        if isinstance(body, dict) and _too_deep(body):
            body = None  # parsed, but later steps (signing, the worker body) would not encode it
        url = body.get("url") if isinstance(body, dict) else None
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            # The common case, kept short: an assignment (checked further by its signature).
            assert isinstance(body, dict)
            problem = _url_problem(url)
            if problem is None and body.get("endpoint", endpoint) != endpoint:
                problem = (
                    f"is for endpoint {excerpt(str(body.get('endpoint')))!r}, not {endpoint!r}"
                )
            if problem is not None:
                where = _where(base_url, endpoint)
                return Rejected(
                    RouteError(
                        f"{where} assigned a worker that cannot be used: {abbreviate(url)} "
                        f"{problem}",
                        status_code=status_code,
                    ),
                    retryable=False,
                )
            # (JSON keys are str; lower-case ones, the usual, are checked as they are: their
            # hashes are already made.)
            if not _CREDENTIALS.isdisjoint(
                body if "".join(body).islower() else map(str.lower, body)
            ):
                # Forwarded to a rented machine as auth_data: never a field that looks like a
                # credential (none is signed, so the signature is unaffected).
                body = {k: v for k, v in body.items() if k.lower() not in _CREDENTIALS}
            return Ready(body=body, url=url, request_idx=_int_or_none(body.get("request_idx")))
    # Only what is not a plain assignment is quoted (an error message may need it).
    where = _where(base_url, endpoint)
    quoted = excerpt(content, secret=api_key)
    if status_code != 200:
        try:
            parsed = json.loads(content)
            detail = _error_text(parsed) if isinstance(parsed, dict) else None
        except (ValueError, RecursionError):
            detail = None
        detail = excerpt(detail, secret=api_key) if detail else quoted
        hint = _STATUS_HINTS.get(
            status_code, "the router failed" if status_code >= 500 else "unexpected answer"
        )
        message = f"HTTP {status_code} from {where}: {hint}" + (f" ({detail})" if detail else "")
        error_cls = AuthenticationError if status_code in (401, 403) else RouteError
        return Rejected(
            error_cls(message, status_code=status_code, body=quoted),
            retryable=retryable_status(status_code),
            retry_after=parse_retry_after(headers, now=now),
        )
    if not isinstance(body, dict):
        # Typically an HTML page from a proxy in front of the router: worth another try.
        return Rejected(
            RouteError(
                f"{where} answered with something that is not a JSON object: {quoted!r}",
                status_code=status_code,
                body=quoted,
            ),
            retryable=True,
        )
    if body.get("url") is not None:  # an http(s) URL would have returned above
        return Rejected(
            RouteError(
                f"{where} assigned a worker address that is not an http(s) URL: {quoted!r}",
                status_code=status_code,
                body=quoted,
            ),
            retryable=False,
        )
    detail = _error_text(body)
    if detail is not None:
        # A 200 carrying an error is an error, not "waiting" (a sibling route answers auth
        # failures this way).
        detail = excerpt(detail, secret=api_key)
        error_cls = AuthenticationError if "auth" in detail.lower() else RouteError
        return Rejected(
            error_cls(f"{where} refused the request: {detail}", status_code=200, body=quoted),
            retryable=False,
        )
    status = body.get("status")
    return Waiting(
        status=status,
        request_idx=_int_or_none(body.get("request_idx")),
        stopped=_is_stopped(status),
    )
