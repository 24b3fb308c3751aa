"""What VastEmbedding and VastRerank share: the client settings and the clients.

The same plumbing as the ``Vast`` LLM (settings from ``vast_llm.fields``, unknown arguments an
error, clients through ``vast_llm.integration.clients_for``), without generation parameters.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar, Literal

from llama_index.core.bridge.pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
)

from vast_llm import RouteInfo
from vast_llm.fields import ClientModel, setting_field

__all__ = ["PoolingFields"]


class PoolingFields(ClientModel):
    """Client settings (every one of vast_llm's) and extra request fields."""

    api_key: SecretStr | None = Field(default=None, exclude=True, description="Vast.ai API key.")
    api: Literal["tgi", "openai"] = setting_field("api", default="openai")
    additional_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra fields for the model server, sent with every request "
        "(truncate_prompt_tokens, dimensions...).",
    )
    _extra_parameters: ClassVar[str] = "additional_kwargs"
    _routes: tuple[RouteInfo, ...] = PrivateAttr(default=())

    def __init__(self, endpoint: str | None = None, **kwargs: Any) -> None:
        if endpoint is not None:
            kwargs["endpoint"] = endpoint
        key = kwargs.pop("api_key", None) or os.environ.get("VAST_API_KEY") or None
        kwargs["api_key"] = SecretStr(key) if isinstance(key, str) else key
        super().__init__(**kwargs)

    @property
    def last_routes(self) -> tuple[RouteInfo, ...]:
        """The route facts of the last call's worker requests (which worker served what)."""
        return self._routes

    def _call_params(self, model: str | None) -> dict[str, Any]:
        params = dict(self.additional_kwargs)
        if model and "model" not in params:
            params["model"] = model
        return params
