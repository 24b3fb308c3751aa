"""Run by the official vastai SDK's own virtualenv (.venv-vastai): drive the SDK against the
emulator given on the command line and print what came back as JSON. Not a test module."""

import asyncio
import json
import ssl
import sys

from vastai import CoroutineServerless

BASE_URL, API_KEY, ENDPOINT, API = sys.argv[1:5]
CA_FILE = sys.argv[5] if len(sys.argv) > 5 else None  # the emulator's worker CA, for TLS workers


async def main() -> None:
    client = CoroutineServerless(api_key=API_KEY, autoscaler_url=BASE_URL, webserver_url=BASE_URL)

    context = ssl.create_default_context()
    if CA_FILE:
        # What the SDK does with the root it downloads: trust it beside the system roots and
        # clear VERIFY_X509_STRICT; here the root is the emulator's CA instead of Vast's.
        context.load_verify_locations(cafile=CA_FILE)
        context.verify_flags &= ~ssl.VERIFY_X509_STRICT

    async def loopback_context() -> ssl.SSLContext:
        # The SDK downloads Vast's root CA once and caches the context; on loopback the
        # download is skipped (the caching is kept) and the emulator's CA stands in for it.
        return context

    client.get_ssl_context = loopback_context
    out = {}
    async with client:
        endpoint = await client.get_endpoint(ENDPOINT)
        if API == "tgi-session":
            out = await session_calls(client, endpoint)
        elif API == "tgi":
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


async def session_calls(client, endpoint) -> dict:
    """The SDK's session API, step by step, with what each step gave (clock readings and
    session ids left out: they differ from run to run)."""
    out = {}
    payload = {"inputs": "Hello", "parameters": {"max_new_tokens": 4}}
    session = await endpoint.session(cost=5, lifetime=30)
    out["created"] = {
        "lifetime": session.lifetime,
        "id length": len(session.session_id),
        "expiration is a number": isinstance(session.expiration, float),
    }
    calls = [await session.request("/generate", payload, cost=5) for _ in range(2)]
    out["calls"] = [{"status": c["status"], "response": c["response"]} for c in calls]
    out["is_open"] = await session.is_open()
    got = await endpoint.get_session(session.session_id, session.auth_data)
    out["get"] = {
        "lifetime": got.lifetime,
        "same url": got.url == session.url,
        "same auth": got.auth_data == session.auth_data,
    }
    await session.close()
    out["open after close"] = session.open
    try:
        session.request("/generate", payload)
        out["request after close"] = "no error"
    except ValueError as exc:
        out["request after close"] = f"ValueError: {exc}"
    # Ended on the worker behind the SDK object's back: the next call meets the 410.
    other = await endpoint.session(cost=5, lifetime=30)
    await client.end_endpoint_session(other)
    try:
        await other.request("/generate", payload)
        out["request after a worker-side end"] = "no error"
    except ValueError as exc:
        out["request after a worker-side end"] = f"ValueError: {exc}"
    out["open after the 410"] = other.open
    try:
        await endpoint.get_session(other.session_id, other.auth_data)
        out["get after the end"] = "no error"
    except Exception as exc:
        out["get after the end"] = str(exc).replace(other.session_id, "<id>")
    return out


asyncio.run(main())
