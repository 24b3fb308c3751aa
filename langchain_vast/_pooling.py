"""What VastEmbeddings and VastRerank share: the client settings, the clients, call parameters.

The same plumbing as the chat models' ``VastFields`` (settings from ``vast_llm.fields``,
unknown arguments an error, clients through ``vast_llm.integration.clients_for``), without
their generation parameters, which mean nothing to an embedding model or a reranker.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal

from langchain_core.utils import secret_from_env
from pydantic import Field, PrivateAttr, SecretStr, ValidationError, model_validator

from vast_llm import AsyncVastClient, ConfigError, RouteInfo, VastClient
from vast_llm.fields import ClientFields, setting_field
from vast_llm.integration import ClientPair, clients_for, config_error, settings_of

__all__ = ["PoolingFields"]


class PoolingFields(ClientFields):
    """Client settings (every one of vast_llm's), the model name and extra request fields."""

    api_key: SecretStr | None = Field(
        default_factory=secret_from_env("VAST_API_KEY", default=None), exclude=True
    )
    """Vast.ai API key (``VAST_API_KEY``); sent to the autoscaler only, never to a worker."""
    api: Literal["tgi", "openai"] = setting_field("api", default="openai")
    """The worker template's API: embeddings and rerank are OpenAI-compatible routes."""
    model_name: str | None = Field(default=None, alias="model")
    """The model name sent to the worker (optional: a worker serves its one model)."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Extra fields for the model server, sent with every request (``truncate_prompt_tokens``,
    ``dimensions``...)."""
    http_client: Any = Field(default=None, exclude=True)
    """An ``httpx.Client`` for the route and worker calls (not serialised)."""
    http_async_client: Any = Field(default=None, exclude=True)
    """An ``httpx.AsyncClient`` or ``aiohttp.ClientSession`` for the async calls."""

    _clients: ClientPair | None = PrivateAttr(default=None)
    _routes: tuple[RouteInfo, ...] = PrivateAttr(default=())

    def __init__(self, **kwargs: Any) -> None:
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
                "go in model_kwargs={...}."
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

    def _call_params(self, **call: Any) -> dict[str, Any]:
        params = {**self.model_kwargs, **{k: v for k, v in call.items() if v is not None}}
        if self.model_name and "model" not in params:
            params["model"] = self.model_name
        return params
