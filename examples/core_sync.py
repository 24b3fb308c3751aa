"""The routing core, synchronously: one answer, one stream, and the route facts.

python examples/core_sync.py
VAST_ENDPOINT=my-tgi-endpoint VAST_API_KEY=... python examples/core_sync.py
"""

from __future__ import annotations

from _common import vast_endpoint

from vast_llm import VastClient


def main() -> str:
    with vast_endpoint(api="tgi"), VastClient(api="tgi") as client:  # settings from VAST_*
        answer = client.generate("The capital of France is", max_tokens=16)
        print(answer.text)
        route = answer.route
        print(
            f"[worker {route.worker_url}, reqnum {route.reqnum}, signature {route.signature}, "
            f"{route.route_latency * 1000:.0f} ms to a verified worker]"
        )
        with client.stream("Once upon a time", max_tokens=24) as stream:
            for chunk in stream:
                print(chunk.text, end="", flush=True)
        print(
            f"\n[{stream.usage.completion_tokens if stream.usage else '?'} tokens, "
            f"finish: {stream.finish_reason}]"
        )
        return answer.text


if __name__ == "__main__":
    main()
