"""The opt-in pytest plugin, tested the way pytest plugins are: with pytester."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


def test_fixture_points_the_environment_at_the_emulator(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["vast_llm.testing"]')
    pytester.makepyfile(
        """
        import os
        import pytest
        from vast_llm import VastClient

        def test_unchanged_code_runs_offline(vast_emulator):
            with VastClient() as client:  # everything from the environment
                assert client.generate("hi", max_tokens=3).text
            assert os.environ["VAST_BASE_URL"] == vast_emulator.base_url
            assert len(vast_emulator.worker_requests) == 1

        def test_shared_emulator_is_reset(vast_emulator):
            assert vast_emulator.requests == []

        @pytest.mark.vast_emulator(api="openai", faults=["worker_500"])
        def test_marker_gives_a_dedicated_emulator(vast_emulator):
            with VastClient(api="openai") as client:
                answer = client.chat([{"role": "user", "content": "hi"}], max_tokens=2)
            assert answer.route.attempts == 2
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_plugin_is_opt_in(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_no_fixture_without_the_plugin(request):
            assert "vast_emulator" not in request.fixturenames
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--fixtures")
    assert "vast_emulator" not in result.stdout.str()
