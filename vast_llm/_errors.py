"""The errors vast_llm raises. Every one is a ``VastError``; catch the leaf you can act on.

::

    VastError
    ├── ConfigError               a setting is missing or wrong (raised at construction)
    ├── RouteError                the autoscaler refused the request (.status_code, .body)
    │   ├── AuthenticationError   the API key was rejected
    │   └── NoWorkerReady         no worker became ready before the deadline (.status)
    │       └── EndpointStopped   the endpoint is stopped: start it, nothing will come
    ├── SignatureError            the assignment's signature did not verify (never retried)
    ├── WorkerError               the worker refused or failed the request (.status_code, .body)
    │   └── WorkerStreamError     the answer was cut, malformed or carried an error event
    └── VastConnectionError       the autoscaler or worker could not be reached
        ├── VastTimeout           a timeout or the overall deadline passed
        └── WorkerCertificateError  a worker's TLS certificate did not verify (never retried)

Messages never contain the API key: every excerpt of a response body goes through
:func:`excerpt`, which also strips control characters and truncates.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

__all__ = [
    "AuthenticationError",
    "ConfigError",
    "EndpointStopped",
    "NoWorkerReady",
    "RouteError",
    "SignatureError",
    "VastConnectionError",
    "VastError",
    "VastSecurityWarning",
    "VastTimeout",
    "WorkerCertificateError",
    "WorkerError",
    "WorkerStreamError",
    "abbreviate",
    "excerpt",
    "json_excerpt",
]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
_SPACES = re.compile(r"\s+")
_EXCERPT_LIMIT = 300


def excerpt(
    body: bytes | str | None, *, secret: str | None = None, limit: int = _EXCERPT_LIMIT
) -> str:
    """A short, printable, secret-free excerpt of a response body for an error message."""
    if body is None:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    if secret:
        text = text.replace(secret, "***")
    text = _SPACES.sub(" ", _CONTROL.sub(" ", text)).strip()
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


_URL_LIMIT = 120
# scheme://[user[:password]@]host[:port]: the part of a URL worth keeping when it is shortened.
_ORIGIN = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?:[^/@?#]*@)?(?P<host>\[[^\]/]*\]|[^:/?#@]*)"
    r"(?P<port>:[0-9]{1,5})?"
)


def abbreviate(url: str, *, limit: int = _URL_LIMIT) -> str:
    """A URL short enough to quote in a message or a log line.

    Up to ``limit`` characters it is kept (control characters replaced); longer, or with a
    user and password in it, it becomes its scheme, host and port, its length and a short
    hash that tells two long URLs apart: ``http://10.0.0.1:8000/… (60021 chars, #1f3a9c0e)``.
    A worker URL comes from the autoscaler, and a hostile one can be 60 KB long.
    """
    if len(url) <= limit and "@" not in url and not _CONTROL.search(url):
        return url
    digest = hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    # Not urllib's urlsplit: it caches what it splits, and a cache of 60 KB URLs is the problem.
    found = _ORIGIN.match(url)
    if found is not None:
        head = (
            f"{found.group('scheme')}://{found.group('host')}" + (found.group("port") or "") + "/"
        )
    else:
        head = url
    head = _CONTROL.sub("?", head)
    if len(head) > limit // 2:
        head = head[: limit // 2]
    if len(url) <= limit and head.rstrip("/") == url.rstrip("/"):
        return head
    return f"{head}… ({len(url)} chars, #{digest})"


_ENCODER = json.JSONEncoder(default=repr)


def json_excerpt(value: Any, limit: int = 1000) -> str:
    """The start of ``value`` as JSON text, for quoting a parsed answer in an error message.

    Never raises and never encodes more than it keeps: a huge answer is not dumped whole, and
    one nested too deeply to encode ends in "…".
    """
    parts: list[str] = []
    size = 0
    try:
        for piece in _ENCODER.iterencode(value):
            parts.append(piece)
            size += len(piece)
            if size >= limit:
                break
    except (RecursionError, ValueError):
        parts.append("…")
    return "".join(parts)[:limit]


class VastError(Exception):
    """Base class of every error raised by vast_llm."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep errors picklable (multiprocessing, LangChain tracers) despite keyword-only fields.
        return (_rebuild, (type(self), self.message, self.__dict__))


def _rebuild(cls: type[VastError], message: str, state: dict[str, Any]) -> VastError:
    error = cls.__new__(cls)
    VastError.__init__(error, message)
    error.__dict__.update(state)
    return error


class ConfigError(VastError, ValueError):
    """A setting is missing or invalid; raised when the client is constructed."""


class RouteError(VastError):
    """The autoscaler's ``/route/`` call failed or answered with an error."""

    def __init__(self, message: str, *, status_code: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body


class AuthenticationError(RouteError):
    """The autoscaler rejected the API key (check ``VAST_API_KEY``)."""


class NoWorkerReady(RouteError):
    """No worker became ready before the deadline; ``.status`` is the router's last status."""

    def __init__(self, message: str, *, status: Any = None, status_code: int | None = 200) -> None:
        super().__init__(message, status_code=status_code, body=excerpt(str(status)))
        self.status = status


class EndpointStopped(NoWorkerReady):
    """The endpoint is stopped, so no worker will become ready until it is started again."""


class SignatureError(VastError):
    """The route answer's signature did not verify, so no worker was contacted (never retried)."""


class WorkerError(VastError):
    """The worker refused or failed the request (``.status_code``, ``.body`` excerpt)."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        body: str = "",
        worker_url: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body
        self.worker_url = worker_url
        self.content = b""  # the whole error body as received (workers never see the key)


class WorkerStreamError(WorkerError):
    """The worker's answer was cut, malformed, or carried an error event after it started."""


class VastConnectionError(VastError):
    """The autoscaler or a worker could not be reached."""


class VastTimeout(VastConnectionError):
    """A call timed out, or the overall deadline passed."""


class WorkerCertificateError(VastConnectionError):
    """A worker's TLS certificate did not verify against the worker CA (``worker_ca``); no
    request was sent to it, and it is not retried."""

    def __init__(self, message: str, *, worker_url: str | None = None) -> None:
        super().__init__(message)
        self.worker_url = worker_url


class VastSecurityWarning(UserWarning):
    """A setting weakens security (plain HTTP to a remote host, signature checks off)."""
