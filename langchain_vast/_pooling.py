"""What VastEmbeddings and VastRerank share: the client settings, the clients, call parameters.

The same plumbing as the chat models' ``VastFields`` (settings from ``vast_llm.fields``,
unknown arguments an error, clients through ``vast_llm.integration.clients_for``), without
their generation parameters, which mean nothing to an embedding model or a reranker.
"""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.utils import secret_from_env
from pydantic import Field, PrivateAttr, SecretStr

from vast_llm import RouteInfo
from vast_llm.fields import ClientModel, setting_field

__all__ = ["PoolingFields"]


class PoolingFields(ClientModel):
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
    _routes: tuple[RouteInfo, ...] = PrivateAttr(default=())

    @property
    def last_routes(self) -> tuple[RouteInfo, ...]:
        """The route facts of the last call's worker requests (which worker served what)."""
        return self._routes

    def _call_params(self, **call: Any) -> dict[str, Any]:
        params = {**self.model_kwargs, **{k: v for k, v in call.items() if v is not None}}
        if self.model_name and "model" not in params:
            params["model"] = self.model_name
        return params
