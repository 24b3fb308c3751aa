"""Where the examples run: a real endpoint when VAST_ENDPOINT and VAST_API_KEY are set,
otherwise the local emulator (which then sets those variables for the example)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def vast_endpoint(api: str = "openai") -> Iterator[str]:
    """Yield where the example talks to ("Vast.ai" or the emulator's URL)."""
    if os.environ.get("VAST_ENDPOINT") and os.environ.get("VAST_API_KEY"):
        yield os.environ.get("VAST_BASE_URL", "https://run.vast.ai")
        return
    from vast_llm.emulator import Emulator

    model = os.environ.get("VAST_EMULATOR_MODEL", "fake")  # or "smollm2" (make model)
    with Emulator(api=api, model=model, workers=2).serve() as emu:
        os.environ.update(
            VAST_BASE_URL=emu.base_url, VAST_API_KEY=emu.api_key, VAST_ENDPOINT=emu.endpoint
        )
        try:
            yield emu.base_url
        finally:
            for name in ("VAST_BASE_URL", "VAST_API_KEY", "VAST_ENDPOINT"):
                os.environ.pop(name, None)
