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

import difflib
import os
from typing import Any, ClassVar

import httpx
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)
from typing_extensions import Self

from ._apis import ChatTemplate
from ._client import AsyncVastClient, VastClient
from ._config import (
    SETTINGS,
    Api,
    Cost,
    PayloadFormat,
    PublicKeySource,
    SignaturePolicy,
)
from ._errors import ConfigError
from ._flow import worker_header_allowed
from ._progress import ProgressListener
from ._retry import Backoff
from ._session import AsyncVastSession, ModelSession, SessionPair, VastSession
from ._signing import Recipe
from ._tls import WorkerCA
from .integration import ClientPair, clients_for, config_error, settings_of

__all__ = ["ClientFields", "ClientModel", "checked_worker_headers", "setting_field"]

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


class ClientModel(ClientFields):
    """What every framework model of vast-llm shares, whatever its framework: the client
    settings, the caller's own HTTP clients, unknown arguments refused, settings checked at
    construction, the clients for the current settings, worker sessions, ``close``.

    A model's extra parameters for the model server go in the field named by
    ``_extra_parameters`` (the unknown-argument error points there).
    """

    _extra_parameters: ClassVar[str] = "model_kwargs"

    http_client: Any = Field(default=None, exclude=True)
    """An ``httpx.Client`` for the route and worker calls (not serialised)."""
    http_async_client: Any = Field(default=None, exclude=True)
    """An ``httpx.AsyncClient`` for the async calls, or an ``aiohttp.ClientSession`` to run
    them on aiohttp directly (``vast-llm[aiohttp]``; not serialised). Either belongs to one
    event loop; without one, the model keeps a pool per event loop."""

    _clients: ClientPair | None = PrivateAttr(default=None)
    _worker_session: SessionPair | None = PrivateAttr(default=None)

    def __init__(self, **kwargs: Any) -> None:
        try:
            super().__init__(**kwargs)
        except ValidationError as exc:
            raise config_error(exc) from None  # the documented ConfigError, not pydantic's

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown(cls, values: Any) -> Any:
        """Unknown keyword arguments are an error (a typo must not pass silently)."""
        if not isinstance(values, dict):
            return values
        known: set[str] = set()
        for name, info in cls.model_fields.items():
            known.add(name)
            if info.alias:
                known.add(info.alias)
            known.update(str(c) for c in getattr(info.validation_alias, "choices", None) or ())
        unknown = [name for name in values if name not in known]
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{cls.__name__} has no field {unknown[0]!r}{hint}. Parameters for the model "
                f"server that are not fields go in {cls._extra_parameters}={{...}}."
            )
        return values

    @model_validator(mode="after")
    def _check_settings(self) -> Any:
        # Settings are checked here (a missing endpoint or key fails at construction); the
        # HTTP clients are built on first use: no network in the constructor.
        self._pair()
        return self

    def _pair(self) -> ClientPair:
        """The clients for the model's current settings (edits and copies take effect)."""
        pair = clients_for(
            settings_of(self),
            http_client=self.http_client,
            http_async_client=self.http_async_client,
        )
        self._clients = pair  # keeps the shared pair alive while this model uses it
        return pair

    @property
    def client(self) -> VastClient | VastSession:
        """The sync routing client for the current settings (shared by equal models); in a
        model bound to a worker session (:meth:`session`), that session."""
        if self._worker_session is not None:
            return self._worker_session.sync
        return self._pair().sync

    @property
    def async_client(self) -> AsyncVastClient | AsyncVastSession:
        """The async routing client for the current settings (a pool per event loop); in a
        model bound to a worker session (:meth:`session`), that session."""
        if self._worker_session is not None:
            return self._worker_session.async_
        return self._pair().async_

    def session(
        self, *, lifetime: float = 300.0, cost: float | None = None, recreate: bool = True
    ) -> ModelSession[Self]:
        """A worker session: ``with model.session() as pinned:`` (or ``async with``) gives a
        copy of this model whose calls all go to one worker with no route call, until the
        block ends the session. Use ``pinned`` anywhere a model goes (an agent, a chain):
        each turn saves the route round trip and finds the conversation's prefix in the
        worker's cache. A worker that loses the session costs only that cache (a new one is
        made on a fresh route). ``lifetime`` must exceed the longest call (the worker may cut
        a call that outlives it); see :meth:`vast_llm.VastClient.session`."""
        return ModelSession(
            self._pair(), self._bound, lifetime=lifetime, cost=cost, recreate=recreate
        )

    def _bound(self, session: SessionPair) -> Self:
        pinned = self.model_copy()
        pinned._worker_session = session
        return pinned

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


def checked_worker_headers(headers: dict[str, str] | None) -> dict[str, str] | None:
    """A model's ``default_headers`` as given, refusing any that could carry a credential or
    is connection-level (these headers go to workers, rented machines)."""
    for name in headers or {}:
        if not worker_header_allowed(name):
            raise ConfigError(
                f"default_headers may not carry {name!r}: these headers go to workers, which "
                "must never see credentials (the API key goes to the autoscaler only)"
            )
    return headers
