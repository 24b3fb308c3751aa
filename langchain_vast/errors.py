"""The errors ChatVast and VastLLM raise: LangChain's model errors that are also vast_llm's.

Each class below is both a ``langchain_core.exceptions`` model error and the ``vast_llm`` error
it stands for, so code that catches either keeps working::

    from langchain_core.exceptions import ModelRateLimitError
    from vast_llm import WorkerError

    try:
        llm.invoke("...")
    except ModelRateLimitError as exc:  # LangChain's way...
        assert isinstance(exc, WorkerError)  # ...and ours: .status_code, .body, .worker_url
        assert isinstance(exc.__cause__, WorkerError)  # the core error as raised

Which class stands for which failure (class, LangChain error, vast_llm error)::

    VastModelAuthenticationError     ModelAuthenticationError           AuthenticationError
    VastModelPermissionDeniedError   ModelPermissionDeniedError         AuthenticationError
    NoWorkerReadyError               ModelTimeoutError                  NoWorkerReady
    EndpointStoppedError             ModelAPIError (not retryable)      EndpointStopped
    RouteTimeoutError                ModelTimeoutError                  RouteError
    RouteConnectionError             ModelConnectionError               RouteError
    RouteInvalidRequestError         ModelInvalidRequestError           RouteError
    RoutePermissionDeniedError       ModelPermissionDeniedError         RouteError
    RouteNotFoundError               ModelNotFoundError                 RouteError
    RouteRateLimitError              ModelRateLimitError                RouteError
    RouteAPIError                    ModelAPIError                      RouteError
    WorkerInvalidRequestError        ModelInvalidRequestError           WorkerError
    WorkerContextOverflowError       ContextOverflowError               WorkerError
    WorkerPermissionDeniedError      ModelPermissionDeniedError         WorkerError
    WorkerNotFoundError              ModelNotFoundError                 WorkerError
    WorkerRateLimitError             ModelRateLimitError                WorkerError
    WorkerAPIError                   ModelAPIError                      WorkerError
    WorkerStreamAPIError             ModelAPIError (not retryable)      WorkerStreamError
    VastModelTimeoutError            ModelTimeoutError                  VastTimeout
    VastModelConnectionError         ModelConnectionError               VastConnectionError

``ConfigError`` and ``SignatureError`` reach LangChain users as they are.
"""

from __future__ import annotations

from langchain_core.exceptions import (
    ContextOverflowError,
    ModelAPIError,
    ModelAuthenticationError,
    ModelConnectionError,
    ModelInvalidRequestError,
    ModelNotFoundError,
    ModelPermissionDeniedError,
    ModelRateLimitError,
    ModelTimeoutError,
)

from vast_llm import (
    AuthenticationError,
    EndpointStopped,
    NoWorkerReady,
    RouteError,
    VastConnectionError,
    VastTimeout,
    WorkerError,
    WorkerStreamError,
)

__all__ = [
    "EndpointStoppedError",
    "NoWorkerReadyError",
    "RouteAPIError",
    "RouteConnectionError",
    "RouteInvalidRequestError",
    "RouteNotFoundError",
    "RoutePermissionDeniedError",
    "RouteRateLimitError",
    "RouteTimeoutError",
    "VastModelAuthenticationError",
    "VastModelConnectionError",
    "VastModelPermissionDeniedError",
    "VastModelTimeoutError",
    "WorkerAPIError",
    "WorkerContextOverflowError",
    "WorkerInvalidRequestError",
    "WorkerNotFoundError",
    "WorkerPermissionDeniedError",
    "WorkerRateLimitError",
    "WorkerStreamAPIError",
]


class VastModelAuthenticationError(ModelAuthenticationError, AuthenticationError):
    """The autoscaler rejected the API key (check ``VAST_API_KEY``)."""


class VastModelPermissionDeniedError(ModelPermissionDeniedError, AuthenticationError):
    """The autoscaler refused this key access to the endpoint (HTTP 403)."""


class NoWorkerReadyError(ModelTimeoutError, NoWorkerReady):
    """No worker became ready before the deadline (``.status`` is the router's last)."""


class EndpointStoppedError(ModelAPIError, EndpointStopped):
    """The endpoint is stopped: start it in the Vast.ai console (retrying will not help)."""

    is_retryable = False


class RouteTimeoutError(ModelTimeoutError, RouteError):
    """The autoscaler did not answer in time, again and again."""


class RouteConnectionError(ModelConnectionError, RouteError):
    """The autoscaler could not be reached, again and again."""


class RouteInvalidRequestError(ModelInvalidRequestError, RouteError):
    """The autoscaler refused the route request (HTTP 400, 413 or 422)."""


class RoutePermissionDeniedError(ModelPermissionDeniedError, RouteError):
    """The autoscaler refused access (HTTP 403)."""


class RouteNotFoundError(ModelNotFoundError, RouteError):
    """The autoscaler knows no such endpoint (HTTP 404): check the endpoint's name."""


class RouteRateLimitError(ModelRateLimitError, RouteError):
    """The autoscaler kept answering 429."""


class RouteAPIError(ModelAPIError, RouteError):
    """The autoscaler kept failing (HTTP 5xx)."""


class WorkerInvalidRequestError(ModelInvalidRequestError, WorkerError):
    """The worker could not take the request (HTTP 400, 413 or 422; see ``.body``)."""


class WorkerContextOverflowError(ContextOverflowError, WorkerError):
    """The prompt and the answer do not fit the served model's context window."""


class WorkerPermissionDeniedError(ModelPermissionDeniedError, WorkerError):
    """The worker refused the request (HTTP 403)."""


class WorkerNotFoundError(ModelNotFoundError, WorkerError):
    """The worker has no such route (HTTP 404): check ``api=`` for the endpoint's template."""


class WorkerRateLimitError(ModelRateLimitError, WorkerError):
    """The workers kept answering 429 (overloaded)."""


class WorkerAPIError(ModelAPIError, WorkerError):
    """The worker failed (HTTP 5xx), or refused the assignment (HTTP 401)."""


class WorkerStreamAPIError(ModelAPIError, WorkerStreamError):
    """The answer was cut, malformed or carried an error event after output was handed out
    (not retryable: the worker may have done the work, and output reached the caller)."""

    is_retryable = False


class VastModelTimeoutError(ModelTimeoutError, VastTimeout):
    """A worker did not answer in time (before any output), or the deadline passed."""


class VastModelConnectionError(ModelConnectionError, VastConnectionError):
    """A worker could not be reached, again and again."""
