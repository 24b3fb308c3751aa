"""Serving ASGI apps with uvicorn on 127.0.0.1, all on one event loop in a background thread."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import socket
import threading
from collections.abc import Mapping, Sequence

import uvicorn
from starlette.types import ASGIApp

__all__ = ["Servers", "bind_loopback", "free_port", "refusing_socket"]


def bind_loopback(port: int = 0) -> socket.socket:
    """A listening TCP socket on 127.0.0.1 (port 0: any free port)."""
    # proto=IPPROTO_TCP matters: asyncio disables Nagle only on sockets that say they are TCP,
    # and without that every response body waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    sock.listen(512)
    sock.setblocking(False)
    return sock


def refusing_socket(port: int = 0) -> socket.socket:
    """A socket bound on 127.0.0.1 that never listens: connections to its port are refused,
    and while it stays open no other process can take the port.

    Without ``SO_REUSEADDR``: Linux lets two sockets share a port when both set it, so the
    listening sockets of other emulators (``bind_loopback``) could land on this port and
    answer what should be refused (a free port, closed again, was taken by a parallel test's
    server). Re-binding a port a server just left can meet its TIME_WAIT connections; then
    it is bound with ``SO_REUSEADDR``, which still refuses connections.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        if not port:
            sock.close()
            raise
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            raise
    return sock


def free_port() -> int:
    """A port on 127.0.0.1 with nothing listening at the time of the call (another process
    may take it later: for a port that must keep refusing, hold a :func:`refusing_socket`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class _DropStreamCuts(logging.Filter):
    # The stream_cut fault drops connections on purpose; that is not an error worth a traceback.
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (exc is not None and type(exc).__name__ == "StreamCut")


_filter = _DropStreamCuts()

# httptools (C) parses HTTP at a fraction of h11's (pure Python) cost: with h11 the emulator,
# not the client, bounded every load benchmark. h11 stays the fallback.
_HTTP = "httptools" if importlib.util.find_spec("httptools") is not None else "h11"


class _Server(uvicorn.Server):
    """uvicorn's server, stopping in milliseconds instead of ~0.2 s.

    uvicorn looks at ``should_exit`` every 0.1 s and then sleeps 0.1 s more while shutting
    down; a test suite starts and stops an emulator for nearly every test, and a user's suite
    with the pytest plugin as well. Here a stop wakes the main loop at once (:meth:`wake`),
    and the shutdown polls for open connections every few milliseconds; the steps and the
    graceful timeout are uvicorn's own.
    """

    _wake: asyncio.Event | None = None

    def wake(self) -> None:
        """Have the main loop look at ``should_exit`` now (call on the server's loop)."""
        if self._wake is not None:
            self._wake.set()

    async def main_loop(self) -> None:
        self._wake = asyncio.Event()
        counter = 0
        while not await self.on_tick(counter):  # True once should_exit is set
            counter = (counter + 1) % 864000
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.1)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()  # idle ones close now, busy ones after their answer
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._drained(), self.config.timeout_graceful_shutdown)
        for task in self.server_state.tasks:
            task.cancel()
        await self.lifespan.shutdown()

    async def _drained(self) -> None:
        while self.server_state.connections or self.server_state.tasks:  # noqa: ASYNC110 - uvicorn sets no event
            await asyncio.sleep(0.005)
        for server in self.servers:
            await server.wait_closed()


class Servers:
    """uvicorn servers for several apps, each on its own loopback socket, in one thread."""

    def __init__(self) -> None:
        self._servers: list[_Server] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ports: list[int] = []
        self._held: list[socket.socket] = []  # ports that refuse connections (hold, stop_one)

    def hold(self, sock: socket.socket) -> None:
        """Keep ``sock`` (a :func:`refusing_socket`) open until :meth:`stop`."""
        self._held.append(sock)

    def start(
        self,
        apps: Sequence[tuple[ASGIApp, socket.socket]],
        timeout: float = 15.0,
        *,
        tls: Mapping[int, tuple[str, str]] | None = None,
    ) -> None:
        """Serve each app on its socket; ``tls`` maps an app's index to (certfile, keyfile)
        for the ones that speak HTTPS."""
        logging.getLogger("uvicorn.error").addFilter(_filter)
        self._ports = [sock.getsockname()[1] for _, sock in apps]
        ready = threading.Event()
        tls = tls or {}
        self._servers = [
            _Server(
                uvicorn.Config(
                    app,
                    log_level="warning",
                    access_log=False,
                    lifespan="off",
                    http=_HTTP,
                    ws="none",
                    timeout_keep_alive=30,
                    timeout_graceful_shutdown=1,
                    # uvicorn builds its SSL context from files, also for serve(sockets=...).
                    ssl_certfile=tls[index][0] if index in tls else None,
                    ssl_keyfile=tls[index][1] if index in tls else None,
                )
            )
            for index, (app, _) in enumerate(apps)
        ]

        async def main() -> None:
            tasks = [
                asyncio.create_task(server.serve(sockets=[sock]))
                for server, (_, sock) in zip(self._servers, apps, strict=True)
            ]
            self._tasks = tasks
            while not all(s.started for s in self._servers):
                failed = [t for t in tasks if t.done()]
                if failed:
                    failed[0].result()
                    raise RuntimeError("an emulator server stopped while starting")
                await asyncio.sleep(0.005)
            ready.set()
            await asyncio.gather(*tasks)
            # What the apps left running (a session sweep) ends with the servers.
            leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in leftovers:
                task.cancel()
            await asyncio.gather(*leftovers, return_exceptions=True)

        def run() -> None:
            loop = asyncio.new_event_loop()
            self.loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(main())
            except BaseException as exc:  # surfaced to start() below
                self._error = exc
            finally:
                ready.set()
                loop.close()

        self._thread = threading.Thread(target=run, name="vast-emulator", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("the emulator did not start in time")
        if self._error is not None:
            raise RuntimeError(f"the emulator failed to start: {self._error}") from self._error

    def stop_one(self, index: int, timeout: float = 10.0) -> None:
        """Stop the server of the ``index``-th app for good: its port then refuses connections
        and the connections it had are closed."""
        loop, server, task = self.loop, self._servers[index], self._tasks[index]
        if loop is None or task.done():
            return
        server.should_exit = True

        async def stopped() -> None:
            server.wake()
            await asyncio.wait([task])

        asyncio.run_coroutine_threadsafe(stopped(), loop).result(timeout)
        # The port keeps refusing: held, so that no other server (another test's) takes it.
        # (If it was taken in the instant between, nothing more can be done from here.)
        with contextlib.suppress(OSError):
            self._held.append(refusing_socket(self._ports[index]))

    def drop_connection(self, index: int, peer: tuple[str, int]) -> bool:
        """Close the connection the ``index``-th app's server has with ``peer``, at once and
        without an answer (as the Vast worker drops the calls of a session it ends). Call it
        on the servers' event loop."""
        for connection in list(self._servers[index].server_state.connections):
            if getattr(connection, "client", None) == peer:
                transport = getattr(connection, "transport", None)
                if transport is not None:
                    transport.close()
                    return True
        return False

    def stop(self, timeout: float = 10.0) -> None:
        for server in self._servers:
            server.should_exit = True
        loop = self.loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in the meantime
                for server in self._servers:
                    loop.call_soon_threadsafe(server.wake)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        for sock in self._held:
            sock.close()
        self._held.clear()
