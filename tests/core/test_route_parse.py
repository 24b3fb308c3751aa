"""Reading /route/ answers: ready, waiting, and every kind of refusal. Pure."""

from __future__ import annotations

import json

import pytest

from vast_llm import AuthenticationError, RouteError
from vast_llm._route import Ready, Rejected, Waiting, build_route_request, parse_route_answer

KEY = "secret-key-123"


def parse(status: int, body: object, headers: dict[str, str] | None = None) -> object:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_route_answer(
        status, headers or {}, content, endpoint="ep", base_url="https://run.vast.ai", api_key=KEY
    )


def test_request_carries_the_key_in_body_and_header() -> None:
    request = build_route_request("https://run.vast.ai", "ep", KEY, 256.0, None, 4.0)
    body = json.loads(request.content)
    assert body == {
        "endpoint": "ep",
        "api_key": KEY,
        "cost": 256.0,
        "request_idx": 0,
        "replay_timeout": 60.0,
    }
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.url == "https://run.vast.ai/route/"
    assert request.timeout["read"] == 4.0
    assert KEY not in repr(request)


def test_request_idx_is_sent_back() -> None:
    request = build_route_request("https://x", "ep", KEY, 1.0, 2421, 4.0)
    assert json.loads(request.content)["request_idx"] == 2421


def test_ready_keeps_the_body_exactly() -> None:
    raw = b'{"url": "http://1.2.3.4:5", "cost": 256.0, "reqnum": 3, "request_idx": 9, "x": 1}'
    outcome = parse(200, raw)
    assert isinstance(outcome, Ready)
    assert outcome.body == json.loads(raw) and isinstance(outcome.body["cost"], float)
    assert outcome.request_idx == 9


def test_ready_without_request_idx_is_fine() -> None:
    outcome = parse(200, {"url": "http://h:1", "reqnum": 1})
    assert isinstance(outcome, Ready) and outcome.request_idx is None


@pytest.mark.parametrize("status", ["Loading", {"loading": 1}, None])
def test_waiting_with_any_status_shape(status: object) -> None:
    body = {"endpoint": "ep", "request_idx": 5} | ({"status": status} if status is not None else {})
    outcome = parse(200, body)
    assert isinstance(outcome, Waiting)
    assert outcome.status == status and outcome.request_idx == 5 and not outcome.stopped


@pytest.mark.parametrize("status", ["endpoint stopped", "Endpoint is stopped", "ENDPOINT_STOPPED"])
def test_stopped_endpoint_is_flagged(status: str) -> None:
    outcome = parse(200, {"status": status})
    assert isinstance(outcome, Waiting) and outcome.stopped


@pytest.mark.parametrize(
    "status", ["Stopped", "no worker ready (1 Stopped)", "Inactive", "2 Model Loading, 1 Stopped"]
)
def test_cold_workers_are_waited_for(status: str) -> None:
    # Scale to zero: a "Stopped" worker is cold, not dead; it wakes when a request asks for it.
    outcome = parse(200, {"status": status})
    assert isinstance(outcome, Waiting) and not outcome.stopped


@pytest.mark.parametrize("field", ["error", "error_msg"])
def test_200_with_an_error_is_an_error(field: str) -> None:
    outcome = parse(200, {field: "no such endpoint"})
    assert isinstance(outcome, Rejected) and not outcome.retryable
    assert "no such endpoint" in str(outcome.error)


def test_200_auth_error_is_an_authentication_error() -> None:
    outcome = parse(200, {"error_msg": "Authentication failed"})
    assert isinstance(outcome, Rejected)
    assert isinstance(outcome.error, AuthenticationError)


@pytest.mark.parametrize(
    ("status", "retryable", "kind"),
    [
        (400, False, RouteError),
        (401, False, AuthenticationError),
        (403, False, AuthenticationError),
        (404, False, RouteError),
        (408, True, RouteError),
        (429, True, RouteError),
        (500, True, RouteError),
        (502, True, RouteError),
        (503, True, RouteError),
    ],
)
def test_status_table(status: int, retryable: bool, kind: type[Exception]) -> None:
    outcome = parse(status, {"error": "nope"})
    assert isinstance(outcome, Rejected)
    assert outcome.retryable is retryable
    assert type(outcome.error) is kind
    assert outcome.error.status_code == status
    assert f"HTTP {status}" in str(outcome.error) and "nope" in str(outcome.error)


def test_retry_after_is_read() -> None:
    outcome = parse(429, {}, {"retry-after": "3"})
    assert isinstance(outcome, Rejected) and outcome.retry_after == 3.0


def test_html_page_is_quoted_briefly_and_retryable() -> None:
    page = b"<html>" + b"x" * 5000 + b"</html>"
    outcome = parse(200, page)
    assert isinstance(outcome, Rejected) and outcome.retryable
    assert "<html>" in str(outcome.error) and len(str(outcome.error)) < 500


def test_non_http_worker_url_is_refused() -> None:
    outcome = parse(200, {"url": "file:///etc/passwd"})
    assert isinstance(outcome, Rejected) and not outcome.retryable


def test_the_key_is_scrubbed_from_quoted_bodies() -> None:
    outcome = parse(400, {"error": f"bad request {{'api_key': '{KEY}'}}"})
    assert isinstance(outcome, Rejected)
    assert KEY not in str(outcome.error) and KEY not in outcome.error.body


def test_a_retry_after_date_is_read_against_the_given_wall_clock() -> None:
    outcome = parse_route_answer(
        429,
        {"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"},
        b"",
        endpoint="ep",
        base_url="https://run.vast.ai",
        api_key=KEY,
        now=lambda: 1445412470.0,
    )
    assert isinstance(outcome, Rejected) and outcome.retryable and outcome.retry_after == 20.0


@pytest.mark.parametrize("name", ["api_key", "API_KEY", "Api_Key", "apikey", "ÀPI_KEY"])
def test_a_field_that_looks_like_a_credential_is_not_kept_in_any_case(name: str) -> None:
    answer = {"url": "http://10.0.0.1:8000", "signature": "c2ln", "reqnum": 3, name: KEY}
    got = parse(200, answer)
    assert isinstance(got, Ready)
    if name == "ÀPI_KEY":  # not a credential name in any case: kept as it came
        assert got.body[name] == KEY
    else:
        assert name not in got.body and KEY not in json.dumps(got.body)
    assert got.body["signature"] == "c2ln" and got.body["reqnum"] == 3
