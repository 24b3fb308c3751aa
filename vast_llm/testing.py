"""A pytest plugin that runs the Vast emulator for your own tests (opt-in).

Enable it in a ``conftest.py``::

    pytest_plugins = ["vast_llm.testing"]

Then any test that asks for ``vast_emulator`` talks to a local autoscaler and workers with no
account and no network: the fixture sets ``VAST_BASE_URL``, ``VAST_API_KEY`` and
``VAST_ENDPOINT`` (and ``VAST_WORKER_CA`` when the workers speak HTTPS), so code that builds
its client from the environment runs unchanged::

    def test_my_chain(vast_emulator):
        llm = ChatVast()                     # or VastLLM(), Vast(), VastClient() ...
        assert chain_using(llm).invoke("hi")
        assert vast_emulator.worker_requests  # what reached the workers

One emulator serves the whole session (one fake worker serving both model APIs: TGI's
``/generate`` and the OpenAI-compatible routes, embeddings, rerank and score included, so every
client and model works with its default ``api``)
and is reset between tests. A test that needs another setup says so with a marker, which gets
it a fresh emulator (also serving both APIs unless ``api=`` says otherwise); any
:class:`~vast_llm.emulator.Emulator` argument works, a script included::

    @pytest.mark.vast_emulator(api="openai", workers=2, faults=["worker_500"])
    def test_recovers(vast_emulator): ...

    @pytest.mark.vast_emulator(tls=True, cold_workers=True, activation_delay=0.5)
    def test_like_production(vast_emulator): ...  # HTTPS workers that start cold

    @pytest.mark.vast_emulator(script=[ToolCall("search"), "Paris."], faults=["worker_500"])
    def test_agent(vast_emulator):
        ...
        vast_emulator.assert_all_scripted_used()
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .emulator import Emulator

__all__ = ["vast_emulator"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "vast_emulator(**options): run this test's vast_emulator with these Emulator options "
        "(api, workers, faults, script, reasoning, ...)",
    )


@pytest.fixture(scope="session")
def _vast_emulator_shared() -> Iterator[Emulator]:
    with Emulator(api="both").serve() as emulator:
        yield emulator


@pytest.fixture
def vast_emulator(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Emulator]:
    """A running emulator, with VAST_BASE_URL, VAST_API_KEY and VAST_ENDPOINT pointing at it,
    and VAST_WORKER_CA holding its workers' CA (PEM text) when they speak HTTPS."""
    marker = request.node.get_closest_marker("vast_emulator")
    dedicated = marker is not None and bool(marker.kwargs)
    if dedicated:
        assert marker is not None
        emulator = Emulator(**{"api": "both", **marker.kwargs}).start()
    else:
        emulator = request.getfixturevalue("_vast_emulator_shared")
        emulator.reset()
    monkeypatch.setenv("VAST_BASE_URL", emulator.base_url)
    monkeypatch.setenv("VAST_API_KEY", emulator.api_key)
    monkeypatch.setenv("VAST_ENDPOINT", emulator.endpoint)
    if emulator.worker_ca is not None:
        monkeypatch.setenv("VAST_WORKER_CA", emulator.worker_ca)
    else:  # plain-HTTP workers: a CA from the surrounding environment has no business here
        monkeypatch.delenv("VAST_WORKER_CA", raising=False)
    yield emulator
    if dedicated:
        emulator.stop()
