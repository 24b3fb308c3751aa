"""Hostile routers and workers on 127.0.0.1 that write exact bytes, and one face over every driver.

HTTP server libraries refuse to send much of what a broken or malicious server sends (NUL in a
header, two Content-Lengths, a garbage status line, a body marked gzip that is not), so these
servers are raw asyncio sockets: a handler coroutine reads requests and writes bytes, as slowly
or as wrongly as the scenario wants. Every byte each server receives is recorded, per
connection, to prove what reached it (no key, no cookie, nothing sent twice).

- :class:`Net`: an event loop in a background thread hosting the servers of one test.
- :class:`Server`: one listening socket with its handler; ``.received`` is everything it got.
- :meth:`Net.router`: a router signing assignments (with this module's own RSA key; clients
  pin its public key, or fetch it from ``/pubkey/``) that point at a worker of the test.
- worker handlers (:func:`answer`, :func:`trickle_body`...) built from small pieces.
- :class:`Subject`: one async face over the five drivers (``VastClient``, ``AsyncVastClient``
  on httpx and on an ``aiohttp.ClientSession``, ``VastTransport``, ``AsyncVastTransport``),
  so one scenario runs on all of them; :func:`run` runs a call with a time bound and measures
  the peak RSS growth of this process while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import FAST
from tests.reliability.bombs import GiB, MiB, bomb, encode
from vast_llm import AsyncVastClient, AsyncVastTransport, VastClient, VastTransport
from vast_llm._signing import public_key_pem, sign

__all__ = [
    "DRIVERS",
    "KEY",
    "PEM",
    "Conn",
    "GiB",
    "MiB",
    "Net",
    "Outcome",
    "Request",
    "Server",
    "Subject",
    "bomb",
    "encode",
    "run",
]

DRIVERS = ["sync", "async", "aiohttp", "transport", "atransport"]
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = public_key_pem(KEY.public_key())
API_KEY = "hostile-test-key-0123456789abcdef"
ENDPOINT = "hostile-endpoint"
MAX_HEAD = 1 << 20  # request heads beyond this are cut (a 60 KB worker URL must fit)

Handler = Callable[["Conn"], Awaitable[None]]


# -- servers ---------------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]  # lower-cased names; repeated ones joined with ", "
    body: bytes
    raw: bytes

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def json(self) -> Any:
        return json.loads(self.body)


class Conn:
    """One accepted connection: read requests, write exact bytes; every byte read is kept."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: bool = True
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.record = record  # off where a test measures this process's memory
        self.received = bytearray()
        self.requests: list[Request] = []

    async def request(self) -> Request | None:
        """The next request, or None if the client closed the connection."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = [*lines[0].split(" ", 2), "", ""][:3]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                name = name.strip().lower()
                headers[name] = (headers[name] + ", " if name in headers else "") + value.strip()
        length = int(headers.get("content-length", "0") or 0)
        try:
            body = await self.reader.readexactly(length) if length else b""
        except (asyncio.IncompleteReadError, ConnectionError):
            return None  # the client gave up while sending (its time budget, a cancellation)
        request = Request(method, target, headers, body, bytes(head) + body)
        if self.record:
            self.received += request.raw
            self.requests.append(request)
        return request

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def trickle(self, data: Iterable[bytes], interval: float) -> None:
        """Write each piece, ``interval`` seconds apart, until the pieces or the client end."""
        for piece in data:
            await self.send(piece)
            await asyncio.sleep(interval)


class Server:
    """A listening socket on 127.0.0.1 whose connections go to ``handler``."""

    def __init__(self, net: Net, handler: Handler) -> None:
        self.net = net
        self.handler = handler
        self.conns: list[Conn] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def received(self) -> bytes:
        """Every byte this server received, all connections in order of arrival."""
        return b"".join(bytes(c.received) for c in list(self.conns))

    @property
    def requests(self) -> list[Request]:
        return [r for c in list(self.conns) for r in c.requests]

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, limit=MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Conn(reader, writer, self.net.record)
        self.conns.append(conn)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.handler(conn)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for conn in self.conns:
            conn.writer.close()
        await asyncio.sleep(0)


class Net:
    """An event loop in a thread, hosting the hostile servers of one test (a context manager)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.servers: list[Server] = []
        self.record = True  # keep every byte received (off to measure this process's memory)

    def __enter__(self) -> Net:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Close every server and connection (a client blocked on one gets an error)."""
        if not self.loop.is_running():
            return
        for server in self.servers:
            self.call(server._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()

    def call(self, coro: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)  # type: ignore[arg-type]

    def server(self, handler: Handler) -> Server:
        server = Server(self, handler)
        self.call(server._start())
        self.servers.append(server)
        return server

    def worker(self, handler: Handler) -> Server:
        return self.server(handler)

    def router(
        self,
        worker: Server | str,
        *,
        answer: Callable[[dict[str, Any]], Any] | None = None,
        route: Handler | None = None,
        pubkey: Handler | None = None,
        extra_headers: bytes = b"",
    ) -> Server:
        """A router assigning ``worker`` (a server, or any URL) with a g3 signature.

        ``answer`` may rewrite each assignment (after signing, so a signed field can be
        tampered with); ``route``/``pubkey`` replace the handling of those paths whole.
        """
        reqnum = [0]

        async def handle(conn: Conn) -> None:
            while True:
                request = await conn.request()
                if request is None:
                    return
                if request.path == "/pubkey/":
                    if pubkey is not None:
                        await pubkey(conn)
                        return
                    await conn.send(response(200, PEM.encode(), "text/plain", extra_headers))
                    continue
                if route is not None:
                    await route(conn)
                    return
                reqnum[0] += 1
                url = worker if isinstance(worker, str) else worker.url
                body: dict[str, Any] = {
                    "url": url,
                    "endpoint": ENDPOINT,
                    "reqnum": reqnum[0],
                    "request_idx": 7,
                    "cost": 256.0,
                }
                body["signature"] = sign(KEY, "g3", body)
                final = answer(body) if answer is not None else body
                data = final if isinstance(final, bytes) else json.dumps(final).encode()
                await conn.send(response(200, data, "application/json", extra_headers))

        return self.server(handle)


def response(
    status: int, body: bytes, content_type: str = "application/json", extra: bytes = b""
) -> bytes:
    """The exact bytes of a plain HTTP/1.1 answer with a Content-Length."""
    return (
        f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n".encode()
        + extra
        + b"\r\n"
        + body
    )


# -- worker behaviours -----------------------------------------------------------------------

TGI_ANSWER = json.dumps(
    {"generated_text": "fine", "details": {"finish_reason": "length", "generated_tokens": 1}}
).encode()


def token(i: int, final: bool = False) -> bytes:
    event: dict[str, Any] = {
        "index": i,
        "token": {"id": i, "text": f" t{i}", "logprob": -0.1, "special": False},
        "generated_text": None,
        "details": None,
    }
    if final:
        event["generated_text"] = "done"
        event["details"] = {"finish_reason": "length", "generated_tokens": i, "input_length": 1}
    return b"data:" + json.dumps(event).encode() + b"\n\n"


def sse_head(extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n" + extra + b"\r\n"


def answer(raw: bytes | Callable[[Request], bytes], *, keep_alive: bool = True) -> Handler:
    """A worker answering every request with these exact bytes."""

    async def handle(conn: Conn) -> None:
        while True:
            request = await conn.request()
            if request is None:
                return
            await conn.send(raw(request) if callable(raw) else raw)
            if not keep_alive:
                return

    return handle


def healthy() -> Handler:
    """A worker answering /generate and /generate_stream correctly (3 tokens)."""

    def reply(request: Request) -> bytes:
        if request.path.endswith("_stream"):
            body = token(1) + token(2) + token(3, final=True)
            return sse_head(b"Content-Length: %d\r\n" % len(body)) + body
        return response(200, TGI_ANSWER)

    return answer(reply)


def then(head: bytes, rest: Callable[[Conn], Awaitable[None]]) -> Handler:
    """A worker reading one request, writing ``head``, then doing ``rest`` (e.g. a trickle)."""

    async def handle(conn: Conn) -> None:
        if await conn.request() is None:
            return
        if head:
            await conn.send(head)
        await rest(conn)

    return handle


def forever(piece: bytes | Callable[[int], bytes], interval: float) -> Callable[[Conn], Any]:
    """``rest`` for :func:`then`: write ``piece`` every ``interval`` seconds, forever."""

    def pieces() -> Iterator[bytes]:
        i = 0
        while True:
            i += 1
            yield piece(i) if callable(piece) else piece

    async def rest(conn: Conn) -> None:
        await conn.trickle(pieces(), interval)

    return rest


def flood(piece: bytes, total: int) -> Callable[[Conn], Any]:
    """``rest`` for :func:`then`: write ``piece`` as fast as the client reads, ``total`` bytes."""

    async def rest(conn: Conn) -> None:
        sent = 0
        while sent < total:
            await conn.send(piece)
            sent += len(piece)

    return rest


async def silent(conn: Conn) -> None:
    """``rest`` for :func:`then`: say nothing, keep the connection open."""
    await asyncio.sleep(3600)


# -- the drivers -----------------------------------------------------------------------------


async def in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking call in a daemon thread of its own, as sync code would call it.

    Not the loop's default executor: a sync call that hangs today (blocked on the concurrency
    gate, which closing the servers cannot unblock) must not hang the loop's shutdown too.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(value: Any, error: BaseException | None) -> None:
        if not future.done():
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)

    def work() -> None:
        try:
            value, error = fn(*args, **kwargs), None
        except BaseException as exc:
            value, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop may be closed by then
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=work, daemon=True).start()
    return await future


@dataclass
class Outcome:
    """What one call did: its result or error, how long it took, the peak RSS growth."""

    driver: str
    value: Any = None
    error: BaseException | None = None
    status: int | None = None  # a transport's HTTP status
    elapsed: float = 0.0
    peak: int = 0  # bytes of peak RSS growth while the call ran
    hung: bool = False  # still running at the bound (then stopped by closing the servers)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        if self.hung:
            return "hung"
        if self.error is not None:
            return type(self.error).__name__
        if self.status is not None and not 200 <= self.status < 300:
            return f"HTTP {self.status}"
        return "ok"

    def __repr__(self) -> str:  # values can be 64 MiB: never shown whole
        return f"<Outcome {self.summary()}>"

    def summary(self) -> str:
        detail = f": {str(self.error)[:160]}" if self.error is not None else ""
        return (
            f"{self.driver}: {self.kind} in {self.elapsed:.2f}s, "
            f"peak +{self.peak / MiB:.1f} MiB{detail}"
        )


class Subject:
    """One driver, one face: ``generate`` and ``stream`` as coroutines, whatever the driver.

    The transports are driven as an SDK drives them: an ``httpx.Client`` /
    ``httpx.AsyncClient`` with the transport, posting TGI bodies to ``http://vast/...`` and
    reading the answer whole (``generate``) or as raw decoded bytes (``stream``).
    """

    def __init__(self, driver: str, settings: dict[str, Any], **client: Any) -> None:
        self.driver = driver
        self.settings = settings
        self.client_options = client  # for the httpx.Client the transports sit in
        self.session: aiohttp.ClientSession | None = None
        self.impl: Any = None

    async def __aenter__(self) -> Subject:
        s = self.settings
        if self.driver == "sync":
            self.impl = VastClient(**s)
        elif self.driver == "async":
            self.impl = AsyncVastClient(**s)
        elif self.driver == "aiohttp":
            self.session = s.pop("session", None) or aiohttp.ClientSession()
            self.impl = AsyncVastClient(**s, http_client=self.session)
        elif self.driver == "transport":
            self.impl = httpx.Client(transport=VastTransport(**s), **self.client_options)
        else:
            self.impl = httpx.AsyncClient(transport=AsyncVastTransport(**s), **self.client_options)
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            if self.driver in ("sync", "transport"):
                self.impl.close()
            else:
                await self.impl.aclose()
            if self.session is not None:
                await self.session.close()

    @property
    def threaded(self) -> bool:
        return self.driver in ("sync", "transport")

    async def generate(self, prompt: str = "x", **params: Any) -> Outcome:
        if self.driver == "sync":
            return Outcome(
                self.driver, (await in_thread(self.impl.generate, prompt, **params)).text
            )
        if self.driver in ("async", "aiohttp"):
            return Outcome(self.driver, (await self.impl.generate(prompt, **params)).text)
        body = {"inputs": prompt, "parameters": params}
        if self.driver == "transport":
            got = await in_thread(self.impl.post, "http://vast/generate", json=body)
        else:
            got = await self.impl.post("http://vast/generate", json=body)
        return Outcome(self.driver, got.content, status=got.status_code)

    async def stream(self, prompt: str = "x", **params: Any) -> Outcome:
        chunks: list[Any] = []
        outcome = Outcome(self.driver, chunks)
        try:
            if self.driver == "sync":

                def read() -> None:
                    with self.impl.stream(prompt, **params) as stream:
                        chunks.extend(c.text for c in stream)

                await in_thread(read)
            elif self.driver in ("async", "aiohttp"):
                async with self.impl.stream(prompt, **params) as stream:
                    async for chunk in stream:
                        chunks.append(chunk.text)
            else:
                body = {"inputs": prompt, "parameters": params, "stream": True}
                url = "http://vast/generate_stream"
                if self.driver == "transport":

                    def relay() -> int:
                        with self.impl.stream("POST", url, json=body) as got:
                            chunks.extend(got.iter_bytes())
                            return int(got.status_code)

                    outcome.status = await in_thread(relay)
                else:
                    async with self.impl.stream("POST", url, json=body) as got:
                        outcome.status = got.status_code
                        async for part in got.aiter_bytes():
                            chunks.append(part)
        except BaseException as exc:
            outcome.error = exc
        return outcome


def settings(router: Server, **overrides: Any) -> dict[str, Any]:
    """Client settings for a hostile router: its key pinned, short waits, a short deadline."""
    base: dict[str, Any] = {
        "endpoint": ENDPOINT,
        "api_key": API_KEY,
        "base_url": router.url,
        "public_key": PEM,
        "backoff": FAST,
        "deadline": 1.5,
        "timeout": 1.0,
        "route_timeout": 0.5,
        "max_retries": 2,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def _status(key: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    return 0


@contextlib.contextmanager
def peak_growth() -> Iterator[Callable[[], int]]:
    """The peak of memory allocated through Python while the block runs (``tracemalloc``).

    Deterministic where RSS is not: after an earlier test freed a few hundred MiB, the
    allocator keeps them resident and a new bomb reuses them without RSS growing.
    """
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    peak = [0]
    try:
        yield lambda: peak[0] or max(0, tracemalloc.get_traced_memory()[1] - base)
    finally:
        peak[0] = max(0, tracemalloc.get_traced_memory()[1] - base)
        if started:
            tracemalloc.stop()


def retained(before: int = 0) -> int:
    """Bytes allocated through Python and still held (tracemalloc must be tracing)."""
    gc.collect()
    return tracemalloc.get_traced_memory()[0] - before


async def run(
    net: Net, call: Callable[[], Awaitable[Outcome]], driver: str, bound: float
) -> Outcome:
    """Run one call with a time bound; a call still running then is stopped by closing every
    server (a sync call blocked in a socket read then fails) and reported as hung."""
    started = time.monotonic()
    with peak_growth() as peak:
        task = asyncio.ensure_future(call())
        done, _ = await asyncio.wait({task}, timeout=bound)
        if done:
            try:
                outcome = task.result()
            except BaseException as exc:
                outcome = Outcome(driver, error=exc)
        else:
            outcome = Outcome(driver, hung=True)
            await in_thread(net.stop)  # unblocks a sync call stuck reading
            task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, 10)
        outcome.elapsed = time.monotonic() - started
        outcome.peak = peak()
    return outcome


@contextlib.asynccontextmanager
async def hostile() -> AsyncIterator[Net]:
    """A :class:`Net` for one async test, closed at its end."""
    with Net() as net:
        yield net
