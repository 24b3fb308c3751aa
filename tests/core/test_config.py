"""Settings: argument, then environment, then default; bad settings fail at construction."""

from __future__ import annotations

import warnings

import httpx
import pytest

from tests.conftest import load_vectors
from vast_llm import (
    AsyncVastClient,
    AsyncVastTransport,
    ConfigError,
    VastClient,
    VastSecurityWarning,
    VastTransport,
)
from vast_llm._config import resolve_settings

KEY = "k-" + "x" * 30


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "VAST_ENDPOINT",
        "VAST_API_KEY",
        "VAST_BASE_URL",
        "VAST_SIGNATURE_POLICY",
        "VAST_PUBLIC_KEY",
    ):
        monkeypatch.delenv(name, raising=False)


def test_arguments_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAST_ENDPOINT", "env-ep")
    monkeypatch.setenv("VAST_API_KEY", "env-key")
    monkeypatch.setenv("VAST_BASE_URL", "https://run-alpha.vast.ai")
    s = resolve_settings("arg-ep", api_key="arg-key", base_url="https://run-candidate.vast.ai/")
    assert (s.endpoint, s.api_key, s.base_url) == (
        "arg-ep",
        "arg-key",
        "https://run-candidate.vast.ai",
    )


def test_environment_then_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAST_ENDPOINT", "env-ep")
    monkeypatch.setenv("VAST_API_KEY", "env-key")
    s = resolve_settings()
    assert (s.endpoint, s.api_key, s.base_url) == ("env-ep", "env-key", "https://run.vast.ai")
    assert s.signature_policy == "strict" and s.api == "tgi" and s.payload_format == "wrapped"
    monkeypatch.setenv("VAST_BASE_URL", "https://run-alpha.vast.ai")
    assert resolve_settings().base_url == "https://run-alpha.vast.ai"


def test_environment_is_read_at_construction_not_import(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError):
        VastClient()
    monkeypatch.setenv("VAST_ENDPOINT", "later")
    monkeypatch.setenv("VAST_API_KEY", KEY)
    with VastClient() as client:
        assert client.endpoint == "later"


@pytest.mark.parametrize("cls", [VastClient, AsyncVastClient, VastTransport])
def test_missing_endpoint_or_key_is_a_config_error(cls: type) -> None:
    with pytest.raises(ConfigError, match="VAST_ENDPOINT"):
        cls(api_key=KEY)
    with pytest.raises(ConfigError, match="VAST_API_KEY"):
        cls("ep")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"api": "vllm"}, "api must be one of"),
        ({"payload_format": "nested"}, "payload_format"),
        ({"signature_policy": "maybe"}, "signature_policy"),
        ({"base_url": "ftp://run.vast.ai"}, "base_url"),
        ({"timeout": 0}, "timeout"),
        ({"deadline": float("inf")}, "deadline"),
        ({"route_timeout": -1}, "route_timeout"),
        ({"max_retries": -1}, "max_retries"),
        ({"cost": -5}, "cost"),
        ({"api_key": "two words"}, "api_key"),
        ({"public_key": "-----BEGIN PUBLIC KEY-----\nbad\n-----END PUBLIC KEY-----"}, "PEM"),
    ],
)
def test_bad_settings(kwargs: dict[str, object], match: str) -> None:
    kwargs = {"api_key": KEY, **kwargs}
    with pytest.raises(ConfigError, match=match) as info:
        resolve_settings("ep", **kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)  # a ConfigError is also a ValueError
    assert KEY not in str(info.value)


def test_policy_and_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAST_SIGNATURE_POLICY", "warn")
    monkeypatch.setenv("VAST_PUBLIC_KEY", load_vectors("signatures.json")["public_key_spki_pem"])
    s = resolve_settings("ep", api_key=KEY)
    assert s.signature_policy == "warn" and s.public_key is not None


def test_plain_http_to_a_remote_host_warns() -> None:
    with pytest.warns(VastSecurityWarning, match="plain HTTP"):
        resolve_settings("ep", api_key=KEY, base_url="http://run.example.com")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve_settings("ep", api_key=KEY, base_url="http://127.0.0.1:8080")
        resolve_settings("ep", api_key=KEY, base_url="http://localhost:8080")


def test_signature_policy_off_warns() -> None:
    with pytest.warns(VastSecurityWarning, match="off"):
        resolve_settings("ep", api_key=KEY, signature_policy="off")


def test_key_is_absent_from_reprs() -> None:
    s = resolve_settings("ep", api_key=KEY)
    client = VastClient("ep", api_key=KEY)
    assert KEY not in repr(s) and KEY not in str(s)
    assert KEY not in repr(client) and "ep" in repr(client)
    client.close()


def test_cost_from_number_or_callable() -> None:
    fixed = resolve_settings("ep", api_key=KEY, cost=12)
    assert fixed.cost_of({"max_tokens": 99}, 99) == 12.0
    per_request = resolve_settings("ep", api_key=KEY, cost=lambda p: len(str(p)))
    assert per_request.cost_of({"a": 1}, 5) == len(str({"a": 1}))
    default = resolve_settings("ep", api_key=KEY)
    assert default.cost_of({}, 77) == 77.0


def test_timeout_number_becomes_an_httpx_timeout() -> None:
    s = resolve_settings("ep", api_key=KEY, timeout=30)
    assert s.timeout == httpx.Timeout(30, connect=10)
    assert resolve_settings("ep", api_key=KEY, timeout=httpx.Timeout(5.0)).timeout.read == 5.0


def test_a_client_of_the_wrong_kind_is_refused_at_construction() -> None:
    with pytest.raises(ConfigError, match=r"httpx\.Client, got AsyncClient"):
        VastClient("ep", api_key="k", http_client=httpx.AsyncClient())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"httpx\.AsyncClient"):
        AsyncVastClient("ep", api_key="k", http_client=httpx.Client())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"httpx\.Client"):
        VastTransport("ep", api_key="k", http_client=httpx.AsyncClient())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"httpx\.AsyncClient"):
        AsyncVastTransport("ep", api_key="k", http_client=httpx.Client())  # type: ignore[arg-type]
