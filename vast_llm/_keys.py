"""The autoscaler's public key for one client: pinned, or fetched once and cached.

This is driver-side coordination (the flow only asks for the key with ``GetKey``): concurrent
first calls fetch once — one thread lock for the sync world, and an ``asyncio.Lock`` per event
loop that the async drivers pass in — and a signature failure replaces the key once (rotation);
concurrent failures with the same stale key still fetch once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

from cryptography.hazmat.primitives.asymmetric import rsa

from ._config import Settings
from ._flow import Context, Flow, fetch_key_flow

__all__ = ["KeyStore"]


class KeyStore:
    """The key of one client's autoscaler (thread-safe; loop locks come from the caller)."""

    def __init__(self, settings: Settings, ctx: Context) -> None:
        self._settings = settings
        self._ctx = ctx
        self._key = settings.public_key
        self._lock = threading.Lock()
        self.fetches = 0

    @property
    def pinned(self) -> bool:
        return self._settings.public_key is not None

    def _current(self, stale: rsa.RSAPublicKey | None) -> rsa.RSAPublicKey | None:
        key = self._key
        if key is not None and (key is not stale or self.pinned):
            return key
        return None

    def _flow(self) -> Flow[rsa.RSAPublicKey]:
        return fetch_key_flow(self._settings, self._ctx)

    def get(
        self,
        run: Callable[[Flow[rsa.RSAPublicKey]], rsa.RSAPublicKey],
        stale: rsa.RSAPublicKey | None,
    ) -> rsa.RSAPublicKey:
        """The key; ``run`` drives the fetch flow on the caller's HTTP stack when one is due."""
        key = self._current(stale)
        if key is not None:
            return key
        with self._lock:
            key = self._current(stale)
            if key is None:
                key = run(self._flow())
                self._key, self.fetches = key, self.fetches + 1
            return key

    async def aget(
        self,
        run: Callable[[Flow[rsa.RSAPublicKey]], Awaitable[rsa.RSAPublicKey]],
        stale: rsa.RSAPublicKey | None,
        lock: asyncio.Lock,
    ) -> rsa.RSAPublicKey:
        """The key, in an event loop; ``lock`` is that loop's (see ``_loops.PerLoop``)."""
        key = self._current(stale)
        if key is not None:
            return key
        async with lock:
            key = self._current(stale)
            if key is None:
                key = await run(self._flow())
                self._key, self.fetches = key, self.fetches + 1
            return key
