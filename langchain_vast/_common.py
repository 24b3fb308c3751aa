"""What VastLLM and ChatVast share: settings fields, lazily built clients, parameters, errors."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from typing import Any, Literal

from langchain_core.exceptions import (
    ContextOverflowError,
    ModelAPIError,
    ModelAuthenticationError,
    ModelConnectionError,
    ModelError,
    ModelInvalidRequestError,
    ModelNotFoundError,
    ModelPermissionDeniedError,
    ModelRateLimitError,
    ModelTimeoutError,
)
from langchain_core.language_models import LangSmithParams
from langchain_core.utils import secret_from_env
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, model_validator

from vast_llm import (
    AsyncVastClient,
    AuthenticationError,
    Backoff,
    EndpointStopped,
    NoWorkerReady,
    RouteError,
    VastClient,
    VastConnectionError,
    VastError,
    VastTimeout,
    WorkerError,
    WorkerStreamError,
)
from vast_llm._pair import ClientPair, model_sampling, sampling_params
from vast_llm._types import Completion, RouteInfo, Usage

__all__ = ["VastFields", "lc_errors", "route_metadata"]


def _env(name: str) -> Any:
    return lambda: os.environ.get(name) or None


class VastFields(BaseModel):
    """Connection, retry and sampling settings common to the LangChain models."""

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)

    endpoint: str | None = Field(default_factory=_env("VAST_ENDPOINT"))
    """Endpoint name (``VAST_ENDPOINT``)."""
    api_key: SecretStr | None = Field(default_factory=secret_from_env("VAST_API_KEY", default=None))
    """Vast.ai API key (``VAST_API_KEY``); sent to the autoscaler only, never to a worker."""
    base_url: str | None = Field(default_factory=_env("VAST_BASE_URL"))
    """The autoscaler (``VAST_BASE_URL``, default ``https://run.vast.ai``)."""
    model_name: str | None = Field(default=None, alias="model")
    """The model name sent to OpenAI-compatible workers (optional) and reported in metadata."""
    payload_format: Literal["wrapped", "flat"] = "wrapped"
    """``wrapped`` for current workers, ``flat`` for legacy ones."""
    signature_policy: Literal["strict", "warn", "off"] | None = None
    """``strict`` (default), ``warn`` or ``off`` (``VAST_SIGNATURE_POLICY``)."""
    public_key: str | None = None
    """Pin the autoscaler's key: PEM text or a path (``VAST_PUBLIC_KEY``)."""
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    stop: list[str] | None = None
    """Stop sequences: sent to the worker and also cut on the client."""
    streaming: bool = False
    """Stream even in ``invoke`` (tokens reach callbacks as they come)."""
    timeout: float | None = None
    """Seconds a worker may stay silent (default 120)."""
    max_retries: int = 3
    """Retries of a failed attempt, each on a fresh route, before the first byte."""
    deadline: float | None = None
    """Seconds to obtain a worker that starts answering, waits and retries included (300)."""
    backoff: Backoff | None = Field(default=None, exclude=True)
    """Waits between attempts and re-polls (default :class:`vast_llm.Backoff`)."""
    max_concurrency: int = 16
    """Default bound on concurrent requests in ``batch`` / ``abatch``."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Extra parameters sent to the model server as they are."""
    http_client: Any = Field(default=None, exclude=True)
    """An ``httpx.Client`` for the route and worker calls (not serialised)."""
    http_async_client: Any = Field(default=None, exclude=True)
    """An ``httpx.AsyncClient`` for the async calls, or an ``aiohttp.ClientSession`` to run
    them on aiohttp directly (``vast-llm[aiohttp]``; not serialised)."""

    _pair: ClientPair = PrivateAttr()

    @model_validator(mode="before")
    @classmethod
    def _extra_to_model_kwargs(cls, values: Any) -> Any:
        """Unknown keyword arguments go to ``model_kwargs``, with a warning."""
        if not isinstance(values, dict):
            return values
        known = set()
        for name, field in cls.model_fields.items():
            known.add(name)
            if field.alias:
                known.add(field.alias)
            if field.validation_alias and hasattr(field.validation_alias, "choices"):
                known.update(str(c) for c in field.validation_alias.choices)
        extra = dict(values.get("model_kwargs") or {})
        for name in list(values):
            if name not in known:
                warnings.warn(
                    f"{name!r} is not a {cls.__name__} field: it is sent to the model server "
                    "through model_kwargs",
                    stacklevel=4,
                )
                extra[name] = values.pop(name)
        if extra:
            values["model_kwargs"] = extra
        return values

    @model_validator(mode="after")
    def _build_clients(self) -> Any:
        # Settings are checked here (a missing endpoint or key fails at construction); the
        # HTTP clients are built on first use: no network in the constructor.
        self._pair = ClientPair.from_model(
            self, http_client=self.http_client, http_async_client=self.http_async_client
        )
        return self

    @property
    def client(self) -> VastClient:
        """The sync routing client (built on first use, then reused)."""
        return self._pair.sync

    @property
    def async_client(self) -> AsyncVastClient:
        """The async routing client (built on first use, then reused)."""
        return self._pair.async_

    def _params(
        self, stop: list[str] | None, kwargs: dict[str, Any], max_tokens: int
    ) -> dict[str, Any]:
        """Sampling parameters for one call: fields, then model_kwargs, then call kwargs."""
        return sampling_params(
            model_sampling(self, max_tokens),
            self.model_kwargs,
            kwargs,
            [*(self.stop or []), *(stop or [])],
            model=self.model_name,
            openai=getattr(self, "api", "tgi") == "openai",
        )

    @property
    def lc_secrets(self) -> dict[str, str]:
        return {"api_key": "VAST_API_KEY"}

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return True

    def _ls_params(
        self, model_type: str, max_tokens: int, stop: list[str] | None, kwargs: dict[str, Any]
    ) -> LangSmithParams:
        """Tracing parameters: a per-call ``model`` or ``temperature`` wins over the fields."""
        params = LangSmithParams(
            ls_provider="vast",
            ls_model_name=kwargs.get("model") or self.model_name or self.endpoint or "vast",
            ls_model_type=model_type,  # type: ignore[typeddict-item]
            ls_max_tokens=max_tokens,
        )
        temperature = kwargs.get("temperature", self.temperature)
        if temperature is not None:
            params["ls_temperature"] = temperature
        stops = stop or kwargs.get("stop") or self.stop
        if stops:
            params["ls_stop"] = list(stops)
        return params

    def _sampling_identity(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "base_url": self.base_url,
            "api": getattr(self, "api", None),
            "model_name": self.model_name,
            "payload_format": self.payload_format,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repetition_penalty": self.repetition_penalty,
            "seed": self.seed,
            "stop": self.stop,
            "model_kwargs": self.model_kwargs,
        }


def route_metadata(route: RouteInfo | None, ttft: float | None = None) -> dict[str, Any]:
    """The route facts as plain data for ``generation_info`` / ``response_metadata``."""
    return {} if route is None else route.to_dict(ttft)


def usage_dict(usage: Usage | None) -> dict[str, int]:
    return {} if usage is None else usage.to_dict()


def completion_info(answer: Completion) -> dict[str, Any]:
    return {
        "finish_reason": answer.finish_reason,
        "model_name": answer.model,
        "vast": route_metadata(answer.route, answer.time_to_first_token),
    }


# -- errors ---------------------------------------------------------------------------------

_BY_STATUS: dict[int, type[ModelError]] = {
    400: ModelInvalidRequestError,
    401: ModelAuthenticationError,
    403: ModelPermissionDeniedError,
    404: ModelNotFoundError,
    413: ModelInvalidRequestError,
    422: ModelInvalidRequestError,
    429: ModelRateLimitError,
}


def _model_error_for(exc: VastError) -> type[ModelError] | None:
    if isinstance(exc, (EndpointStopped, WorkerStreamError)):
        return ModelAPIError
    if isinstance(exc, NoWorkerReady):
        return ModelTimeoutError
    if isinstance(exc, AuthenticationError):
        return ModelPermissionDeniedError if exc.status_code == 403 else ModelAuthenticationError
    if isinstance(exc, VastTimeout) or isinstance(exc.__cause__, VastTimeout):
        return ModelTimeoutError
    if isinstance(exc, VastConnectionError) or isinstance(exc.__cause__, VastConnectionError):
        return ModelConnectionError
    if isinstance(exc, (RouteError, WorkerError)):
        status = exc.status_code or 0
        if isinstance(exc, WorkerError) and status == 401:
            return ModelAPIError  # the worker refused the assignment: not the user's key
        if status in (400, 422) and "context" in exc.message.lower():
            return ContextOverflowError
        return _BY_STATUS.get(status, ModelAPIError if status >= 500 else None)
    return None


_COMBINED: dict[tuple[type[ModelError], type[VastError]], type[Exception]] = {}


def _combined(model_error: type[ModelError], vast_error: type[VastError]) -> type[Exception]:
    # One class that is both: code catching LangChain's model errors or ours keeps working.
    known = _COMBINED.get((model_error, vast_error))
    if known is not None:
        return known
    name = f"Vast{model_error.__name__}"
    attrs: dict[str, Any] = {"__module__": __name__, "__doc__": model_error.__doc__}
    if issubclass(vast_error, (EndpointStopped, WorkerStreamError)):
        attrs["is_retryable"] = False  # a stopped endpoint, or output already handed out
    combined = _COMBINED[(model_error, vast_error)] = type(name, (model_error, vast_error), attrs)
    return combined


def to_model_error(exc: VastError) -> Exception:
    """The LangChain model error for a core error (the core error stays its cause)."""
    model_error = _model_error_for(exc)
    if model_error is None:
        return exc
    cls = _combined(model_error, type(exc))
    mapped = cls.__new__(cls)
    mapped.__dict__.update(exc.__dict__)
    mapped.args = exc.args
    return mapped


@contextlib.contextmanager
def lc_errors() -> Iterator[None]:
    """Re-raise core errors as LangChain model errors (``raise ... from`` the core error)."""
    try:
        yield
    except VastError as exc:
        mapped = to_model_error(exc)
        if mapped is exc:
            raise
        raise mapped from exc
