"""The demo behind ``make demo`` and ``vast-llm demo``: the three packages at work.

An application of ``vast_llm``, ``langchain_vast`` and ``llamaindex_vast``, shipped in the same
distribution but outside the core package, so that ``vast_llm`` never imports a framework. By
default it starts the local emulator in production's shape (HTTPS workers under a CA like Vast's,
a cold start, a reasoning model's answers) and shows a LangChain chain streaming, a reasoning
answer, a LlamaIndex RAG query embedded, reranked and answered through Vast, the route facts of
every request, a tampered assignment rejected and a failed worker recovered. With ``endpoint``
it runs the same steps against Vast.ai. What the client is doing while a worker cold-starts or
a request is retried comes from :class:`vast_llm.Progress` events, never from log text.

Run it with ``vast-llm demo`` (or ``python -m vast_llm_demo``); it needs the ``demo`` extra::

    pip install "vast-llm[demo]"
"""

from __future__ import annotations

import importlib.util

__all__ = ["missing_extras", "run_demo"]

# The extras of vast-llm the demo needs: what each brings, and a module that shows it is there.
_NEEDS = {
    "langchain": "langchain_core",
    "llamaindex": "llama_index.core",
    "emulator": "starlette",
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent missing, or a module blocked in sys.modules
        return False


def missing_extras(local: bool = True) -> list[str]:
    """The extras of ``vast-llm`` the demo needs and that are not installed (the emulator's only
    when it runs locally)."""
    needed = [extra for extra in _NEEDS if local or extra != "emulator"]
    return [extra for extra in needed if not _installed(_NEEDS[extra])]


def _install_hint(missing: list[str]) -> str:
    extras = "demo" if set(missing) == set(_NEEDS) else ",".join(missing)
    return f'pip install "vast-llm[{extras}]"'


def run_demo(endpoint: str | None = None, api: str = "openai", model: str = "auto") -> int:
    """Run the demo (on the local emulator, or on ``endpoint`` at Vast.ai); returns the exit
    status.

    Raises:
        ImportError: an extra the demo needs is not installed (the message names the
            ``pip install`` to run).
    """
    missing = missing_extras(local=endpoint is None)
    if missing:
        raise ImportError(
            f"the demo needs the {', '.join(missing)} extra{'s' if len(missing) > 1 else ''} "
            f"of vast-llm: {_install_hint(missing)}"
        )
    from ._steps import run

    return run(endpoint=endpoint, api=api, model=model)
