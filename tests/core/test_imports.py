"""The public surface, and the one-way dependency arrows."""

from __future__ import annotations

import subprocess
import sys

import vast_llm


def test_public_names_are_pinned() -> None:
    assert vast_llm.__all__ == sorted(vast_llm.__all__)
    assert set(vast_llm.__all__) == {
        "Assignment", "AsyncEventStream", "AsyncStream", "AsyncVastClient", "AsyncVastSession",
        "AsyncVastTransport",
        "AuthenticationError", "Backoff", "Chunk", "ClientOptions", "Completion", "ConfigError",
        "EmbeddingBatch", "Embeddings", "EndpointStopped", "Event", "EventStream",
        "NoWorkerReady", "Progress", "Ranked", "Reranking", "RouteError", "RouteInfo", "Scores",
        "Settings", "SignatureError", "Stream", "ToolCall", "ToolCallDelta", "Usage",
        "VastClient", "VastConnectionError", "VastError", "VastSecurityWarning", "VastSession",
        "VastTimeout",
        "VastTransport", "WorkerAnswer", "WorkerCertificateError", "WorkerError",
        "WorkerStreamError", "__version__", "observe", "ssl_context", "worker_ssl_context",
    }  # fmt: skip
    for name in vast_llm.__all__:
        assert getattr(vast_llm, name) is not None


def _modules_after(code: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print('\\n'.join(sys.modules))"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return set(result.stdout.split())


def test_core_imports_no_framework_and_no_server() -> None:
    modules = _modules_after("import vast_llm; vast_llm.VastClient")
    banned = {"langchain_core", "llama_index", "starlette", "uvicorn", "langchain_vast",
              "llamaindex_vast"}  # fmt: skip
    assert not {m.split(".")[0] for m in modules} & banned


def test_errors_form_one_tree() -> None:
    from vast_llm import (
        AuthenticationError,
        ConfigError,
        EndpointStopped,
        NoWorkerReady,
        RouteError,
        SignatureError,
        VastConnectionError,
        VastError,
        VastTimeout,
        WorkerError,
        WorkerStreamError,
    )  # fmt: skip

    assert issubclass(EndpointStopped, NoWorkerReady) and issubclass(NoWorkerReady, RouteError)
    assert issubclass(AuthenticationError, RouteError) and issubclass(
        VastTimeout, VastConnectionError
    )
    assert issubclass(WorkerStreamError, WorkerError)
    for cls in (ConfigError, RouteError, SignatureError, WorkerError, VastConnectionError):
        assert issubclass(cls, VastError) and cls.__doc__


def test_errors_pickle() -> None:
    import pickle

    from vast_llm import WorkerError

    error = WorkerError("boom", status_code=500, body="x", worker_url="http://w")
    again = pickle.loads(pickle.dumps(error))
    assert (again.message, again.status_code, again.body, again.worker_url) == (
        "boom", 500, "x", "http://w"
    )  # fmt: skip
