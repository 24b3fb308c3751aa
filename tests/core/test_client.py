"""The clients against the emulator over real loopback sockets; each body runs sync and async."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Driver, settings_for
from vast_llm import (
    AuthenticationError,
    Backoff,
    Chunk,
    EndpointStopped,
    NoWorkerReady,
    RouteError,
    SignatureError,
    VastClient,
    VastConnectionError,
    VastError,
    VastTimeout,
    WorkerError,
    WorkerStreamError,
)
from vast_llm.emulator import Emulator, Fault

pytestmark = pytest.mark.usefixtures("flavor")
# Every decision here is also proven without sockets (tests/core/test_flow.py). Over sockets,
# what the two clients do differently (their pools, locks, gates and stream readers) runs on both;
# each other behaviour on one client, the two taking turns.
SYNC = pytest.mark.parametrize("flavor", ["sync"])
ASYNC = pytest.mark.parametrize("flavor", ["async"])


# -- the happy path -------------------------------------------------------------------------


async def test_generate(tgi: Emulator, make_driver: Any) -> None:
    d: Driver = make_driver(tgi)
    answer = await d.generate("Hello there", max_tokens=8)
    assert answer.text and answer.finish_reason == "length"
    assert answer.usage.completion_tokens == 8
    route = answer.route
    assert route.worker_url in tgi.worker_urls() and route.verified and route.signature == "g3"
    assert route.attempts == 1 and route.route_calls == 1 and route.reqnum >= 1
    assert route.request_idx is not None and route.route_latency > 0
    assert answer.time_to_first_token is not None and answer.latency >= answer.time_to_first_token


async def test_stream(tgi: Emulator, make_driver: Any) -> None:
    d: Driver = make_driver(tgi)
    whole = await d.generate("Stream me", max_tokens=6)
    chunks, stream = await d.stream("Stream me", max_tokens=6)
    assert "".join(c.text for c in chunks) == whole.text == stream.text
    assert len([c for c in chunks if c.text]) == 6  # one chunk per token
    assert stream.finish_reason == "length" and stream.usage.completion_tokens == 6
    assert stream.usage.prompt_tokens is not None  # TGI reports input_length when streaming
    assert stream.route.verified and stream.time_to_first_token is not None


@SYNC
async def test_natural_end_and_special_eos_token(tgi: Emulator, make_driver: Any) -> None:
    d: Driver = make_driver(tgi)
    chunks, stream = await d.stream("a", max_tokens=200)
    assert stream.finish_reason == "eos_token"
    assert "</s>" not in stream.text  # the special end token is not text


async def test_openai_chat_and_completions(openai_emu: Emulator, make_driver: Any) -> None:
    d: Driver = make_driver(openai_emu, api="openai")
    messages = [{"role": "user", "content": "Hi"}]
    answer = await d.chat(messages, max_tokens=5)
    assert answer.text and answer.model == "vast-emulator-fake" and answer.finish_reason == "length"
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + 5
    chunks, stream = await d.stream_chat(messages, max_tokens=5)
    assert stream.text == answer.text
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0].usage.completion_tokens == 5
    completion = await d.generate("Say", max_tokens=4)
    assert completion.text and completion.usage.completion_tokens == 4
    chunks, stream = await d.stream("Say", max_tokens=4)
    assert stream.text == completion.text and stream.usage.completion_tokens == 4
    body = openai_emu.worker_requests[-1].json["payload"]
    assert body["stream_options"] == {"include_usage": True} and body["max_tokens"] == 4


async def test_tool_calls_whole_and_streamed(openai_emu: Emulator, make_driver: Any) -> None:
    d: Driver = make_driver(openai_emu, api="openai")
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    answer = await d.chat(messages, tools=tools)
    assert answer.finish_reason == "tool_calls"
    assert [c.name for c in answer.tool_calls] == ["get_weather"]
    assert isinstance(answer.tool_calls[0].args["city"], str)
    chunks, stream = await d.stream_chat(messages, tools=tools)
    streamed = stream._builder._acc.tool_calls
    assert [(c.name, c.args) for c in streamed] == [(c.name, c.args) for c in answer.tool_calls]
    assert sum(len(c.tool_calls) for c in chunks) >= 2  # the call arrived in pieces


@ASYNC
async def test_chat_on_tgi_uses_the_chat_template(tgi: Emulator, make_driver: Any) -> None:
    d: Driver = make_driver(tgi)
    await d.chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    prompt = tgi.worker_requests[-1].json["payload"]["inputs"]
    assert prompt == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


# -- route behaviour ------------------------------------------------------------------------


@SYNC
async def test_key_goes_to_the_router_in_body_and_header(tgi: Emulator, make_driver: Any) -> None:
    await make_driver(tgi).generate("x")
    route = tgi.route_requests[0]
    assert route.json["api_key"] == tgi.api_key
    assert route.headers["authorization"] == f"Bearer {tgi.api_key}"
    assert route.json["cost"] == 256.0 and route.json["replay_timeout"] == 60.0


@ASYNC
async def test_cost_follows_max_tokens_or_the_setting(tgi: Emulator, make_driver: Any) -> None:
    await make_driver(tgi).generate("x", max_tokens=33)
    assert tgi.route_requests[-1].json["cost"] == 33.0
    await make_driver(tgi, cost=lambda payload: 7).generate("x")
    assert tgi.route_requests[-1].json["cost"] == 7.0


@SYNC
async def test_waiting_polls_keep_the_request_idx(tgi: Emulator, make_driver: Any) -> None:
    tgi.inject("not_ready", times=3)
    answer = await make_driver(tgi).generate("x")
    routes = tgi.route_requests
    assert answer.route.route_calls == 4 and len(routes) == 4
    first_idx = json.loads(routes[0].response)["request_idx"]
    assert routes[0].json["request_idx"] == 0
    assert [r.json["request_idx"] for r in routes[1:]] == [first_idx] * 3
    assert answer.route.request_idx == first_idx


@ASYNC
async def test_deadline_ends_in_no_worker_ready_with_the_status(make_driver: Any) -> None:
    with Emulator(cold_start=30).serve() as emu:
        d: Driver = make_driver(emu, deadline=0.3)
        started = time.monotonic()
        with pytest.raises(NoWorkerReady) as info:
            await d.generate("x")
        assert time.monotonic() - started < 2.0
        # states compare case-insensitively (protocol.md §7); the emulator uses Vast's names
        assert (
            "creating" in str(info.value).lower() and "creating" in str(info.value.status).lower()
        )
        assert len(emu.route_requests) >= 2 and not emu.worker_requests


@SYNC
async def test_cold_start_is_waited_out(make_driver: Any) -> None:
    with Emulator(cold_start=0.4).serve() as emu:
        answer = await make_driver(emu).generate("x")
        assert answer.route.route_calls > 1
        statuses = {json.loads(r.response).get("status") for r in emu.route_requests[:-1]}
        assert any("creating" in s.lower() or "loading" in s.lower() for s in statuses)


@ASYNC
async def test_stopped_endpoint_fails_fast(tgi: Emulator, make_driver: Any) -> None:
    tgi.set_stopped(True)
    with pytest.raises(EndpointStopped, match="stopped"):
        await make_driver(tgi).generate("x")
    assert len(tgi.route_requests) == 1


@ASYNC
@pytest.mark.parametrize("fault", ["route_429", "route_500", "route_503", "route_garbage"])
async def test_transient_route_failures_are_retried(
    tgi: Emulator, make_driver: Any, fault: str
) -> None:
    tgi.inject(fault, times=2)
    answer = await make_driver(tgi).generate("x")
    assert answer.route.route_calls == 3 and answer.route.attempts == 1


@SYNC
async def test_route_timeout_is_retried(tgi: Emulator, make_driver: Any) -> None:
    tgi.inject(Fault("route_timeout", delay=1.0))
    answer = await make_driver(tgi, route_timeout=0.2).generate("x")
    assert answer.route.route_calls == 2


@ASYNC
async def test_route_failures_give_up_after_max_retries(tgi: Emulator, make_driver: Any) -> None:
    tgi.inject("route_500", times=None)
    with pytest.raises(RouteError, match=r"HTTP 500.*after 3 attempts"):
        await make_driver(tgi, max_retries=2).generate("x")
    assert len(tgi.route_requests) == 3 and not tgi.worker_requests


async def test_router_unreachable(make_driver: Any) -> None:
    from vast_llm.emulator._server import refusing_socket

    emu = Emulator()
    with refusing_socket() as dead:  # held: no parallel test's server can take the port
        emu.base_url = f"http://127.0.0.1:{dead.getsockname()[1]}"
        d: Driver = make_driver(emu, max_retries=1)
        with pytest.raises(RouteError, match="cannot reach the autoscaler") as info:
            await d.generate("x")
    assert isinstance(info.value.__cause__, VastConnectionError)


@SYNC
@pytest.mark.parametrize(
    ("settings", "error", "match"),
    [
        ({"api_key": "wrong-key"}, AuthenticationError, "API key was rejected"),
        ({"endpoint": "no-such-endpoint"}, RouteError, "no endpoint group named"),
    ],
)
async def test_refusals_fail_at_once(
    tgi: Emulator, make_driver: Any, settings: dict[str, Any], error: type, match: str
) -> None:
    with pytest.raises(error, match=match) as info:
        await make_driver(tgi, **settings).generate("x")
    assert type(info.value) is error and len(tgi.route_requests) == 1
    assert "wrong-key" not in str(info.value)


@ASYNC
async def test_200_with_error_msg_is_not_waiting(tgi: Emulator, make_driver: Any) -> None:
    tgi.inject("route_error_msg")
    with pytest.raises(RouteError, match="endpoint group is unavailable"):
        await make_driver(tgi).generate("x")
    assert len(tgi.route_requests) == 1


@SYNC
async def test_404_from_a_wrong_base_url(tgi: Emulator, make_driver: Any) -> None:
    with pytest.raises(RouteError, match="HTTP 404") as info:
        await make_driver(tgi, base_url=tgi.worker_urls()[0]).generate("x")
    assert info.value.status_code == 404


async def test_route_returns_a_verified_assignment(tgi: Emulator, make_driver: Any) -> None:
    assignment = await make_driver(tgi).route(cost=12)
    assert assignment.url in tgi.worker_urls() and assignment.route.signature == "g3"
    assert assignment.body["cost"] == 12.0 and "signature" in assignment.body
    assert not tgi.worker_requests


# -- signatures -----------------------------------------------------------------------------


async def test_public_key_is_fetched_once_under_concurrency(tgi: Emulator, flavor: str) -> None:
    kwargs = settings_for(tgi)
    if flavor == "sync":
        with VastClient(**kwargs) as client:

            def many() -> None:
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(8) as pool:
                    list(pool.map(lambda i: client.generate(f"p{i}"), range(16)))

            await asyncio.to_thread(many)
    else:
        from vast_llm import AsyncVastClient

        async with AsyncVastClient(**kwargs) as aclient:
            await asyncio.gather(*(aclient.generate(f"p{i}") for i in range(16)))
    assert [r.target for r in tgi.requests].count("pubkey") == 1
    assert len(tgi.worker_requests) == 16


@ASYNC
async def test_key_rotation_refetches_once(tgi_session: Emulator, make_driver: Any) -> None:
    with Emulator().serve() as emu:
        d: Driver = make_driver(emu)
        await d.generate("x")
        emu.rotate_key()
        answer = await d.generate("y")
        assert answer.route.verified
        assert [r.target for r in emu.requests].count("pubkey") == 2


@SYNC
async def test_pinned_key_needs_no_fetch(tgi: Emulator, make_driver: Any) -> None:
    answer = await make_driver(tgi, public_key=tgi.public_key_pem).generate("x")
    assert answer.route.verified and "pubkey" not in [r.target for r in tgi.requests]


@ASYNC
async def test_pinned_wrong_key_never_reaches_a_worker(tgi: Emulator, make_driver: Any) -> None:
    from vast_llm._signing import public_key_pem

    foreign = public_key_pem(tgi.state.foreign_key.public_key())
    with pytest.raises(SignatureError, match="signature_policy"):
        await make_driver(tgi, public_key=foreign).generate("x")
    assert not tgi.worker_requests and "pubkey" not in [r.target for r in tgi.requests]


@ASYNC
@pytest.mark.parametrize("recipe", ["g3", "g2", "g1"])
@pytest.mark.parametrize("payload_format", ["wrapped", "flat"])
async def test_every_recipe_and_format(make_driver: Any, recipe: str, payload_format: str) -> None:
    with Emulator(recipe=recipe, payload_format=payload_format).serve() as emu:
        d: Driver = make_driver(emu, payload_format=payload_format)
        answer = await d.generate("x", max_tokens=3)
        assert answer.route.signature == recipe
        chunks, stream = await d.stream("x", max_tokens=3)
        assert stream.text == answer.text


@SYNC
@pytest.mark.parametrize(
    ("recipe", "fault"),
    [
        ("g3", "bad_signature"),
        ("g3", "missing_signature"),
        ("g3", "foreign_key"),
        ("g3", "tampered_url"),
        ("g2", "tampered_reqnum"),
        ("g2", "tampered_cost"),
        ("g1", "tampered_cost"),
        ("g1", "tampered_url"),
    ],
)
async def test_strict_never_contacts_an_unverified_worker(
    make_driver: Any, recipe: str, fault: str
) -> None:
    with Emulator(recipe=recipe, faults=[fault]).serve() as emu:
        with pytest.raises(SignatureError, match="signature_policy") as info:
            await make_driver(emu).generate("x")
        assert not emu.worker_requests
        assert [r.target for r in emu.requests].count("pubkey") == 2  # re-fetched once
        assert emu.api_key not in str(info.value)


@ASYNC
async def test_g3_does_not_sign_reqnum_or_cost(tgi: Emulator, make_driver: Any) -> None:
    tgi.inject("tampered_reqnum")
    answer = await make_driver(tgi).generate("x")
    assert answer.route.signature == "g3"  # the worker accepts it too: nothing was at stake


@SYNC
@pytest.mark.parametrize("fault", ["pubkey_down:*", "pubkey_garbage:*"])
async def test_unusable_public_key_is_a_signature_error(make_driver: Any, fault: str) -> None:
    with Emulator(faults=[fault]).serve() as emu:
        with pytest.raises(SignatureError, match="public key"):
            await make_driver(emu).generate("x")
        assert not emu.worker_requests


@ASYNC
async def test_warn_policy_goes_on_and_logs_once(
    make_driver: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # The situation warn is for: production signs in a way this client does not know (here the
    # workers use g1 while the client only knows g3); the workers still accept the requests.
    with Emulator(recipe="g1").serve() as emu:
        d: Driver = make_driver(emu, signature_policy="warn", recipes=("g3",))
        with caplog.at_level(logging.WARNING, logger="vast_llm"):
            first = await d.generate("x")
            second = await d.generate("y")
        assert first.route.signature == second.route.signature == "unverified"
        warnings = [r for r in caplog.records if "signature_policy='warn'" in r.getMessage()]
        assert len(warnings) == 1 and emu.api_key not in caplog.text
        assert len(emu.worker_requests) == 2
    with Emulator(recipe="g1").serve() as emu, pytest.raises(SignatureError, match="'warn'"):
        await make_driver(emu, recipes=("g3",)).generate("x")


@SYNC
async def test_off_policy_skips_the_key(tgi: Emulator, make_driver: Any) -> None:
    with pytest.warns(Warning, match="off"):
        d: Driver = make_driver(tgi, signature_policy="off")
    answer = await d.generate("x")
    assert answer.route.signature == "unchecked"
    assert "pubkey" not in [r.target for r in tgi.requests]


# -- worker behaviour -----------------------------------------------------------------------


@ASYNC
async def test_assignment_is_forwarded_verbatim(tgi: Emulator, make_driver: Any) -> None:
    await make_driver(tgi).generate("x", max_tokens=3)
    route, worker = tgi.route_requests[-1], tgi.worker_requests[-1]
    sent = worker.json
    assert sent["auth_data"] == json.loads(route.response)
    assert sent["session_id"] is None and sent["payload"]["inputs"] == "x"
    assert '"cost": 3.0' in worker.text  # the float stays a float on the way through


@SYNC
async def test_flat_format_merges_route_answer_and_payload(make_driver: Any) -> None:
    with Emulator(payload_format="flat", recipe="g1").serve() as emu:
        await make_driver(emu, payload_format="flat").generate("x", max_tokens=3)
        sent = emu.worker_requests[-1].json
        answer = json.loads(emu.route_requests[-1].response)
        assert {k: sent[k] for k in answer} == answer
        assert sent["inputs"] == "x" and sent["parameters"]["max_new_tokens"] == 3


async def test_key_never_reaches_a_worker(
    tgi: Emulator, openai_emu: Emulator, make_driver: Any
) -> None:
    await make_driver(tgi).generate("x")
    await make_driver(tgi).stream("x")
    await make_driver(openai_emu, api="openai").chat([{"role": "user", "content": "x"}])
    for emu in (tgi, openai_emu):
        assert emu.worker_requests
        for request in emu.worker_requests:
            assert emu.api_key not in request.text
            assert emu.api_key not in json.dumps(request.headers)
            assert "authorization" not in request.headers


@ASYNC
@pytest.mark.parametrize("fault", ["worker_500", "worker_429", "worker_refuse"])
async def test_retryable_worker_failures_reroute(
    tgi: Emulator, make_driver: Any, fault: str
) -> None:
    tgi.inject(fault)
    answer = await make_driver(tgi).generate("x")
    assert answer.route.attempts == 2 and answer.route.route_calls == 2
    first, second = tgi.route_requests
    assert second.json["request_idx"] == json.loads(first.response)["request_idx"]
    assert first.response != second.response  # a fresh assignment for every attempt


@SYNC
async def test_worker_failures_give_up_after_max_retries(tgi: Emulator, make_driver: Any) -> None:
    tgi.inject("worker_500", times=None)
    with pytest.raises(WorkerError, match=r"HTTP 500.*after 3 attempts") as info:
        await make_driver(tgi, max_retries=2).generate("x")
    assert info.value.status_code == 500 and len(tgi.worker_requests) == 3


@ASYNC
async def test_dead_worker_gives_a_connection_error(tgi: Emulator, make_driver: Any) -> None:
    tgi.inject("worker_refuse", times=None)
    with pytest.raises(VastConnectionError, match="cannot reach worker"):
        await make_driver(tgi, max_retries=1).generate("x")


@SYNC
@pytest.mark.parametrize(("fault", "status"), [("worker_422", 422), ("worker_401", 401)])
async def test_client_errors_fail_at_once(
    tgi: Emulator, make_driver: Any, fault: str, status: int
) -> None:
    tgi.inject(fault)
    with pytest.raises(WorkerError) as info:
        await make_driver(tgi).generate("x")
    assert info.value.status_code == status and len(tgi.worker_requests) == 1
    if status == 422:
        assert "emulated validation failure" in info.value.body


@ASYNC
async def test_model_validation_error_is_quoted(tgi: Emulator, make_driver: Any) -> None:
    with pytest.raises(WorkerError, match="top_k") as info:
        await make_driver(tgi).generate("x", top_k=0)
    assert info.value.status_code == 422 and len(tgi.worker_requests) == 1


@SYNC
async def test_temperature_zero_is_sent_as_greedy(tgi: Emulator, make_driver: Any) -> None:
    await make_driver(tgi).generate("x", temperature=0, top_p=1.0)
    parameters = tgi.worker_requests[-1].json["payload"]["parameters"]
    assert parameters["do_sample"] is False
    assert "temperature" not in parameters and "top_p" not in parameters


@ASYNC
async def test_worker_overload_429_is_retried(make_driver: Any) -> None:
    with Emulator(max_concurrency=1, token_delay=0.01, workers=1).serve() as emu:
        # Waits of ~50 ms: enough for the busy worker to finish a 3-token answer.
        patient = Backoff(base=0.05, cap=0.05)
        d: Driver = make_driver(emu, max_retries=20, backoff=patient)
        results = await asyncio.gather(*(d.generate(f"p{i}", max_tokens=3) for i in range(3)))
        assert len(results) == 3
        assert any(r.route.attempts > 1 for r in results)


# -- streams that go wrong ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "match"),
    [
        ("stream_cut", "was cut"),
        ("stream_truncated", "incomplete"),
        ("malformed_sse", "not JSON"),
        ("stream_error", "emulated generation failure"),
    ],
)
# The fault matrix streams these on the sync client from an OpenAI worker and on the async one
# from a TGI worker; here the other way round, so each client reads each API's broken streams.
@pytest.mark.parametrize(("flavor", "emu_name"), [("sync", "tgi"), ("async", "openai_emu")])
async def test_broken_streams_raise_after_the_tokens_and_never_retry(
    request: pytest.FixtureRequest, make_driver: Any, fault: str, match: str, emu_name: str
) -> None:
    emu: Emulator = request.getfixturevalue(emu_name)
    emu.inject(Fault(fault, after=2))
    d: Driver = make_driver(emu, api="tgi" if emu_name == "tgi" else "openai")
    got: list[Chunk] = []
    with pytest.raises(WorkerStreamError, match=match):
        await d.stream_into("x", got, max_tokens=10)
    assert len([c for c in got if c.text]) == 2
    assert len(emu.worker_requests) == 1  # never sent twice once tokens were handed out


@SYNC
@pytest.mark.parametrize("fault", ["stream_cut", "stream_truncated"])
async def test_broken_whole_answers(tgi: Emulator, make_driver: Any, fault: str) -> None:
    tgi.inject(fault)
    with pytest.raises(WorkerError):
        await make_driver(tgi).generate("x")
    assert len(tgi.worker_requests) == 1  # the worker did the work: it is not asked twice


@ASYNC
async def test_failed_whole_answer_before_any_output_is_rerouted(
    tgi: Emulator, make_driver: Any
) -> None:
    tgi.inject("stream_error")  # a non-streamed call gets a 500 with the error
    answer = await make_driver(tgi).generate("x")
    assert answer.route.attempts == 2


async def test_a_stream_silent_before_its_first_token_is_a_timeout(
    tgi: Emulator, make_driver: Any
) -> None:
    """Nothing was handed out: the same VastTimeout as a whole answer that never came (a
    framework may retry it), not a cut answer."""
    tgi.inject(Fault("slow_first_token", delay=2.0))
    started = time.monotonic()
    with pytest.raises(VastTimeout, match="did not answer in time") as info:
        await make_driver(tgi, timeout=0.3).stream("x")
    assert not isinstance(info.value, WorkerStreamError)
    assert time.monotonic() - started < 1.5
    assert len(tgi.worker_requests) == 1  # it may still be working on it: not sent twice


class _Stalls(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A worker's stream that hands out its first piece, then goes silent (the read times
    out): the stall a slow or stuck worker causes mid-answer."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __iter__(self) -> Iterator[bytes]:
        for part in self.inner:
            yield part
            raise httpx.ReadTimeout("stalled")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self.inner:
            yield part
            raise httpx.ReadTimeout("stalled")

    def close(self) -> None:
        self.inner.close()

    async def aclose(self) -> None:
        await self.inner.aclose()


def _stalling(response: httpx.Response, request: httpx.Request) -> httpx.Response:
    if not request.url.path.endswith("_stream"):
        return response
    return httpx.Response(
        response.status_code, headers=response.headers, stream=_Stalls(response.stream)
    )


class _StallingTransport(httpx.HTTPTransport):
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return _stalling(super().handle_request(request), request)


class _AsyncStallingTransport(httpx.AsyncHTTPTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return _stalling(await super().handle_async_request(request), request)


async def test_idle_timeout_mid_answer_cuts_the_answer(tgi: Emulator, flavor: str) -> None:
    """Once output was handed out, silence is a cut answer (WorkerStreamError, not retried)."""
    http: Any = (
        httpx.Client(transport=_StallingTransport())
        if flavor == "sync"
        else httpx.AsyncClient(transport=_AsyncStallingTransport())
    )
    driver = Driver(flavor, tgi, http_client=http)
    chunks: list[Chunk] = []
    try:
        with pytest.raises(WorkerStreamError, match="idle timeout"):
            await driver.stream_into("x", chunks, max_tokens=8)
    finally:
        await driver.aclose()
        await asyncio.to_thread(http.close) if flavor == "sync" else await http.aclose()
    assert "".join(c.text for c in chunks)  # some output came before the silence


async def test_a_worker_silent_before_answering_times_out_and_is_not_asked_again(
    tgi: Emulator, make_driver: Any
) -> None:
    tgi.inject(Fault("slow_first_token", delay=2.0))  # a whole answer: nothing until it is done
    started = time.monotonic()
    with pytest.raises(VastTimeout, match="did not answer in time"):
        await make_driver(tgi, timeout=0.3).generate("x")
    assert time.monotonic() - started < 1.5
    assert len(tgi.worker_requests) == 1  # it may still be working on it: not sent twice


@SYNC
async def test_slow_first_token_within_the_timeout_is_fine(tgi: Emulator, make_driver: Any) -> None:
    tgi.inject(Fault("slow_first_token", delay=0.2))
    chunks, stream = await make_driver(tgi, timeout=2.0).stream("x", max_tokens=3)
    assert stream.time_to_first_token >= 0.2 and len(chunks) == 3


@ASYNC
async def test_stop_sequences_cut_client_side_across_chunks(make_driver: Any) -> None:
    # G1-era TGI workers ignore stop sequences: the client must cut them itself.
    with Emulator(recipe="g1").serve() as emu:
        d: Driver = make_driver(emu)
        full = (await d.generate("stop test", max_tokens=12)).text
        tokens = [c.text for c in (await d.stream("stop test", max_tokens=12))[0]]
        boundary = len(tokens[0]) + len(tokens[1])
        stop = full[boundary - 2 : boundary + 2]  # straddles tokens 2 and 3
        expected = full[: full.index(stop)]
        answer = await d.generate("stop test", max_tokens=12, stop=[stop])
        assert answer.text == expected and answer.finish_reason == "stop"
        chunks, stream = await d.stream("stop test", max_tokens=12, stop=[stop])
        assert "".join(c.text for c in chunks) == expected and stream.finish_reason == "stop"
        assert emu.worker_requests[-1].json["payload"]["parameters"]["stop"] == [stop]


@SYNC
async def test_errors_and_logs_never_show_the_key(
    tgi: Emulator, make_driver: Any, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[VastError] = []
    with caplog.at_level(logging.DEBUG):
        for fault in ("worker_422", "route_error_msg", "stream_cut", "bad_signature"):
            tgi.inject(fault)
            try:
                await make_driver(tgi, max_retries=0).generate("x")
            except VastError as exc:
                errors.append(exc)
        try:
            await make_driver(tgi, api_key="another-secret-key").generate("x")
        except VastError as exc:
            errors.append(exc)
    assert len(errors) == 5
    for exc in errors:
        for text in (str(exc), repr(exc), repr(exc.__dict__)):
            assert tgi.api_key not in text and "another-secret-key" not in text
    assert tgi.api_key not in caplog.text and "another-secret-key" not in caplog.text


async def test_one_pooled_connection_is_reused(tgi: Emulator, make_driver: Any) -> None:
    d: Driver = make_driver(tgi)
    for i in range(5):
        await d.generate(f"p{i}")
    assert len({r.client for r in tgi.route_requests}) == 1  # keep-alive to the router
    assert len({r.client for r in tgi.worker_requests}) <= 2  # one per worker


async def test_requests_beyond_max_concurrency_wait_their_turn(make_driver: Any) -> None:
    with Emulator(token_delay=0.02, workers=1).serve() as emu:
        d: Driver = make_driver(emu, max_concurrency=2)
        results = await asyncio.gather(*(d.generate(f"p{i}", max_tokens=5) for i in range(6)))
        assert len(results) == 6 and emu.workers[0].peak_inflight == 2


async def test_per_call_headers_reach_the_worker_only_and_never_credentials(
    openai_emu: Emulator, make_driver: Any
) -> None:
    d: Driver = make_driver(openai_emu, api="openai")
    headers = {"X-Trace-Id": "t-1", "Authorization": "Bearer leak", "Cookie": "c=1"}
    messages = [{"role": "user", "content": "hi"}]
    if d.flavor == "sync":
        await asyncio.to_thread(d.sync.chat, messages, headers=headers, max_tokens=3)
    else:
        await d.aio.chat(messages, headers=headers, max_tokens=3)
    [worker] = openai_emu.worker_requests
    assert worker.headers["x-trace-id"] == "t-1"
    assert "authorization" not in worker.headers and "cookie" not in worker.headers
    routes = [r for r in openai_emu.requests if r.target == "route"]
    assert routes and all("x-trace-id" not in r.headers for r in routes)
