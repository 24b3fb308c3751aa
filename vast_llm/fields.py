"""Every client setting as a pydantic field, for framework models (needs pydantic).

:class:`ClientFields` is what ``langchain_vast`` and ``llamaindex_vast`` models inherit: each of
vast_llm's client settings (:data:`vast_llm.integration.SETTINGS`) as a field of the same name,
type and default, with the setting's doc as its description. The names and types are written
out here so that type checkers and IDEs see them (``ChatVast(timeout=5)`` type-checks, a typo
does not); defaults and descriptions come from the registry, and a test checks that this class
and the registry agree, name by name and type by type.

``vast_llm`` itself never imports this module (it is the only one that needs pydantic).
"""

from __future__ import annotations

import os
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from ._apis import ChatTemplate
from ._config import (
    SETTINGS,
    Api,
    Cost,
    PayloadFormat,
    PublicKeySource,
    SignaturePolicy,
)
from ._progress import ProgressListener
from ._retry import Backoff
from ._signing import Recipe
from ._tls import WorkerCA

__all__ = ["ClientFields", "setting_field"]

_BY_NAME = {s.name: s for s in SETTINGS}
# Shown on the model when it is built (read from the environment then), as users expect of
# these; the others left at None are resolved by the client (argument, environment, default).
_FROM_ENV = frozenset({"endpoint", "base_url"})
# Not JSON: left out of serialised models.
_EXCLUDED = frozenset(
    {"backoff", "chat_template", "limits", "cost", "public_key", "worker_ca", "on_progress"}
)


def setting_field(name: str, **overrides: Any) -> Any:
    """A pydantic ``Field`` for the client setting ``name``, described by its doc.

    The default is None, which means "the client's default" (or the environment variable): a
    model neither repeats the defaults nor pins them into its serialised form. ``endpoint`` and
    ``base_url`` are read from the environment when the model is built, so the model shows them.
    """
    spec = _BY_NAME[name]
    options: dict[str, Any] = {
        "description": f"{spec.doc} (default: {spec.shown}"
        + (f"; `{spec.env}`)" if spec.env else ")"),
        "exclude": name in _EXCLUDED,
    }
    options.update(overrides)
    if "default" in options or "default_factory" in options:
        return Field(**options)
    if name in _FROM_ENV and spec.env:
        env = spec.env
        return Field(default_factory=lambda: os.environ.get(env) or None, **options)
    return Field(default=None, **options)


class ClientFields(BaseModel):
    """The client settings of a framework model (``api_key`` is each model's own field)."""

    # hide_input_in_errors: a validation error must not quote the API key it was given.
    model_config = ConfigDict(
        populate_by_name=True, arbitrary_types_allowed=True, hide_input_in_errors=True
    )

    endpoint: str | None = setting_field("endpoint")
    base_url: str | None = setting_field("base_url")
    api: Api = setting_field("api", default="tgi")  # each model says its own default
    payload_format: PayloadFormat | None = setting_field("payload_format")
    signature_policy: SignaturePolicy | None = setting_field("signature_policy")
    public_key: PublicKeySource = setting_field("public_key")
    worker_ca: WorkerCA = setting_field("worker_ca")
    timeout: float | httpx.Timeout | None = setting_field("timeout")
    route_timeout: float | None = setting_field("route_timeout")
    deadline: float | None = setting_field("deadline")
    max_retries: int | None = setting_field("max_retries")
    backoff: Backoff | None = setting_field("backoff")
    cost: Cost = setting_field("cost")
    chat_template: ChatTemplate | None = setting_field("chat_template")
    recipes: tuple[Recipe, ...] | None = setting_field("recipes")
    limits: httpx.Limits | None = setting_field("limits")
    max_concurrency: int | None = setting_field("max_concurrency")
    embed_batch_size: int | None = setting_field("embed_batch_size")
    max_answer_bytes: int | None = setting_field("max_answer_bytes")
    max_event_bytes: int | None = setting_field("max_event_bytes")
    on_progress: ProgressListener | None = setting_field("on_progress")
