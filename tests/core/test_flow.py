"""The flow's decisions, one test each, driven without sockets (``tests/core/flowkit.py``).

``request_flow``, ``route_flow`` and ``fetch_key_flow`` are generators that decide everything a
request does: route, wait, verify, call, retry, give up. Here a scripted driver answers their
actions on a fake clock with a seeded (or extreme) random source, the way httpx tests its auth
flows; the socket-level tests (test_client.py, tests/reliability) then only have to show that
each driver carries the actions out and maps its stack's failures onto the same vocabulary.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import json
import logging
import random
import ssl
from typing import Any

import httpx
import pytest

import vast_llm._flow
import vast_llm._retry
import vast_llm._route
from tests.core.flowkit import (
    API_KEY,
    CASES,
    ENDPOINT,
    KEY,
    KEY_PEM,
    ROUTER,
    WORKER_URL,
    Extreme,
    Fail,
    Net,
    Reply,
    answer,
    forever,
    ok,
    other_key,
    other_pem,
    ready,
    settings,
    status,
    waiting,
)
from vast_llm import (
    AuthenticationError,
    Backoff,
    ConfigError,
    EndpointStopped,
    NoWorkerReady,
    RouteError,
    SignatureError,
    VastConnectionError,
    VastTimeout,
    WorkerCertificateError,
    WorkerError,
)
from vast_llm._flow import ERROR_READ_LIMIT, ROUTE_READ_LIMIT, fetch_key_flow


def high() -> Extreme:
    return Extreme(high=True)  # every jittered wait at its ceiling


def low() -> Extreme:
    return Extreme(high=False)  # every jittered wait at its floor


# -- verify before contact --------------------------------------------------------------------


def test_the_assignment_is_verified_before_any_worker_is_contacted() -> None:
    net = Net(routes=[ready()], workers=[ok()])
    response, info = net.request()
    assert net.trace == ["route", "getkey", "pubkey", "worker"]
    assert info.signature == "g3" and info.verified and info.worker_url == WORKER_URL
    assert response.status_code == 200 and response.read == []  # handed over unread


@pytest.mark.parametrize("case", [c for c in CASES.values() if c["valid"]], ids=lambda c: c["name"])
def test_every_valid_vector_reaches_its_worker(case: dict[str, Any]) -> None:
    net = Net(
        settings(recipes=(case["recipe"],)), routes=[ready(answer(case["name"]))], workers=[ok()]
    )
    _, info = net.request()
    assert info.signature == case["recipe"]
    assert net.workers[0].json["auth_data"] == json.loads(case["route_answer"])  # verbatim


@pytest.mark.parametrize(
    "case", [c for c in CASES.values() if not c["valid"]], ids=lambda c: c["name"]
)
def test_strict_never_contacts_a_worker_whose_assignment_does_not_verify(
    case: dict[str, Any],
) -> None:
    net = Net(settings(recipes=(case["recipe"],)), routes=[ready(answer(case["name"]))])
    with pytest.raises(SignatureError, match="signature_policy") as info:
        net.request()
    assert "worker" not in net.trace  # never contacted
    assert len(net.routes) == 1  # a signature failure is not retried on a new route
    assert net.trace == ["route", "getkey", "pubkey", "getkey(stale)", "pubkey"]
    assert API_KEY not in str(info.value) and "'warn'" in str(info.value)


def test_a_missing_signature_says_so() -> None:
    body = answer()
    del body["signature"]
    net = Net(routes=[ready(body)])
    with pytest.raises(SignatureError, match="carries no signature"):
        net.request()
    assert not net.workers


def test_every_accepted_recipe_is_tried() -> None:
    # A g1 signature does not verify as g3 but does as g1 (the vectors say so).
    net = Net(routes=[ready(answer("g1-signature-checked-as-g3"))], workers=[ok()])
    assert net.request()[1].signature == "g1"


# -- the key ----------------------------------------------------------------------------------


def test_a_rotated_key_is_fetched_again_once() -> None:
    old = Reply(200, other_pem().encode())
    net = Net(
        routes=[ready(), ready()], workers=[ok(), ok()], pubkeys=[old, Reply(200, KEY_PEM.encode())]
    )
    assert net.request()[1].signature == "g3"
    assert net.key_asks[0] is None and net.key_asks[1] is not None  # the stale key is named
    assert net.request()[1].signature == "g3"
    assert len(net.pubkeys) == 2 and net.keys.fetches == 2  # the second request fetched none


def test_a_key_that_still_fails_after_the_refetch_is_a_signature_error() -> None:
    foreign = Reply(200, other_pem().encode())
    net = Net(routes=[ready()], pubkeys=forever(foreign))
    with pytest.raises(SignatureError):
        net.request()
    assert len(net.pubkeys) == 2 and not net.workers


def test_a_pinned_key_is_never_fetched() -> None:
    net = Net(settings(public_key=KEY), routes=[ready()], workers=[ok()], pubkeys=[])
    assert net.request()[1].signature == "g3"
    assert not net.pubkeys and net.key_asks == [None]


def test_a_pinned_wrong_key_is_not_replaced() -> None:
    net = Net(settings(public_key=other_key()), routes=[ready()], pubkeys=[])
    with pytest.raises(SignatureError, match="signature_policy"):
        net.request()
    assert not net.pubkeys and not net.workers
    assert net.key_asks == [None]  # no rotation: a pinned key is the user's word


def test_the_key_is_fetched_once_for_many_requests() -> None:
    net = Net(routes=forever(ready()), workers=forever(ok()))
    for _ in range(5):
        net.request()
    assert len(net.pubkeys) == 1


def test_the_key_fetch_retries_transport_errors_and_5xx_three_times() -> None:
    s = settings()
    net = Net(
        s,
        pubkeys=[Fail(httpx.ConnectError("refused")), status(503), Reply(200, KEY_PEM.encode())],
        rng=high(),
    )
    key = net.run(fetch_key_flow(s, net.ctx))
    assert key.public_numbers() == KEY.public_numbers()
    assert net.sleeps == [0.5, 1.0]  # retry_delay(0), retry_delay(1) at their ceilings
    assert net.pubkeys[0].request.url == ROUTER + "/pubkey/"
    assert net.pubkeys[0].request.timeout["read"] == s.route_timeout
    assert "Authorization" not in net.pubkeys[0].request.headers  # the key is not needed here


def test_the_key_fetch_gives_up_after_three_tries() -> None:
    s = settings()
    net = Net(s, pubkeys=forever(Fail(httpx.ConnectError("refused"))))
    with pytest.raises(VastConnectionError, match="cannot reach the autoscaler's public key"):
        net.run(fetch_key_flow(s, net.ctx))
    assert len(net.pubkeys) == 3 and len(net.sleeps) == 2
    net = Net(s, pubkeys=forever(status(503, "down")))
    with pytest.raises(SignatureError, match=r"HTTP 503 .*'down'.*public_key="):
        net.run(fetch_key_flow(s, net.ctx))
    assert len(net.pubkeys) == 3


@pytest.mark.parametrize(
    ("reply", "match"),
    [(status(404, "no"), "HTTP 404"), (Reply(200, b"<html>"), "did not serve a usable public key")],
)
def test_an_unusable_key_answer_is_not_retried(reply: Reply, match: str) -> None:
    s = settings()
    net = Net(s, pubkeys=forever(reply))
    with pytest.raises(SignatureError, match=match):
        net.run(fetch_key_flow(s, net.ctx))
    assert len(net.pubkeys) == 1 and not net.sleeps


def test_the_key_fetch_draws_its_jitter_from_the_context() -> None:
    def sleeps(seed: int) -> list[float]:
        s = settings()
        net = Net(s, pubkeys=forever(status(503)), seed=seed)
        with pytest.raises(SignatureError):
            net.run(fetch_key_flow(s, net.ctx))
        return net.sleeps

    twin = random.Random(11)
    assert sleeps(11) == [Backoff().retry_delay(k, twin) for k in range(2)] == sleeps(11)
    assert sleeps(11) != sleeps(12)


# -- signature policies -----------------------------------------------------------------------


def test_warn_goes_on_unverified_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    s = settings(signature_policy="warn", recipes=("g3",))
    net = Net(s, routes=forever(ready(answer("g1-valid"))), workers=forever(ok()))
    with caplog.at_level(logging.WARNING, logger="vast_llm"):
        first, second = net.request()[1], net.request()[1]
    assert first.signature == second.signature == "unverified" and not first.verified
    assert len(net.workers) == 2
    warnings = [r for r in caplog.records if "signature_policy='warn'" in r.getMessage()]
    assert len(warnings) == 1 and API_KEY not in caplog.text


def test_warn_goes_on_when_the_key_cannot_be_had() -> None:
    s = settings(signature_policy="warn")
    net = Net(s, routes=[ready()], workers=[ok()], pubkeys=forever(status(503)))
    assert net.request()[1].signature == "unverified"


def test_strict_fails_when_the_key_cannot_be_had() -> None:
    net = Net(routes=[ready()], pubkeys=forever(Fail(httpx.ConnectError("refused"))))
    with pytest.raises(VastConnectionError, match="public key"):
        net.request()
    assert not net.workers and len(net.routes) == 1


def test_off_asks_for_no_key() -> None:
    net = Net(
        settings(signature_policy="off"),
        routes=[ready(answer("g3-foreign-key"))],
        workers=[ok()],
        pubkeys=[],
    )
    assert net.request()[1].signature == "unchecked"
    assert net.trace == ["route", "worker"]


# -- routing ----------------------------------------------------------------------------------


def test_the_route_call_carries_the_key_cost_and_request_idx() -> None:
    net = Net(routes=[waiting(request_idx=77), ready()], workers=[ok()])
    net.request(cost=33.0)
    first, second = net.routes
    assert first.json == {
        "endpoint": ENDPOINT,
        "api_key": API_KEY,
        "cost": 33.0,
        "request_idx": 0,
        "replay_timeout": 60.0,
    }
    assert first.request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert first.request.url == ROUTER + "/route/" and not first.request.worker
    assert second.json["request_idx"] == 77  # the router's index is sent back on every poll


def test_route_answers_are_read_within_a_limit() -> None:
    big = Reply(200, b'{"status": "' + b"x" * (2 * ROUTE_READ_LIMIT) + b'"}')
    net = Net(settings(max_retries=0), routes=[big])
    with pytest.raises(RouteError, match="not a JSON object"):
        net.request()
    assert big.read == [ROUTE_READ_LIMIT]


def test_waiting_is_polled_on_the_official_schedule() -> None:
    net = Net(
        routes=[waiting(), waiting(), waiting(), waiting(), ready()], workers=[ok()], rng=high()
    )
    _, info = net.request()
    assert net.sleeps == [1.0, 3.0, 5.0, 5.0]  # poll_first, then min(2**k + 1, poll_cap)
    assert info.route_calls == 5 and info.attempts == 1
    floor = Net(routes=[waiting(), waiting(), waiting(), ready()], workers=[ok()], rng=low())
    floor.request()
    assert floor.sleeps == [1.0, 0.1, 0.1]


def test_a_cold_worker_is_waited_for_but_a_stopped_endpoint_fails_fast() -> None:
    net = Net(routes=[waiting("1 Stopped"), waiting("1 Loading"), ready()], workers=[ok()])
    assert net.request()[1].verified  # "Stopped" names a worker scaled to zero: it wakes
    for said in ("endpoint stopped", "Endpoint is stopped", "ENDPOINT_STOPPED"):
        net = Net(routes=[waiting(said)])
        with pytest.raises(EndpointStopped, match="started again") as info:
            net.request()
        assert info.value.status == said
        assert len(net.routes) == 1 and not net.sleeps


@pytest.mark.parametrize(
    "reply",
    [
        status(429),
        status(500),
        status(502),
        status(503),
        Reply(200, b"<html>busy</html>"),
        Fail(httpx.ConnectError("refused")),
        Fail(httpx.ReadTimeout("slow")),
        Fail(httpx.RemoteProtocolError("dropped")),
    ],
    ids=["429", "500", "502", "503", "garbage", "connect", "timeout", "dropped"],
)
def test_transient_route_failures_are_retried_with_backoff(reply: Reply | Fail) -> None:
    net = Net(routes=[reply, reply, ready()], workers=[ok()], rng=high())
    _, info = net.request()
    assert info.route_calls == 3 and info.attempts == 1
    assert net.sleeps == [0.5, 1.0]  # retry_delay(0), retry_delay(1)


def test_route_failures_give_up_after_max_retries() -> None:
    net = Net(settings(max_retries=2), routes=forever(status(500, "boom")))
    with pytest.raises(RouteError, match=r"HTTP 500 .*boom.*after 3 attempts"):
        net.request()
    assert len(net.routes) == 3 and not net.workers


def test_an_unreachable_router_is_a_route_error_caused_by_a_connection_error() -> None:
    net = Net(settings(max_retries=1), routes=forever(Fail(httpx.ConnectError("refused"))))
    with pytest.raises(RouteError, match="cannot reach the autoscaler") as info:
        net.request()
    assert isinstance(info.value.__cause__, VastConnectionError)
    net = Net(settings(max_retries=0), routes=forever(Fail(httpx.ReadTimeout("slow"))))
    with pytest.raises(RouteError, match="did not answer in time") as info:
        net.request()
    assert isinstance(info.value.__cause__, VastTimeout)


@pytest.mark.parametrize(
    ("reply", "error", "match"),
    [
        (status(401, '{"error": "bad key"}'), AuthenticationError, "API key was rejected"),
        (status(403), AuthenticationError, "may not use this endpoint"),
        (status(400), RouteError, "check the endpoint name"),
        (status(404, '{"detail": "no endpoint group named ep"}'), RouteError, "no endpoint group"),
        (Reply(200, b'{"error": "auth failed"}'), AuthenticationError, "refused the request"),
        (Reply(200, b'{"msg": "quota exceeded"}'), RouteError, "quota exceeded"),
        (Reply(200, b'{"url": "ftp://1.2.3.4"}'), RouteError, "not an http"),
    ],
)
def test_route_refusals_fail_at_once(reply: Reply, error: type[Exception], match: str) -> None:
    net = Net(routes=forever(reply))
    with pytest.raises(error, match=match):
        net.request()
    assert len(net.routes) == 1 and not net.sleeps and not net.workers


def test_the_route_retry_after_is_honoured_and_capped() -> None:
    net = Net(
        routes=[
            status(429, Retry_After="3"),
            status(429, Retry_After="100"),
            status(503, Retry_After="Wed, 21 Oct 2015 07:28:10 GMT"),
            ready(),
        ],
        workers=[ok()],
        rng=low(),
    )
    net.request()
    # The jitter draws 0 here; the server's word counts up to Backoff.retry_after_cap (30 s),
    # and an HTTP date is read against the context's wall clock (07:28:00 → 10 s).
    assert net.sleeps == [3.0, 30.0, 10.0]


def test_a_route_answer_is_never_used_twice() -> None:
    net = Net(
        routes=[ready(answer(reqnum=1)), ready(answer(reqnum=2))], workers=[status(500), ok()]
    )
    _, info = net.request()
    sent = [w.json["auth_data"]["reqnum"] for w in net.workers]
    assert sent == [1, 2] and info.reqnum == 2
    assert net.trace.count("route") == 2 and info.route_calls == 2 and info.attempts == 2


def test_a_retried_attempt_keeps_the_request_idx() -> None:
    net = Net(
        routes=[waiting(request_idx=5), ready(answer(request_idx=9)), ready(answer(request_idx=9))],
        workers=[status(503), ok()],
    )
    _, info = net.request()
    assert [r.json["request_idx"] for r in net.routes] == [0, 5, 9]
    assert info.request_idx == 9


def test_route_flow_returns_the_assignment_without_calling_a_worker() -> None:
    net = Net(routes=[waiting(), ready()])
    assignment = net.route(cost=12)
    assert assignment.body == answer() and assignment.route.signature == "g3"
    assert assignment.route.attempts == 0 and assignment.route.route_calls == 2
    assert assignment.route.route_latency == net.elapsed == 1.0
    assert net.routes[0].json["cost"] == 12.0 and not net.workers


# -- the deadline -----------------------------------------------------------------------------


def test_the_deadline_ends_the_wait_with_the_statuses_seen() -> None:
    said = ["1 Creating", "1 Loading", "1 Creating"]
    script = itertools.chain(map(waiting, said), forever(waiting("1 Model Loading")))
    net = Net(settings(deadline=30.0), routes=script, rng=high())
    with pytest.raises(NoWorkerReady) as info:
        net.request()
    message = str(info.value)
    assert "within the 30s deadline" in message
    assert "statuses seen: 1 Creating; 1 Loading; 1 Model Loading)" in message  # distinct, in order
    assert info.value.status == "1 Model Loading" and "deadline=" in message
    assert net.elapsed == 30.0  # the last wait was cut to the time left
    assert sum(net.sleeps) == 30.0 and net.sleeps[-1] < 5.0
    assert not net.workers


def test_the_statuses_seen_are_few_and_short() -> None:
    said = [f"{i} Loading" for i in range(8)] + ["x" * 500]
    net = Net(
        settings(deadline=60.0), routes=itertools.chain(map(waiting, said), forever(waiting()))
    )
    with pytest.raises(NoWorkerReady) as info:
        net.request()
    seen = str(info.value).split("statuses seen: ")[1].split(")")[0].split("; ")
    assert len(seen) == 5 and seen[0] == "5 Loading" and len(seen[3]) == 80  # the last five
    net = Net(settings(deadline=1.0), routes=forever(Fail(httpx.ReadTimeout("slow"), after=1.0)))
    with pytest.raises(NoWorkerReady, match="statuses seen: none given"):
        net.request()


def test_route_calls_are_bounded_by_the_time_left() -> None:
    net = Net(
        settings(deadline=12.0, route_timeout=10.0),
        routes=[waiting(), waiting(), ready()],
        workers=[ok()],
        rng=high(),
    )
    net.request()
    assert [r.request.timeout["read"] for r in net.routes] == [10.0, 10.0, 8.0]


def test_a_route_call_cut_by_the_deadline_ends_in_the_deadline_error() -> None:
    slow = Fail(httpx.ReadTimeout("slow"), after=9.0)
    net = Net(settings(deadline=10.0, route_timeout=10.0), routes=[waiting(), slow])
    with pytest.raises(NoWorkerReady, match="1 Creating"):
        net.request()
    assert len(net.routes) == 2 and net.elapsed == 10.0


def test_the_deadline_tells_the_last_route_error() -> None:
    net = Net(
        settings(deadline=2.0, max_retries=50), routes=forever(status(503, "busy")), rng=high()
    )
    with pytest.raises(RouteError, match=r"HTTP 503 .*busy.*gave up at the 2s deadline"):
        net.request()
    assert net.elapsed == 2.0


def test_worker_retries_stop_when_no_time_is_left() -> None:
    net = Net(
        settings(deadline=3.0, max_retries=10),
        routes=forever(ready()),
        workers=forever(status(500)),
        rng=high(),
    )
    with pytest.raises(WorkerError, match=r"no time left before the 3s deadline"):
        net.request()
    assert net.sleeps == [0.5, 1.0] and len(net.workers) == 3  # a 2 s wait would pass 3 s


def test_the_first_byte_is_bounded_by_the_deadline_then_the_idle_timeout_rules() -> None:
    s = settings(deadline=15.0, timeout=httpx.Timeout(600.0, connect=10.0))
    net = Net(s, routes=[waiting(), ready(after=9.0)], workers=[ok()], rng=high())
    net.request()
    request = net.workers[0].request
    # 5 s are left: connecting and the wait for the first byte get no more than that...
    assert request.timeout == {"connect": 5.0, "read": 5.0, "write": 600.0, "pool": 5.0}
    assert request.read_after_start == 600.0  # ...and the answer, once started, the idle timeout


def test_a_silent_worker_is_not_asked_twice() -> None:
    net = Net(routes=forever(ready()), workers=[Fail(httpx.ReadTimeout("silent"), after=600.0)])
    with pytest.raises(VastTimeout, match="did not answer in time"):
        net.request()
    assert len(net.workers) == 1 and not net.sleeps  # it may still be working on it


# -- the worker -------------------------------------------------------------------------------


def test_a_malformed_answer_is_never_sent_again() -> None:
    # Bytes came back that are not HTTP: the worker got the request, so it may have run it.
    net = Net(routes=[ready(), ready()], workers=[Fail(httpx.RemoteProtocolError("bad status"))])
    with pytest.raises(WorkerError, match="malformed"):
        net.request()
    assert len(net.workers) == 1


@pytest.mark.parametrize(
    "failure",
    [
        status(408),
        status(409),
        status(425),
        status(429),
        status(500),
        status(502),
        status(503),
        status(599),
        Fail(httpx.ConnectError("refused")),
        Fail(httpx.ConnectTimeout("slow")),
        Fail(httpx.PoolTimeout("full")),
        Fail(httpx.WriteError("reset")),
        Fail(httpx.WriteTimeout("slow")),
        Fail(httpx.RemoteProtocolError("Server disconnected without sending a response.")),
        Fail(httpx.ReadError("reset")),
    ],
    ids=lambda f: str(f.status_code) if isinstance(f, Reply) else type(f.error).__name__,
)
def test_retryable_worker_failures_get_a_fresh_route(failure: Reply | Fail) -> None:
    net = Net(routes=forever(ready()), workers=[failure, ok()], rng=high())
    response, info = net.request()
    assert response.status_code == 200 and info.attempts == 2 and info.route_calls == 2
    assert net.trace == ["route", "getkey", "pubkey", "worker"] + (
        ["read"] if isinstance(failure, Reply) else []
    ) + ["sleep", "route", "getkey", "worker"]
    assert net.sleeps == [0.5]


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        (400, "refused"),
        (401, "refused the assignment's signature"),
        (403, "refused"),
        (404, "check api="),
        (410, "does not know the session"),
        (413, "too large"),
        (422, "could not read the request"),
    ],
)
def test_other_worker_refusals_fail_at_once_quoting_the_body(code: int, hint: str) -> None:
    body = f"no: {API_KEY} said so"
    net = Net(routes=forever(ready()), workers=forever(status(code, body)))
    with pytest.raises(WorkerError) as info:
        net.request()
    error = info.value
    assert error.status_code == code and error.worker_url == WORKER_URL
    assert hint in str(error) and f"HTTP {code} from worker {WORKER_URL}" in str(error)
    assert error.body == "no: *** said so" and API_KEY not in str(error)
    assert error.content == body.encode()  # unabridged, for the transports
    assert len(net.workers) == 1 and not net.sleeps


def test_error_bodies_are_read_within_a_limit() -> None:
    huge = status(422, b"x" * (4 * ERROR_READ_LIMIT))
    net = Net(routes=[ready()], workers=[huge])
    with pytest.raises(WorkerError) as info:
        net.request()
    assert huge.read == [ERROR_READ_LIMIT] and len(info.value.content) == ERROR_READ_LIMIT


def test_worker_failures_give_up_after_max_retries() -> None:
    net = Net(settings(max_retries=2), routes=forever(ready()), workers=forever(status(500)))
    with pytest.raises(WorkerError, match=r"HTTP 500 .*after 3 attempts") as info:
        net.request()
    assert info.value.status_code == 500 and len(net.workers) == 3 and len(net.routes) == 3


def test_a_dead_worker_ends_in_a_connection_error() -> None:
    refused = Fail(httpx.ConnectError("[Errno 111] refused"))
    net = Net(settings(max_retries=1), routes=forever(ready()), workers=forever(refused))
    with pytest.raises(VastConnectionError, match=r"cannot reach worker .*ConnectError"):
        net.request()
    assert len(net.workers) == 2


def test_other_transport_failures_are_not_retried() -> None:
    net = Net(routes=forever(ready()), workers=forever(Fail(httpx.UnsupportedProtocol("gopher"))))
    with pytest.raises(VastConnectionError, match="UnsupportedProtocol"):
        net.request()
    assert len(net.workers) == 1


def _certificate_failure() -> httpx.ConnectError:
    error = httpx.ConnectError("handshake failed")
    cause = ssl.SSLCertVerificationError(1, "certificate verify failed")
    cause.verify_message = "unable to get local issuer certificate"
    error.__cause__ = cause
    return error


def test_a_certificate_failure_is_final_and_says_what_to_do() -> None:
    net = Net(routes=forever(ready()), workers=forever(Fail(_certificate_failure())))
    with pytest.raises(WorkerCertificateError) as info:
        net.request()
    message = str(info.value)
    assert "unable to get local issuer certificate" in message and "no request was sent" in message
    assert "VAST_WORKER_CA" in message and "ssl_context()" in message
    assert info.value.worker_url == WORKER_URL
    assert len(net.workers) == 1 and len(net.routes) == 1 and not net.sleeps


def test_the_worker_retry_after_is_honoured_and_capped() -> None:
    net = Net(
        routes=forever(ready()),
        workers=[
            status(429, Retry_After="2"),
            status(503, Retry_After="1000"),
            status(429, Retry_After="Wed, 21 Oct 2015 07:28:10 GMT"),
            ok(),
        ],
        rng=low(),
    )
    net.request()
    assert net.sleeps == [2.0, 30.0, 10.0]


def test_backoff_doubles_up_to_its_cap() -> None:
    s = settings(max_retries=6, backoff=Backoff(base=0.5, cap=4.0), deadline=1e6)
    net = Net(s, routes=forever(ready()), workers=[*[status(500)] * 6, ok()], rng=high())
    net.request()
    assert net.sleeps == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_backoff_is_full_jitter_from_the_contexts_random_source() -> None:
    def sleeps(seed: int) -> list[float]:
        net = Net(routes=forever(ready()), workers=[*[status(500)] * 3, ok()], seed=seed)
        net.request()
        return net.sleeps

    twin = random.Random(3)
    assert sleeps(3) == [Backoff().retry_delay(k, twin) for k in range(3)] == sleeps(3)
    assert sleeps(3) != sleeps(4)


# -- nothing after the first byte -------------------------------------------------------------


@pytest.mark.parametrize("code", [200, 201, 204, 299])
def test_the_flow_ends_when_the_answer_starts(code: int) -> None:
    started = Reply(code, b"the rest is the caller's")
    net = Net(routes=[ready()], workers=[started])
    flow_result = net.request(observed=True)
    assert flow_result[0] is started and started.read == []  # not read, not closed, not retried
    assert net.trace[-2:] == ["worker", "answering"]


def test_a_finished_flow_takes_no_more_actions() -> None:
    net = Net(routes=[ready()], workers=[ok()])
    flow = vast_llm._flow.request_flow(
        net.settings, net.ctx, path="/generate", payload={}, cost=1.0, stream=True
    )
    action = next(flow)
    result = None
    while result is None:
        try:
            action = flow.send(net.answer(action))
        except StopIteration as stop:
            result = stop.value
    response, info = result
    assert response.status_code == 200 and info.attempts == 1
    with pytest.raises(StopIteration):  # there is nothing more it could ask for
        next(flow)
    assert net.trace == ["route", "getkey", "pubkey", "worker"]


# -- the worker request -----------------------------------------------------------------------


def test_the_worker_request_forwards_the_assignment_and_never_the_key() -> None:
    net = Net(routes=[ready()], workers=[ok()])
    headers = {
        "Authorization": "Bearer sdk",
        "X-Api-Key": "k",
        "Api-Key": "k",
        "Cookie": "c",
        "Proxy-Authorization": "p",
        "OpenAI-Organization": "o",
        "Host": "h",
        "Content-Length": "9",
        "Transfer-Encoding": "chunked",
        "Connection": "close",
        "X-Trace": "kept",
    }
    net.request(path="/v1/chat/completions", payload={"messages": []}, headers=headers, stream=True)
    request = net.workers[0].request
    assert request.worker and request.method == "POST"
    assert request.url == WORKER_URL + "/v1/chat/completions"
    assert {k.lower() for k in request.headers} == {
        "content-type",
        "accept",
        "accept-encoding",  # what the client can decode under its size limits
        "user-agent",
        "x-trace",  # a header the caller named for workers, naming no credential
    }
    assert request.headers["Accept"] == "text/event-stream"
    assert json.loads(request.content) == {
        "auth_data": answer(),
        "session_id": None,
        "payload": {"messages": []},
    }
    assert API_KEY not in request.content.decode() and API_KEY not in str(request.headers)
    assert API_KEY not in repr(net.routes[0].request)


def test_the_flat_format_merges_the_assignment_and_the_payload() -> None:
    net = Net(settings(payload_format="flat"), routes=[ready(), ready()], workers=[ok()])
    net.request(payload={"inputs": "x"})
    assert json.loads(net.workers[0].request.content) == {**answer(), "inputs": "x"}
    assert net.workers[0].request.headers["Accept"] == "application/json"
    with pytest.raises(TypeError, match="JSON object"):
        net.request(payload=["not", "an", "object"])


# -- progress ---------------------------------------------------------------------------------


def test_progress_events_tell_the_whole_story_in_order() -> None:
    net = Net(
        routes=[waiting("1 Stopped"), waiting("1 Loading"), ready(), status(500), ready()],
        workers=[status(503, "busy"), ok()],
        rng=high(),
    )
    net.request(observed=True)
    kinds = [e.kind for e in net.events]
    assert kinds == [
        "waiting",
        "waiting",
        "routed",
        "verified",
        "retrying",
        "retrying",
        "routed",
        "verified",
        "answering",
    ]
    waiting_1, waiting_2, routed, verified, worker_retry, route_retry, *_, answering = net.events
    assert (waiting_1.status, waiting_1.retry_in, waiting_1.elapsed) == ("1 Stopped", 1.0, 0.0)
    assert (waiting_2.status, waiting_2.retry_in, waiting_2.elapsed) == ("1 Loading", 3.0, 1.0)
    assert routed.worker_url == verified.worker_url == WORKER_URL and verified.signature == "g3"
    assert worker_retry.attempt == 1 and "HTTP 503" in str(worker_retry.error)
    assert worker_retry.retry_in == 0.5 and worker_retry.worker_url == WORKER_URL
    assert route_retry.attempt == 2 and "HTTP 500" in str(route_retry.error)  # on the 2nd route
    assert answering.attempt == 2 and answering.worker_url == WORKER_URL
    assert [e.elapsed for e in net.events] == sorted(e.elapsed for e in net.events)
    assert answering.elapsed == net.elapsed == 1.0 + 3.0 + 0.5 + 0.5
    assert all(e.endpoint == ENDPOINT for e in net.events)
    # every announced wait is the wait that follows
    announced = [e.retry_in for e in net.events if e.retry_in is not None]
    assert announced == net.sleeps
    assert all(API_KEY not in e.describe() for e in net.events)


def test_nobody_listening_means_no_events() -> None:
    net = Net(routes=[waiting(), ready(), ready()], workers=[status(500), ok()])
    net.request()
    assert not net.events
    assert set(net.trace) == {"route", "getkey", "pubkey", "worker", "read", "sleep"}


def test_route_flow_announces_routing_too() -> None:
    net = Net(routes=[waiting(), ready()])
    net.route(observed=True)
    assert [e.kind for e in net.events] == ["waiting", "routed", "verified"]


# -- per-call settings ------------------------------------------------------------------------


def test_per_call_settings_steer_one_call() -> None:
    base = settings()
    assert base.for_call({}) is base and base.for_call({"timeout": None}) is base
    net = Net(base, routes=forever(ready()), workers=forever(status(500)))
    with pytest.raises(WorkerError, match="after 1 attempts"):
        net.request(base.for_call({"max_retries": 0}))
    net = Net(base, routes=forever(waiting()))
    with pytest.raises(NoWorkerReady, match="within the 5s deadline"):
        net.request(base.for_call({"deadline": 5}))
    assert net.elapsed == pytest.approx(5.0)
    net = Net(base, routes=[ready()], workers=[ok()])
    net.request(base.for_call({"timeout": 7}))
    assert net.workers[0].request.timeout == {
        "connect": 7.0,
        "read": 7.0,
        "write": 7.0,
        "pool": 7.0,
    }
    call = base.for_call({"cost": 3})
    assert call.cost_of({"inputs": "x"}, 256) == 3.0 and base.cost_of({}, 256) == 256.0
    assert base.max_retries == 3 and base.deadline == 900.0  # the client's own are untouched
    with pytest.raises(ConfigError, match="did you mean 'deadline'"):
        base.for_call({"deadlin": 1})
    with pytest.raises(ConfigError, match="max_retries"):
        base.for_call({"max_retries": -1})


# -- sans-I/O: time and randomness come from the Context only ---------------------------------


class _Forbidden:
    def __init__(self, name: str) -> None:
        self.name = name

    def __getattr__(self, attr: str) -> Any:
        raise AssertionError(f"the flow used {self.name}.{attr} instead of its Context")


@pytest.fixture
def no_clocks_or_dice(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (vast_llm._flow, vast_llm._retry, vast_llm._route):
        for name in ("time", "random"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, _Forbidden(f"{module.__name__}.{name}"))


@pytest.mark.usefixtures("no_clocks_or_dice")
def test_the_flow_reads_time_and_randomness_only_through_its_context() -> None:
    date = "Wed, 21 Oct 2015 07:28:10 GMT"
    pubkeys = [status(503), Reply(200, other_pem().encode()), Reply(200, KEY_PEM.encode())]
    net = Net(
        routes=[waiting(), waiting(), status(429, Retry_After=date), ready(), ready()],
        workers=[status(503, Retry_After=date), ok()],
        pubkeys=pubkeys,
    )
    _, info = net.request(observed=True)
    assert info.verified and info.attempts == 2 and len(net.pubkeys) == 3
    assert 10.0 in net.sleeps  # both HTTP dates read against the injected wall clock


def test_the_flow_module_holds_no_locks_and_reads_time_only_for_defaults() -> None:
    tree = ast.parse(inspect.getsource(vast_llm._flow))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imported.add(node.module.split(".")[0])
    assert not imported & {"threading", "asyncio", "socket", "ssl", "os", "anyio", "select"}
    # `time` and `random` appear only as the Context's defaults (what a client gets unless
    # it injects its own); every decision reads ctx.clock, ctx.wall and ctx.rng.
    context = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Context")
    init = next(n for n in context.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    allowed = {id(n) for n in ast.walk(init)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            name = node.value.id
            assert name not in ("time", "random") or id(node) in allowed, (
                f"line {node.lineno}: {name}.{node.attr}"
            )
