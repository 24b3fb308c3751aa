"""The demo behind ``make demo`` / ``vast-llm demo``."""

from __future__ import annotations

__all__ = ["run_demo"]


def run_demo(endpoint: str | None = None, api: str = "openai", model: str = "auto") -> int:
    """Run the demo; returns the exit status."""
    raise RuntimeError("the demo is not built yet")
