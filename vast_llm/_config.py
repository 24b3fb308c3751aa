"""Settings: each one from the argument, else the environment, else the default.

The environment is read when a client is constructed, never at import.

==================  ========================  =======================
argument            environment variable      default
==================  ========================  =======================
endpoint            VAST_ENDPOINT             (required)
api_key             VAST_API_KEY              (required)
base_url            VAST_BASE_URL             https://run.vast.ai
signature_policy    VAST_SIGNATURE_POLICY     strict
public_key          VAST_PUBLIC_KEY           fetched from /pubkey/
==================  ========================  =======================
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from ._apis import ChatTemplate, chatml
from ._errors import ConfigError, VastSecurityWarning
from ._retry import Backoff
from ._signing import RECIPES, Recipe, load_public_key

__all__ = ["Api", "Cost", "PayloadFormat", "Settings", "SignaturePolicy", "resolve_settings"]

Api = Literal["tgi", "openai"]
PayloadFormat = Literal["wrapped", "flat"]
SignaturePolicy = Literal["strict", "warn", "off"]
Cost = float | Callable[[Mapping[str, Any]], float] | None
PublicKeySource = str | bytes | os.PathLike[str] | rsa.RSAPublicKey | None

DEFAULT_BASE_URL = "https://run.vast.ai"
DEFAULT_TIMEOUT = 120.0  # seconds a worker may stay silent (connect: 10 s)
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_ROUTE_TIMEOUT = 10.0  # the official SDK's value for one /route/ call
DEFAULT_DEADLINE = 300.0  # getting a worker, waits and retries included
DEFAULT_MAX_RETRIES = 3
_LOOPBACK = ("localhost", "127.0.0.1", "::1", "[::1]")


@dataclass(frozen=True)
class Settings:
    """Resolved, validated settings of one client (the API key never shows in its repr)."""

    endpoint: str
    api_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    api: Api = "tgi"
    payload_format: PayloadFormat = "wrapped"
    signature_policy: SignaturePolicy = "strict"
    public_key: rsa.RSAPublicKey | None = field(default=None, repr=False)
    timeout: httpx.Timeout = field(default_factory=lambda: _worker_timeout(DEFAULT_TIMEOUT))
    route_timeout: float = DEFAULT_ROUTE_TIMEOUT
    deadline: float = DEFAULT_DEADLINE
    max_retries: int = DEFAULT_MAX_RETRIES
    backoff: Backoff = field(default_factory=Backoff)
    recipes: tuple[Recipe, ...] = RECIPES
    cost: Cost = field(default=None, repr=False)
    chat_template: ChatTemplate = field(default=chatml, repr=False)

    def cost_of(self, payload: Mapping[str, Any], max_tokens: int) -> float:
        """The cost sent to ``/route/``: the ``cost`` setting, else the request's max tokens."""
        if self.cost is None:
            return float(max_tokens)
        value = self.cost(payload) if callable(self.cost) else self.cost
        if not isinstance(value, (int, float)) or value < 0 or math.isnan(value):
            raise ConfigError(f"cost must be a number >= 0, got {value!r}")
        return float(value)


def _worker_timeout(value: float | httpx.Timeout) -> httpx.Timeout:
    if isinstance(value, httpx.Timeout):
        return value
    return httpx.Timeout(value, connect=min(DEFAULT_CONNECT_TIMEOUT, value))


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{name} must be a number of seconds > 0, got {value!r}")
    if math.isinf(value) and name != "timeout":
        raise ConfigError(f"{name} must be finite: every call ends within a bounded time")
    return float(value)


def _choice(name: str, value: Any, allowed: Any) -> Any:
    options = get_args(allowed)
    if value not in options:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, options))}; got {value!r}")
    return value


def _is_loopback(url: httpx.URL) -> bool:
    # RFC 6761 reserves *.localhost for the local machine.
    host = url.host
    return host in _LOOPBACK or host.startswith("127.") or host.endswith(".localhost")


def resolve_settings(
    endpoint: str | None = None,
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    api: str = "tgi",
    payload_format: str = "wrapped",
    signature_policy: str | None = None,
    public_key: PublicKeySource = None,
    timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
    route_timeout: float = DEFAULT_ROUTE_TIMEOUT,
    deadline: float = DEFAULT_DEADLINE,
    max_retries: int = DEFAULT_MAX_RETRIES,
    backoff: Backoff | None = None,
    cost: Cost = None,
    chat_template: ChatTemplate | None = None,
    recipes: tuple[Recipe, ...] = RECIPES,
) -> Settings:
    """Resolve arguments against the environment and validate them (raises ConfigError)."""
    env = os.environ
    endpoint = endpoint or env.get("VAST_ENDPOINT") or None
    if not endpoint:
        raise ConfigError(
            "no endpoint: pass endpoint='<endpoint name>' or set VAST_ENDPOINT "
            "(the name of your Serverless endpoint in the Vast.ai console)"
        )
    api_key = api_key or env.get("VAST_API_KEY") or None
    if not api_key:
        raise ConfigError("no API key: pass api_key=... or set VAST_API_KEY (your Vast.ai API key)")
    if not isinstance(api_key, str) or not api_key.isprintable() or " " in api_key:
        raise ConfigError("api_key must be one printable word (check for stray spaces or newlines)")

    raw_base = base_url or env.get("VAST_BASE_URL") or DEFAULT_BASE_URL
    try:
        parsed = httpx.URL(raw_base)
    except (httpx.InvalidURL, TypeError):
        raise ConfigError(f"base_url is not a URL: {raw_base!r}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(
            f"base_url must be an http(s) URL such as {DEFAULT_BASE_URL}, got {raw_base!r}"
        )
    if parsed.scheme == "http" and not _is_loopback(parsed):
        warnings.warn(
            f"base_url {raw_base!r} is plain HTTP to a remote host: the API key crosses the "
            "network unencrypted. Use https:// (the production router is https://run.vast.ai).",
            VastSecurityWarning,
            stacklevel=3,
        )

    policy = signature_policy or env.get("VAST_SIGNATURE_POLICY") or "strict"
    _choice("signature_policy (VAST_SIGNATURE_POLICY)", policy, SignaturePolicy)
    if policy == "off":
        warnings.warn(
            "signature_policy='off': worker addresses are used without checking the "
            "autoscaler's signature",
            VastSecurityWarning,
            stacklevel=3,
        )
    key_source = public_key if public_key is not None else env.get("VAST_PUBLIC_KEY") or None
    key = (
        key_source
        if isinstance(key_source, rsa.RSAPublicKey) or key_source is None
        else load_public_key(key_source)
    )

    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ConfigError(f"max_retries must be an int >= 0, got {max_retries!r}")
    if not recipes or any(r not in RECIPES for r in recipes):
        raise ConfigError(f"recipes must be a non-empty subset of {RECIPES}, got {recipes!r}")
    if (cost is not None and not callable(cost)) and (
        isinstance(cost, bool) or not isinstance(cost, (int, float)) or cost < 0
    ):
        raise ConfigError(f"cost must be a number >= 0 or a callable, got {cost!r}")
    if not isinstance(timeout, httpx.Timeout):
        _positive("timeout", timeout)

    return Settings(
        endpoint=endpoint,
        api_key=api_key,
        base_url=str(parsed).rstrip("/"),
        api=_choice("api", api, Api),
        payload_format=_choice("payload_format", payload_format, PayloadFormat),
        signature_policy=policy,  # type: ignore[arg-type]  # checked by _choice above
        public_key=key,
        timeout=_worker_timeout(timeout),
        route_timeout=_positive("route_timeout", route_timeout),
        deadline=_positive("deadline", deadline),
        max_retries=max_retries,
        backoff=backoff or Backoff(),
        recipes=tuple(recipes),
        cost=cost,
        chat_template=chat_template or chatml,
    )
