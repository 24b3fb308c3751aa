"""What VastLLM and ChatVast share: settings fields, lazily built clients, parameters, errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import LangSmithParams
from langchain_core.utils import secret_from_env
from pydantic import Field, SecretStr

from vast_llm import (
    AuthenticationError,
    Completion,
    EndpointStopped,
    NoWorkerReady,
    RouteError,
    Usage,
    VastConnectionError,
    VastError,
    VastTimeout,
    WorkerError,
    WorkerStreamError,
)
from vast_llm.fields import ClientModel
from vast_llm.integration import (
    call_params,
    common_finish_reason,
)

from . import errors

if TYPE_CHECKING:
    pass

__all__ = ["SAMPLING", "VastFields", "estimate_tokens", "lc_errors"]

SAMPLING = ("temperature", "top_p", "top_k", "repetition_penalty", "seed")


def estimate_tokens(text: str) -> int:
    """About how many tokens ``text`` is: a token per four ASCII characters, one per other."""
    ascii_chars = len(text.encode("ascii", "ignore"))
    return -(-ascii_chars // 4) + (len(text) - ascii_chars)


class VastFields(ClientModel):
    """Client settings (every one of vast_llm's, with the same names and defaults), and the
    generation parameters common to the LangChain models."""

    api_key: SecretStr | None = Field(default_factory=secret_from_env("VAST_API_KEY", default=None))
    """Vast.ai API key (``VAST_API_KEY``); sent to the autoscaler only, never to a worker."""
    model_name: str | None = Field(default=None, alias="model")
    """The model name sent to OpenAI-compatible workers (optional) and reported in metadata."""
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    stop: list[str] | None = None
    """Stop sequences: sent to the worker and also cut on the client."""
    streaming: bool = False
    """Stream even in ``invoke`` (tokens reach callbacks as they come)."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Extra parameters sent to the model server as they are."""

    def _params(
        self,
        stop: list[str] | None,
        kwargs: dict[str, Any],
        max_tokens: int,
        fields: tuple[str, ...] = SAMPLING,
    ) -> dict[str, Any]:
        """Parameters for one call: fields, then model_kwargs, then call kwargs; per-call
        settings (``timeout``...) ride along for the client, which keeps them out of the
        payload."""
        return call_params(
            self,
            max_tokens,
            self.model_kwargs,
            kwargs,
            [*(self.stop or []), *(stop or [])],
            model_name=self.model_name,
            openai=self.api == "openai",
            aliases={"request_timeout": "timeout"},
            fields=fields,
        )

    def get_num_tokens(self, text: str) -> int:
        """About how many tokens ``text`` is (no tokenizer download, no network).

        The served model's tokenizer is not known here, so this is an estimate: a token per
        four ASCII characters and one per other character (CJK text, emoji and accented
        letters take a token or more each in common tokenizers), rounded up. It errs high on
        English prose. For exact counts pass ``custom_get_token_ids`` (e.g. a ``tokenizers``
        or ``tiktoken`` encoder's ``encode``).
        """
        custom = getattr(self, "custom_get_token_ids", None)  # a LangChain model's field
        if custom is not None:
            return len(custom(text))
        return estimate_tokens(text)

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
            ls_model_name=kwargs.get("model") or self.model_name or self._endpoint() or "vast",
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

    def _endpoint(self) -> str | None:
        return self.endpoint

    def _sampling_identity(self) -> dict[str, Any]:
        return {
            "endpoint": self._endpoint(),
            "base_url": self.base_url,
            "api": self.api,
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


def usage_dict(usage: Usage | None) -> dict[str, int]:
    return {} if usage is None else usage.to_dict()


def finish_info(reason: str | None) -> dict[str, Any]:
    """``finish_reason`` in OpenAI's words whatever the worker; TGI's own word kept aside."""
    common = common_finish_reason(reason)
    info: dict[str, Any] = {"finish_reason": common}
    if reason != common:
        info["native_finish_reason"] = reason
    return info


def completion_info(answer: Completion) -> dict[str, Any]:
    """An answer's facts for ``generation_info`` / ``response_metadata`` (the core's one shape:
    ``Completion.facts``)."""
    return answer.facts()


# -- errors ---------------------------------------------------------------------------------

_INVALID = {400, 413, 422}
_ROUTE_BY_STATUS: dict[int, type[VastError]] = {
    **dict.fromkeys(_INVALID, errors.RouteInvalidRequestError),
    403: errors.RoutePermissionDeniedError,
    404: errors.RouteNotFoundError,
    429: errors.RouteRateLimitError,
}
_WORKER_BY_STATUS: dict[int, type[VastError]] = {
    **dict.fromkeys(_INVALID, errors.WorkerInvalidRequestError),
    401: errors.WorkerAPIError,  # the worker refused the assignment: not the user's key
    403: errors.WorkerPermissionDeniedError,
    404: errors.WorkerNotFoundError,
    429: errors.WorkerRateLimitError,
}


def _model_error_for(exc: VastError) -> type[VastError] | None:
    """The class of :mod:`langchain_vast.errors` that stands for ``exc`` (None: raise as is)."""
    if isinstance(exc, EndpointStopped):
        return errors.EndpointStoppedError
    if isinstance(exc, WorkerStreamError):
        return errors.WorkerStreamAPIError
    if isinstance(exc, NoWorkerReady):
        return errors.NoWorkerReadyError
    if isinstance(exc, AuthenticationError):
        if exc.status_code == 403:
            return errors.VastModelPermissionDeniedError
        return errors.VastModelAuthenticationError
    if isinstance(exc, VastTimeout):
        return errors.VastModelTimeoutError
    if isinstance(exc, VastConnectionError):
        return errors.VastModelConnectionError
    status = getattr(exc, "status_code", None) or 0
    if isinstance(exc, RouteError):
        if isinstance(exc.__cause__, VastTimeout):
            return errors.RouteTimeoutError
        if isinstance(exc.__cause__, VastConnectionError):
            return errors.RouteConnectionError
        return _ROUTE_BY_STATUS.get(status, errors.RouteAPIError if status >= 500 else None)
    if isinstance(exc, WorkerError):
        if status in (400, 422) and "context" in exc.message.lower():
            return errors.WorkerContextOverflowError
        return _WORKER_BY_STATUS.get(status, errors.WorkerAPIError if status >= 500 else None)
    return None


def to_model_error(exc: VastError) -> Exception:
    """The LangChain model error for a core error (the core error stays its cause)."""
    cls = _model_error_for(exc)
    if cls is None:
        return exc
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
