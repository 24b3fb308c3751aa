"""Shared fixtures: emulators over real loopback sockets, and one test body for sync and async."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import pathlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings

from vast_llm import AsyncVastClient, Backoff, Chunk, VastClient
from vast_llm.emulator import Emulator

# The plugins langchain-tests' standard tests use (snapshots, a benchmark, VCR markers), where
# langchain-tests is installed (`make test-lowest` leaves it out); pyproject.toml's addopts names
# the others, since plugins are not auto-loaded.
pytest_plugins = [
    plugin
    for plugin in ("syrupy", "pytest_benchmark.plugin", "pytest_recording.plugin")
    if importlib.util.find_spec(plugin.split(".")[0]) is not None
]

SHARED = pathlib.Path(__file__).resolve().parent / "data"
ROOT = SHARED.parents[1]
SDK_PYTHON = ROOT / ".venv-vastai" / "bin" / "python"

# `make test` sets VAST_LLM_TEST_ALL=1: the sweeps (property tests, the load test) run at full
# size there; a plain `pytest` runs the same checks on fewer examples and requests.
FULL = os.environ.get("VAST_LLM_TEST_ALL") == "1"
# `make test` explores the same examples every run, so a landing never hangs on luck;
# `make fuzz` (HYPOTHESIS_PROFILE=explore) searches anew, and longer.
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
hypothesis_settings.register_profile("explore", max_examples=5000, print_blob=True)
hypothesis_settings.load_profile(PROFILE)


def examples(written: int) -> int:
    """How many examples a property test runs: as written under ``make test``, a fifth of that
    (at least 20) in a plain ``pytest``, and the explore profile's 5,000 under ``make fuzz``
    (an explicit count would otherwise override the profile's)."""
    if PROFILE == "explore":
        return int(hypothesis_settings.get_profile("explore").max_examples)
    return written if FULL else max(20, written // 5)


def sweep(full: int, quick: int) -> int:
    """A sweep's size: ``full`` under ``make test``, ``quick`` in a plain ``pytest``."""
    return full if FULL else quick


# Waits short enough that retry and polling tests take milliseconds.
FAST = Backoff(base=0.005, cap=0.02, poll_first=0.005, poll_cap=0.02, retry_after_cap=0.02)


# What the environment-bound markers need, and how to get it. A plain `pytest` skips those tests
# when it is missing; `make test` builds both first and sets VAST_LLM_TEST_ALL=1, which turns a
# missing piece back into a failure (the tests' own message says what to run).
_NEEDS = {
    "model": "needs the real SmolLM2 model: run `make model` (make test does)",
    "vastai_sdk": "needs the official vastai SDK in .venv-vastai: run `make sdk` (make test does)",
}


def _missing(marker: str) -> bool:
    if marker == "vastai_sdk":
        return not SDK_PYTHON.exists()
    from vast_llm.emulator import smollm2_available

    return not smollm2_available()


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """What ``-n auto`` (in addopts) means: workers for the suite or a folder of it (see below);
    none for chosen files, which take less time than starting workers does. xdist's own
    PYTEST_XDIST_AUTO_NUM_WORKERS, and ``-n N``, still decide when given."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # xdist reads it
    if any(pathlib.Path(arg.split("::")[0]).is_file() for arg in config.args):
        return 0
    # Twice the cores (at most four more): most of a socket test's time is spent waiting on
    # timers and loopback, not computing; a plain run on two cores took 131 s with two workers,
    # 93 s with four, 110 s with eight (each worker collects the suite again).
    cores = os.cpu_count() or 1
    return min(2 * cores, cores + 4)


# Whole programs and load runs (seconds each: over a quarter of a plain run's time, unmarked)
# prove what the unit and socket tests already cover piece by piece; `make test` runs them.
_SYSTEM = "a whole program or a load run: `make test` runs it (or `pytest -m system`)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("VAST_LLM_TEST_ALL") == "1":
        return
    run_system = (
        "system" in (config.getoption("markexpr") or "")
        or os.environ.get("VAST_LLM_TEST_SYSTEM") == "1"  # make test-lowest: on the floors too
    )
    missing: dict[str, bool] = {}
    for item in items:
        if not run_system and item.get_closest_marker("system") is not None:
            item.add_marker(pytest.mark.skip(reason=_SYSTEM))
            continue
        for marker, reason in _NEEDS.items():
            if item.get_closest_marker(marker) is None:
                continue
            if marker not in missing:
                missing[marker] = _missing(marker)
            if missing[marker]:
                item.add_marker(pytest.mark.skip(reason=reason))


def load_vectors(name: str) -> dict[str, Any]:
    return json.loads((SHARED / name).read_text())


@pytest.fixture(scope="session")
def tgi_session() -> Iterator[Emulator]:
    with Emulator(api="tgi", workers=2).serve() as emu:
        yield emu


@pytest.fixture(scope="session")
def openai_session() -> Iterator[Emulator]:
    with Emulator(api="openai", workers=2).serve() as emu:
        yield emu


@pytest.fixture
def tgi(tgi_session: Emulator) -> Iterator[Emulator]:
    """A running TGI emulator with no faults and an empty request log."""
    tgi_session.reset()
    yield tgi_session
    tgi_session.reset()


@pytest.fixture
def openai_emu(openai_session: Emulator) -> Iterator[Emulator]:
    """A running OpenAI-compatible emulator with no faults and an empty request log."""
    openai_session.reset()
    yield openai_session
    openai_session.reset()


def settings_for(emu: Emulator, **overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "endpoint": emu.endpoint,
        "api_key": emu.api_key,
        "base_url": emu.base_url,
        "backoff": FAST,
        "deadline": 10.0,
    }
    kwargs.update(overrides)
    return kwargs


class Driver:
    """One async face over both clients, so a test body runs against sync and async alike.

    The sync client runs in a worker thread (``asyncio.to_thread``), as sync code would.
    """

    def __init__(self, flavor: str, emu: Emulator, **overrides: Any) -> None:
        self.flavor = flavor
        self.emu = emu
        kwargs = settings_for(emu, **overrides)
        self.client: VastClient | AsyncVastClient = (
            VastClient(**kwargs) if flavor == "sync" else AsyncVastClient(**kwargs)
        )

    @property
    def sync(self) -> VastClient:
        assert isinstance(self.client, VastClient)
        return self.client

    @property
    def aio(self) -> AsyncVastClient:
        assert isinstance(self.client, AsyncVastClient)
        return self.client

    async def generate(self, prompt: str, **params: Any) -> Any:
        if self.flavor == "sync":
            return await asyncio.to_thread(self.sync.generate, prompt, **params)
        return await self.aio.generate(prompt, **params)

    async def chat(self, messages: list[dict[str, Any]], **params: Any) -> Any:
        if self.flavor == "sync":
            return await asyncio.to_thread(self.sync.chat, messages, **params)
        return await self.aio.chat(messages, **params)

    async def route(self, cost: float = 256) -> Any:
        if self.flavor == "sync":
            return await asyncio.to_thread(self.sync.route, cost)
        return await self.aio.route(cost)

    async def stream(self, prompt: str, **params: Any) -> tuple[list[Chunk], Any]:
        """All chunks, and the stream object (for its route facts and totals)."""
        return await self._stream("stream", prompt, params)

    async def stream_chat(
        self, messages: list[dict[str, Any]], **params: Any
    ) -> tuple[list[Chunk], Any]:
        return await self._stream("stream_chat", messages, params)

    async def stream_into(self, prompt: str, into: list[Chunk], **params: Any) -> Any:
        """Stream, appending chunks to ``into`` as they come (they survive an exception)."""
        if self.flavor == "sync":

            def run() -> Any:
                with self.sync.stream(prompt, **params) as stream:
                    for chunk in stream:
                        into.append(chunk)
                    return stream

            return await asyncio.to_thread(run)
        async with self.aio.stream(prompt, **params) as stream:
            async for chunk in stream:
                into.append(chunk)
            return stream

    async def _stream(
        self, method: str, arg: Any, params: dict[str, Any]
    ) -> tuple[list[Chunk], Any]:
        if self.flavor == "sync":

            def run() -> tuple[list[Chunk], Any]:
                with getattr(self.sync, method)(arg, **params) as stream:
                    return list(stream), stream

            return await asyncio.to_thread(run)
        async with getattr(self.aio, method)(arg, **params) as stream:
            return [chunk async for chunk in stream], stream

    async def aclose(self) -> None:
        if self.flavor == "sync":
            self.sync.close()
        else:
            await self.aio.aclose()


@pytest.fixture(params=["sync", "async"])
def flavor(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_driver(flavor: str) -> AsyncIterator[Any]:
    """``make_driver(emu, **settings)`` → a :class:`Driver` of this test's flavor."""
    drivers: list[Driver] = []

    def make(emu: Emulator, **overrides: Any) -> Driver:
        driver = Driver(flavor, emu, **overrides)
        drivers.append(driver)
        return driver

    yield make
    for driver in drivers:
        await driver.aclose()
