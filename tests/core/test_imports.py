"""The public surface, and the one-way dependency arrows."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import vast_llm


def test_public_names_are_pinned() -> None:
    assert vast_llm.__all__ == sorted(vast_llm.__all__)
    assert set(vast_llm.__all__) == {
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
    }
    for name in vast_llm.__all__:
        assert getattr(vast_llm, name) is not None


def _modules_after(code: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return set(result.stdout.split())


FRAMEWORKS = {
    "langchain",
    "langchain_core",
    "llama_index",
    "langchain_vast",
    "llamaindex_vast",
    "vast_llm_demo",
}


def test_core_imports_no_framework_and_no_server() -> None:
    modules = _modules_after("import vast_llm; vast_llm.VastClient")
    banned = FRAMEWORKS | {"starlette", "uvicorn"}
    assert not {m.split(".")[0] for m in modules} & banned


def test_the_command_and_the_emulator_import_no_framework() -> None:
    modules = _modules_after("import vast_llm.cli, vast_llm.emulator, vast_llm.testing")
    assert not {m.split(".")[0] for m in modules} & FRAMEWORKS


def _imports(path: pathlib.Path) -> list[tuple[str, bool]]:
    """(module, at the top level) for every import statement in a source file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, id(node) in top))
    return found


def test_no_core_module_names_a_framework() -> None:
    """Read, not run: no code path of vast_llm imports a framework or a wrapper. The demo, an
    application of all three, lives outside (vast_llm_demo); the CLI's demo command imports it
    when it runs, never at import."""
    root = pathlib.Path(vast_llm.__file__).parent
    assert not (root / "demo").exists()
    for path in sorted(root.rglob("*.py")):
        for module, top_level in _imports(path):
            package = module.split(".")[0]
            if package == "vast_llm_demo" and path.name == "cli.py" and not top_level:
                continue
            assert package not in FRAMEWORKS, f"{path.relative_to(root)} imports {module}"


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
    )

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
        "boom",
        500,
        "x",
        "http://w",
    )
