"""Reading a stream to its very end once its final event is in, so its connection is reused.

An HTTP connection goes back to the pool only when its answer was read to the end; closing an
answer part-read closes the connection, and the next call to that worker pays a new TCP and TLS
handshake (two round trips: 160 ms at 80 ms to the worker). A model server's stream has little
after its final event: vLLM's ``data: [DONE]`` and the end of the chunked body, TGI only the
latter. So once the final event is in (not when the client cut a stop sequence: the model may
still be talking then, and closing is what stops it) the streams read on, boundedly: at most
:data:`DRAIN_EVENTS` more events within about :data:`DRAIN_TIMEOUT` seconds. A server that keeps
talking or holds the connection open is cut, as before.

The async drain is bounded by ``asyncio.wait_for``. A sync read cannot be interrupted from its
own thread, so a watchdog thread (one per process, started on first use, asleep while no drain
runs) shuts the socket down under a drain that overstays; a response whose socket cannot be
found (a custom transport) is not drained at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

__all__ = ["DRAIN_EVENTS", "DRAIN_TIMEOUT", "drain", "drain_async"]

DRAIN_EVENTS = 4
DRAIN_TIMEOUT = 1.0
_TICK = 0.25  # the watchdog's resolution


class _Watchdog:
    """Shuts down the sockets of sync drains that overstay DRAIN_TIMEOUT."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[int, tuple[float, socket.socket]] = {}
        self._ids = itertools.count()
        self._busy = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, sock: socket.socket) -> int:
        token = next(self._ids)
        with self._lock:
            self._active[token] = (time.monotonic() + DRAIN_TIMEOUT, sock)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="vast-llm-drain-watchdog", daemon=True
                )
                self._thread.start()
        self._busy.set()
        return token

    def done(self, token: int) -> None:
        with self._lock:
            self._active.pop(token, None)

    def _run(self) -> None:
        while True:
            self._busy.wait()
            time.sleep(_TICK)
            now = time.monotonic()
            with self._lock:
                for token, (deadline, sock) in list(self._active.items()):
                    if deadline <= now:
                        del self._active[token]
                        # The base class's shutdown: it wakes the blocked read without
                        # touching the TLS object that read is using.
                        with contextlib.suppress(OSError):
                            socket.socket.shutdown(sock, socket.SHUT_RDWR)
                if not self._active:
                    self._busy.clear()


_WATCHDOG = _Watchdog()


def _socket_of(response: Any) -> socket.socket | None:
    extensions = getattr(response, "extensions", None)
    stream = extensions.get("network_stream") if isinstance(extensions, dict) else None
    get = getattr(stream, "get_extra_info", None)
    sock = get("socket") if callable(get) else None
    return sock if isinstance(sock, socket.socket) else None


def drain(events: Iterator[Any], response: Any) -> None:
    """Read what follows the final event of a sync httpx stream; never raises (the answer is
    whole already; a drain cut short leaves the connection to be closed, as before)."""
    sock = _socket_of(response)
    if sock is None:
        return
    token = _WATCHDOG.watch(sock)
    try:
        for count, _ in enumerate(events, 1):
            if count >= DRAIN_EVENTS:
                return
    except Exception:  # whatever ends the drain, the answer is whole already
        return  # (a cut drain leaves the connection to be closed, as before)
    finally:
        _WATCHDOG.done(token)


async def _read_on(events: AsyncIterator[Any]) -> None:
    count = 0
    async for _ in events:
        count += 1
        if count >= DRAIN_EVENTS:
            return


async def drain_async(events: AsyncIterator[Any]) -> None:
    """Read what follows the final event of an async stream (any driver), within
    DRAIN_TIMEOUT; never raises."""
    try:
        await asyncio.wait_for(_read_on(events), DRAIN_TIMEOUT)
    except Exception:  # a timeout, a cut, a bound: the answer is whole already
        return
