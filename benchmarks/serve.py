"""The benchmark's emulator, in its own process (so its work is not the client's CPU time).

Prints one JSON line (base URL, key, endpoints) and serves until stdin closes. The fake model
has no token delay and says a scripted 2,000-word answer, cut by each request's max tokens.
"""

from __future__ import annotations

import gc
import json
import sys

from vast_llm.emulator import Emulator

ANSWER = " ".join(["token"] * 2000)


def main() -> None:
    # A short request log: a million records would slow the emulator's own garbage collector
    # (pauses that land in whichever client is being measured).
    emu = Emulator(api="tgi", workers=2, endpoint="bench-tgi", responses=[ANSWER], log_limit=1000)
    emu.add_endpoint("bench-openai", api="openai", workers=2, responses=[ANSWER])
    # HTTPS workers (issue 12): an emulator of their own, as Emulator(tls=True) is per emulator.
    tls = Emulator(
        api="tgi", workers=2, endpoint="bench-tgi-tls", responses=[ANSWER], log_limit=1000, tls=True
    )
    with emu.serve(), tls.serve():
        # What is alive now lives to the end: out of the collector's sight, so its pauses do not
        # land in whichever client is being measured.
        gc.freeze()
        print(
            json.dumps(
                {
                    "base_url": emu.base_url,
                    "api_key": emu.api_key,
                    "tgi": "bench-tgi",
                    "openai": "bench-openai",
                    "tls": {
                        "base_url": tls.base_url,
                        "api_key": tls.api_key,
                        "tgi": "bench-tgi-tls",
                        "worker_ca": tls.worker_ca,
                    },
                }
            ),
            flush=True,
        )
        sys.stdin.read()  # until the benchmark closes our stdin


if __name__ == "__main__":
    main()
