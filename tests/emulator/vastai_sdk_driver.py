"""Run by the official vastai SDK's own virtualenv (.venv-vastai): drive the SDK against the
emulator given on the command line and print what came back as JSON. Not a test module."""

import asyncio
import json
import ssl
import sys

from vastai import CoroutineServerless

BASE_URL, API_KEY, ENDPOINT, API = sys.argv[1:5]


async def main() -> None:
    client = CoroutineServerless(api_key=API_KEY, autoscaler_url=BASE_URL, webserver_url=BASE_URL)

    context = ssl.create_default_context()

    async def loopback_context() -> ssl.SSLContext:
        # The SDK downloads Vast's root CA once and caches the context; on plain-http loopback
        # there is nothing to verify, so the download is skipped (the caching is kept).
        return context

    client.get_ssl_context = loopback_context
    out = {}
    async with client:
        endpoint = await client.get_endpoint(ENDPOINT)
        if API == "tgi":
            payload = {"inputs": "Hello", "parameters": {"max_new_tokens": 5, "details": True}}
            whole = await endpoint.request("/generate", payload, cost=5)
            out["whole"] = whole["response"]
            out["status"] = whole["status"]
            streamed = await endpoint.request("/generate_stream", payload, cost=5, stream=True)
            out["stream"] = [event async for event in streamed["response"]]
        else:
            payload = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 5}
            whole = await endpoint.request("/v1/chat/completions", payload, cost=5)
            out["whole"] = whole["response"]
            out["status"] = whole["status"]
            streamed = await endpoint.request(
                "/v1/chat/completions", {**payload, "stream": True}, cost=5, stream=True
            )
            out["stream"] = [event async for event in streamed["response"]]
    print(json.dumps(out))


asyncio.run(main())
