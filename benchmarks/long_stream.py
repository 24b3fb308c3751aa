"""Client CPU of one very long streamed chat answer: the core, LlamaIndex's Vast, ChatVast.

    .venv/bin/python -m benchmarks.long_stream [--tokens 80000]

The emulator runs in its own process and answers ``--tokens`` two-character tokens; this
process's CPU time (``time.process_time``) is the client's. A wrapper whose per-chunk work grows
with the answer so far shows up here as CPU far above the core's (issue 13: Vast.stream_chat
rebuilt the whole text per chunk, 30 s for 80k tokens before, about 3.7 s after).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

_SERVE = """
import json, sys, time
from vast_llm.emulator import Emulator
n = int(sys.argv[1])
emu = Emulator(api="both", responses=["a" + " a" * (n - 1)])
with emu.serve():
    print(json.dumps({"base_url": emu.base_url, "api_key": emu.api_key,
                      "endpoint": emu.endpoint}), flush=True)
    time.sleep(3600)
"""


def _measure(name: str, run: Callable[[], Any]) -> None:
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    print(
        f"{name:<22} wall {time.perf_counter() - wall:6.2f} s   "
        f"client CPU {time.process_time() - cpu:6.2f} s",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=80_000)
    tokens = parser.parse_args().tokens
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVE, str(tokens)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        target = json.loads(server.stdout.readline())
        from llama_index.core.llms import ChatMessage

        from langchain_vast import ChatVast
        from llamaindex_vast import Vast
        from vast_llm import VastClient

        common = {"api_key": target["api_key"], "base_url": target["base_url"], "timeout": 600}
        limit = tokens + 10
        core = VastClient(target["endpoint"], api="openai", **common)
        vast = Vast(target["endpoint"], api="openai", max_new_tokens=limit, **common)
        chat = ChatVast(endpoint=target["endpoint"], max_tokens=limit, **common)
        hello = [ChatMessage(role="user", content="hi")]

        def run_core() -> None:
            with core.stream_chat([{"role": "user", "content": "hi"}], max_tokens=limit) as s:
                for _ in s:
                    pass

        def run_vast() -> None:
            # Not kept: each response holds the whole answer so far, as LlamaIndex's do.
            for _ in vast.stream_chat(hello):
                pass

        async def run_vast_async() -> None:
            async for _ in await vast.astream_chat(hello):
                pass

        _measure("core stream_chat", run_core)
        _measure("Vast.stream_chat", run_vast)
        _measure("Vast.astream_chat", lambda: asyncio.run(run_vast_async()))
        _measure("ChatVast.stream", lambda: [None for _ in chat.stream("hi")])
    finally:
        server.kill()


if __name__ == "__main__":
    main()
