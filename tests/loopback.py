"""Plain HTTP calls by hand to emulators on 127.0.0.1 (tests that speak the wire protocol).

``httpx.post()`` and friends build a client per call, and with it a TLS context that loads
certifi's CA bundle (~25 ms of CPU), although these calls are plain HTTP. These share one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx

_TRUST = httpx.create_ssl_context()


def post(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(url, verify=_TRUST, **kwargs)


def get(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(url, verify=_TRUST, **kwargs)


@contextlib.contextmanager
def stream(method: str, url: str, **kwargs: Any) -> Iterator[httpx.Response]:
    with httpx.stream(method, url, verify=_TRUST, **kwargs) as response:
        yield response
