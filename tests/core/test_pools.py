"""Our pools: their network streams answer httpcore's questions as httpcore's own backends do,
and they give queued requests connections by httpcore's rules without booking one twice."""

from __future__ import annotations

import asyncio
import socket
import ssl
import types
from typing import Any

import httpcore
import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from vast_llm._budget import _AsyncBackend, async_pools, pools
from vast_llm._pool import fair


async def test_is_readable_tells_a_kept_connection_the_peer_closed() -> None:
    # httpcore asks every idle connection of a pool whether it is readable (the EOF of a peer
    # that closed it) before reusing it; our stream answers from the socket directly.
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        stream = await _AsyncBackend(httpcore.AnyIOBackend()).connect_tcp("127.0.0.1", port)
        peer, _ = server.accept()
        try:
            assert stream.get_extra_info("is_readable") is False
            assert stream.get_extra_info("socket") is not None  # other questions pass through
            peer.sendall(b"x")
            for _ in range(100):  # loopback delivers at once; bounded all the same
                if stream.get_extra_info("is_readable"):
                    break
                await asyncio.sleep(0.01)
            assert stream.get_extra_info("is_readable") is True
            assert await stream.read(10) == b"x"
            assert stream.get_extra_info("is_readable") is False
            peer.close()
            for _ in range(100):
                if stream.get_extra_info("is_readable"):
                    break
                await asyncio.sleep(0.01)
            assert stream.get_extra_info("is_readable") is True  # the EOF waits
        finally:
            peer.close()
            await stream.aclose()
        assert stream.get_extra_info("is_readable") is True  # closed: a read ends at once


# -- assigning requests to connections (vast_llm._pool) -----------------------------------


class _Connection:
    """What httpcore's assignment asks of a connection, as plain flags."""

    def __init__(
        self,
        name: str,
        *,
        origin: str = "a",
        idle: bool = False,
        available: bool = False,
        closed: bool = False,
        expired: bool = False,
    ) -> None:
        self.name, self.origin = name, origin
        self.idle, self.available, self.closed, self.expired = idle, available, closed, expired

    def is_closed(self) -> bool:
        return self.closed

    def has_expired(self) -> bool:
        return self.expired

    def is_idle(self) -> bool:
        return self.idle

    def is_available(self) -> bool:
        return self.available

    def can_handle_request(self, origin: str) -> bool:
        return origin == self.origin


class _Request:
    def __init__(self, origin: str, connection: _Connection | None = None) -> None:
        self.request = types.SimpleNamespace(url=types.SimpleNamespace(origin=origin))
        self.connection = connection

    def is_queued(self) -> bool:
        return self.connection is None

    def assign_to_connection(self, connection: _Connection) -> None:
        self.connection = connection


class _Pool:
    def __init__(
        self,
        connections: list[_Connection],
        requests: list[_Request],
        max_connections: int,
        max_keepalive: int,
    ) -> None:
        self._connections = connections
        self._requests = requests
        self._max_connections = max_connections
        self._max_keepalive_connections = max_keepalive
        self.created = 0

    def create_connection(self, origin: str) -> _Connection:
        self.created += 1
        return _Connection(f"new{self.created}", origin=origin)  # connecting: neither flag

    def _assign_requests_to_connections(self) -> list[_Connection]:
        raise AssertionError("replaced by fair()")


def _outcome(pool: _Pool, closing: list[Any]) -> tuple[object, ...]:
    return (
        [c.name for c in pool._connections],
        [c.name for c in closing],
        [None if r.connection is None else r.connection.name for r in pool._requests],
    )


def _fair(pool: _Pool) -> _Pool:
    fair(pool)
    assert "_assign_requests_to_connections" in vars(pool)  # bound on the instance
    return pool


def test_one_idle_connection_goes_to_one_of_two_requests_arriving_together() -> None:
    # httpcore gives it to both; the second then fails inside httpcore and walks the pool again.
    idle = _Connection("idle", idle=True, available=True)
    first, second = _Request("a"), _Request("a")
    pool = _fair(_Pool([idle], [first, second], max_connections=10, max_keepalive=5))
    assert _outcome(pool, pool._assign_requests_to_connections()) == (
        ["idle", "new1"],
        [],
        ["idle", "new1"],
    )
    # Before it, httpcore's own rules did book it twice (what this module exists for).
    before = _Pool(
        [_Connection("idle", idle=True, available=True)],
        [_Request("a"), _Request("a")],
        max_connections=10,
        max_keepalive=5,
    )
    closing = httpcore.AsyncConnectionPool._assign_requests_to_connections(before)  # type: ignore[arg-type]
    assert _outcome(before, closing)[2] == ["idle", "idle"]


def test_an_idle_connection_given_to_a_request_is_not_closed_as_surplus() -> None:
    booked = _Connection("booked", idle=True, available=True)
    other = _Connection("other", idle=True, available=True)
    pool = _fair(_Pool([booked, other], [_Request("a", booked)], 10, max_keepalive=0))
    assert _outcome(pool, pool._assign_requests_to_connections()) == (
        ["booked"],
        ["other"],
        ["booked"],
    )


def test_a_full_pool_keeps_a_request_queued_or_makes_room_from_an_idle_connection() -> None:
    busy = _Connection("busy")
    pool = _fair(_Pool([busy], [_Request("a")], max_connections=1, max_keepalive=5))
    assert _outcome(pool, pool._assign_requests_to_connections()) == (["busy"], [], [None])
    spare = _Connection("spare", origin="b", idle=True, available=True)
    pool = _fair(_Pool([spare], [_Request("a")], max_connections=1, max_keepalive=5))
    assert _outcome(pool, pool._assign_requests_to_connections()) == (
        ["new1"],
        ["spare"],
        ["new1"],
    )


_connection_states = st.builds(
    lambda origin, state: _Connection("", origin=origin, **state),
    st.sampled_from(["a", "b"]),
    st.sampled_from(
        [
            {"idle": True, "available": True},
            {},  # active, or connecting
            {"closed": True},
            {"idle": True, "available": True, "expired": True},
            {"expired": True},
        ]
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    connections=st.lists(_connection_states, max_size=8),
    queued=st.lists(st.sampled_from(["a", "b"]), max_size=4),
    active=st.integers(0, 8),
    max_connections=st.integers(1, 10),
    max_keepalive=st.integers(0, 10),
)
def test_the_assignment_is_httpcores_except_for_booking_a_connection_twice(
    connections: list[_Connection],
    queued: list[str],
    active: int,
    max_connections: int,
    max_keepalive: int,
) -> None:
    for index, connection in enumerate(connections):
        connection.name = f"c{index}"
    # Requests already running hold the connections that are neither idle nor closed.
    running = [c for c in connections if not c.idle and not c.closed][:active]

    def state() -> _Pool:
        copies = {id(c): _Connection(c.name, origin=c.origin) for c in connections}
        for c in connections:
            copies[id(c)].__dict__.update(c.__dict__)
        requests = [_Request(c.origin, copies[id(c)]) for c in running]
        requests += [_Request(origin) for origin in queued]
        return _Pool([copies[id(c)] for c in connections], requests, max_connections, max_keepalive)

    ours = _fair(state())
    ours_out = _outcome(ours, ours._assign_requests_to_connections())
    theirs = state()
    theirs_out = _outcome(
        theirs,
        httpcore.AsyncConnectionPool._assign_requests_to_connections(theirs),  # type: ignore[arg-type]
    )
    if len(queued) <= 1:
        assert ours_out == theirs_out  # nothing to book twice: httpcore's decisions exactly
    # Whatever the queue: no connection given to two requests that have not started on it,
    # never more connections than allowed, and a request left queued only in a full pool.
    given = [r.connection for r in ours._requests[len(running) :] if r.connection is not None]
    assert len({id(c) for c in given}) == len(given)
    assert len(ours._connections) <= max(max_connections, len(connections))
    if any(r.connection is None for r in ours._requests):
        assert len(ours._connections) >= max_connections


async def test_concurrent_requests_on_our_pool_never_queue_twice() -> None:
    # A real pool of ours on loopback, 64 requests at a time, keeping idle connections:
    # httpcore walks its pool once when a request comes and once when its answer is closed,
    # and once more each time a request it gave a connection to finds it taken.
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=20)
    _, client = async_pools(limits, httpx.Timeout(5.0), ssl.create_default_context())
    pool = client._transport._pool  # type: ignore[attr-defined]
    walks = 0
    assign = pool._assign_requests_to_connections

    def counted() -> list[object]:
        nonlocal walks
        walks += 1
        return assign()  # type: ignore[no-any-return]

    pool._assign_requests_to_connections = counted
    requests = 0

    async def lane() -> None:
        nonlocal requests
        for _ in range(10):
            response = await client.get(f"http://127.0.0.1:{port}/")
            assert response.content == b"ok"
            requests += 1

    try:
        async with server:
            await asyncio.gather(*(lane() for _ in range(64)))
    finally:
        await client.aclose()
    assert requests == 640
    assert walks == 2 * requests


def test_threads_sharing_our_sync_pool_never_queue_twice() -> None:
    # The sync pools serve every thread of a client: the same assignment, under httpcore's lock.
    import socketserver
    import threading

    class Answer(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            while True:
                lines = []
                while (line := self.rfile.readline()) not in (b"\r\n", b""):
                    lines.append(line)
                if not lines:
                    return
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True

    limits = httpx.Limits(max_connections=256, max_keepalive_connections=8)
    with Server(("127.0.0.1", 0), Answer) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.server_address[1]
        _, client = pools(limits, httpx.Timeout(5.0), ssl.create_default_context())
        pool = client._transport._pool  # type: ignore[attr-defined]
        walks = 0
        lock = threading.Lock()
        assign = pool._assign_requests_to_connections

        def counted() -> list[object]:
            nonlocal walks
            with lock:
                walks += 1
            return assign()  # type: ignore[no-any-return]

        pool._assign_requests_to_connections = counted
        answers: list[bytes] = []

        def lane() -> None:
            for _ in range(20):
                answers.append(client.get(f"http://127.0.0.1:{port}/").content)

        try:
            threads = [threading.Thread(target=lane) for _ in range(16)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=30)
        finally:
            client.close()
            server.shutdown()
    assert answers == [b"ok"] * 320
    assert walks == 2 * 320
