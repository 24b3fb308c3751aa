"""A sync and an async client built on first use: what the framework wrappers hold."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from ._client import AsyncVastClient, VastClient
from ._config import resolve_settings

__all__ = ["ClientPair", "model_sampling", "sampling_params"]

# Settings a framework model keeps under the same names as the clients' arguments.
_MODEL_FIELDS = (
    "base_url", "api", "payload_format", "signature_policy", "public_key", "max_retries",
    "timeout", "deadline", "backoff", "chat_template",
)  # fmt: skip


class ClientPair:
    """Settings checked now; a :class:`VastClient` and an :class:`AsyncVastClient` built on
    first use (no network, and no connection pool, until a call needs one)."""

    def __init__(
        self,
        endpoint: str | None,
        settings: Mapping[str, Any],
        *,
        http_client: Any = None,
        http_async_client: Any = None,
    ) -> None:
        self._endpoint = endpoint
        self._settings = {k: v for k, v in settings.items() if v is not None}
        resolve_settings(endpoint, **self._settings)  # raise ConfigError at construction
        self._http_client = http_client
        self._http_async_client = http_async_client
        self._lock = threading.Lock()
        self._sync: VastClient | None = None
        self._async: AsyncVastClient | None = None

    @classmethod
    def from_model(cls, model: Any, **extra: Any) -> ClientPair:
        """Build from a framework model's fields (``endpoint``, ``api_key`` as a SecretStr or
        str, ``base_url``...); ``extra`` adds settings the model keeps elsewhere and the
        ``http_client`` / ``http_async_client`` to use."""
        key: Any = getattr(model, "api_key", None)
        settings = {name: getattr(model, name, None) for name in _MODEL_FIELDS}
        settings["api_key"] = key.get_secret_value() if hasattr(key, "get_secret_value") else key
        clients = {name: extra.pop(name, None) for name in ("http_client", "http_async_client")}
        settings.update(extra)
        return cls(model.endpoint, settings, **clients)

    @property
    def sync(self) -> VastClient:
        if self._sync is None:
            with self._lock:
                if self._sync is None:
                    self._sync = VastClient(
                        self._endpoint, http_client=self._http_client, **self._settings
                    )
        return self._sync

    @property
    def async_(self) -> AsyncVastClient:
        if self._async is None:
            with self._lock:
                if self._async is None:
                    self._async = AsyncVastClient(
                        self._endpoint, http_client=self._http_async_client, **self._settings
                    )
        return self._async


_SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "repetition_penalty", "seed")


def model_sampling(model: Any, max_tokens: int) -> dict[str, Any]:
    """A framework model's sampling fields (same names in both wrappers), with its token budget."""
    return {"max_tokens": max_tokens, **{n: getattr(model, n, None) for n in _SAMPLING_FIELDS}}


def sampling_params(
    defaults: Mapping[str, Any],
    extra: Mapping[str, Any],
    call: Mapping[str, Any],
    stops: list[str],
    *,
    model: str | None,
    openai: bool,
) -> dict[str, Any]:
    """One call's parameters: the model's fields, then its extra kwargs, then the call's.

    Stop sequences from all three are merged (order kept, duplicates dropped); ``model`` is
    sent to OpenAI-compatible workers only (TGI serves one model and has no such field).
    """
    params: dict[str, Any] = {**defaults, **extra, **call}
    if "max_new_tokens" in call:
        params["max_tokens"] = params.pop("max_new_tokens")
    merged = [*stops, *(params.pop("stop", None) or [])]
    if merged:
        params["stop"] = list(dict.fromkeys(merged))
    if openai:
        if model and "model" not in params:
            params["model"] = model
    else:
        params.pop("model", None)
    return {name: value for name, value in params.items() if value is not None}
