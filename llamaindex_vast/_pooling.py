"""What VastEmbedding and VastRerank share: the client settings and the clients.

The same plumbing as the ``Vast`` LLM (settings from ``vast_llm.fields``, unknown arguments an
error, clients through ``vast_llm.integration.clients_for``), without generation parameters.
"""

from __future__ import annotations

import difflib
import os
from typing import Any, Literal

from llama_index.core.bridge.pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    model_validator,
)

from vast_llm import AsyncVastClient, ConfigError, RouteInfo, VastClient
from vast_llm.fields import ClientFields, setting_field
from vast_llm.integration import ClientPair, clients_for, config_error, settings_of

__all__ = ["PoolingFields"]


class PoolingFields(ClientFields):
    """Client settings (every one of vast_llm's) and extra request fields."""

    api_key: SecretStr | None = Field(default=None, exclude=True, description="Vast.ai API key.")
    api: Literal["tgi", "openai"] = setting_field("api", default="openai")
    additional_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra fields for the model server, sent with every request "
        "(truncate_prompt_tokens, dimensions...).",
    )
    http_client: Any = Field(default=None, exclude=True, description="An httpx.Client.")
    http_async_client: Any = Field(
        default=None, exclude=True, description="An httpx.AsyncClient or aiohttp.ClientSession."
    )

    _clients: ClientPair | None = PrivateAttr(default=None)
    _routes: tuple[RouteInfo, ...] = PrivateAttr(default=())

    def __init__(self, endpoint: str | None = None, **kwargs: Any) -> None:
        if endpoint is not None:
            kwargs["endpoint"] = endpoint
        key = kwargs.pop("api_key", None) or os.environ.get("VAST_API_KEY") or None
        kwargs["api_key"] = SecretStr(key) if isinstance(key, str) else key
        try:
            super().__init__(**kwargs)
        except ValidationError as exc:
            raise config_error(exc) from None

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown(cls, values: Any) -> Any:
        """Unknown keyword arguments are an error (a typo must not pass silently)."""
        if not isinstance(values, dict):
            return values
        known = set(cls.model_fields)
        known.update(f.alias for f in cls.model_fields.values() if f.alias)
        unknown = [name for name in values if name not in known]
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{cls.__name__} has no field {unknown[0]!r}{hint}. Fields for the model server "
                "go in additional_kwargs={...}."
            )
        return values

    @model_validator(mode="after")
    def _check_settings(self) -> Any:
        self._pair()  # settings checked now; HTTP clients come on first use
        return self

    def _pair(self) -> ClientPair:
        pair = clients_for(
            settings_of(self),
            http_client=self.http_client,
            http_async_client=self.http_async_client,
        )
        self._clients = pair
        return pair

    @property
    def client(self) -> VastClient:
        """The sync routing client for the current settings (shared by equal models)."""
        return self._pair().sync

    @property
    def async_client(self) -> AsyncVastClient:
        """The async routing client for the current settings (a pool per event loop)."""
        return self._pair().async_

    @property
    def last_routes(self) -> tuple[RouteInfo, ...]:
        """The route facts of the last call's worker requests (which worker served what)."""
        return self._routes

    def close(self) -> None:
        """Close this model's connection pools (a later call opens new ones)."""
        if self._clients is not None:
            self._clients.close()
            self._clients = None

    async def aclose(self) -> None:
        """Close this model's connection pools, this event loop's included."""
        if self._clients is not None:
            await self._clients.aclose()
            self._clients = None

    def _call_params(self, model: str | None) -> dict[str, Any]:
        params = dict(self.additional_kwargs)
        if model and "model" not in params:
            params["model"] = model
        return params
