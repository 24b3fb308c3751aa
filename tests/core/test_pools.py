"""Our pools' network streams answer httpcore's questions as httpcore's own backends do."""

from __future__ import annotations

import asyncio
import socket

import httpcore

from vast_llm._budget import _AsyncBackend


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
