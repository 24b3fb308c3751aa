"""vast_llm: a Vast.ai Serverless endpoint as a verified, retrying LLM client.

The routing core: obtains a worker per call from the autoscaler, verifies the signed
assignment before any worker is contacted, calls the worker (TGI or OpenAI-compatible), streams
tokens, retries what is safe to retry and raises typed errors (see :mod:`vast_llm._errors`).
"""

from ._client import AsyncStream, AsyncVastClient, Stream, VastClient
from ._config import ClientOptions, Settings
from ._embed import EmbeddingBatch, Embeddings, Ranked, Reranking, Scores
from ._errors import (
    AuthenticationError,
    ConfigError,
    EndpointStopped,
    NoWorkerReady,
    RouteError,
    SignatureError,
    VastConnectionError,
    VastError,
    VastSecurityWarning,
    VastTimeout,
    WorkerCertificateError,
    WorkerError,
    WorkerStreamError,
)
from ._progress import Progress, observe
from ._raw import AsyncEventStream, Event, EventStream, WorkerAnswer
from ._retry import Backoff
from ._session import AsyncVastSession, VastSession
from ._tls import ssl_context, worker_ssl_context
from ._transport import AsyncVastTransport, VastTransport
from ._types import Assignment, Chunk, Completion, RouteInfo, ToolCall, ToolCallDelta, Usage
from ._version import __version__

__all__ = [
    "Assignment",
    "AsyncEventStream",
    "AsyncStream",
    "AsyncVastClient",
    "AsyncVastSession",
    "AsyncVastTransport",
    "AuthenticationError",
    "Backoff",
    "Chunk",
    "ClientOptions",
    "Completion",
    "ConfigError",
    "EmbeddingBatch",
    "Embeddings",
    "EndpointStopped",
    "Event",
    "EventStream",
    "NoWorkerReady",
    "Progress",
    "Ranked",
    "Reranking",
    "RouteError",
    "RouteInfo",
    "Scores",
    "Settings",
    "SignatureError",
    "Stream",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
    "VastClient",
    "VastConnectionError",
    "VastError",
    "VastSecurityWarning",
    "VastSession",
    "VastTimeout",
    "VastTransport",
    "WorkerAnswer",
    "WorkerCertificateError",
    "WorkerError",
    "WorkerStreamError",
    "__version__",
    "observe",
    "ssl_context",
    "worker_ssl_context",
]
