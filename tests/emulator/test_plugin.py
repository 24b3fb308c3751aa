"""The opt-in pytest plugin, tested the way pytest plugins are: with pytester, on user-style
test files in a temporary project. The runs are in-process (a subprocess pays a second
interpreter and every import again, ~2 s of CPU a run); the README's example also runs as a
subprocess, as a user's pytest would, under ``make test`` (the ``system`` marker)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(autouse=True)
def _lean(monkeypatch: pytest.MonkeyPatch) -> None:
    # The inner pytest needs none of the plugins installed here (hypothesis, benchmark...):
    # loading them all doubled each run's time.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


def run(pytester: pytest.Pytester, *args: str, subprocess: bool = False) -> pytest.RunResult:
    if subprocess:
        return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", *args)


def readme_testing_example() -> dict[str, str]:
    """The README's testing section, as the files its code blocks say they are."""
    text = README.read_text()
    section = text.split("## Test your own chains with the emulator", 1)[1].split("\n## ", 1)[0]
    files = {}
    for block in re.findall(r"```python\n(.*?)```", section, flags=re.S):
        name = re.match(r"# (\S+\.py)\n", block)
        assert name, f"each block of the testing section starts with its file name:\n{block}"
        files[name.group(1)] = block
    return files


@pytest.mark.parametrize(
    "where", ["inprocess", pytest.param("subprocess", marks=pytest.mark.system)]
)
def test_the_readme_example_runs_as_written(pytester: pytest.Pytester, where: str) -> None:
    files = readme_testing_example()
    assert set(files) == {"conftest.py", "test_my_agent.py"}
    for name, code in files.items():
        pytester.path.joinpath(name).write_text(code)
    result = run(pytester, subprocess=where == "subprocess")
    result.assert_outcomes(passed=2)


def test_user_style_tests(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["vast_llm.testing"]')
    pytester.makepyfile(
        test_defaults="""
        import os
        from langchain_vast import ChatVast, VastLLM
        from llamaindex_vast import Vast
        from vast_llm import VastClient

        def test_every_client_works_with_no_arguments(vast_emulator):
            assert ChatVast().invoke("hi").content           # OpenAI-compatible chat
            assert VastLLM().invoke("The capital of France is")  # TGI /generate
            assert Vast().complete("hi").text                 # TGI /generate
            with VastClient() as client:
                assert client.generate("hi", max_tokens=3).text
            assert os.environ["VAST_BASE_URL"] == vast_emulator.base_url
            paths = [r.path for r in vast_emulator.worker_requests]
            assert paths == ["/v1/chat/completions", "/generate", "/generate", "/generate"]

        def test_shared_emulator_is_reset(vast_emulator):
            assert vast_emulator.requests == ()

        def test_rag_models_work_with_no_arguments(vast_emulator):
            from langchain_core.documents import Document
            from langchain_vast import VastEmbeddings, VastRerank
            from llamaindex_vast import VastEmbedding

            vectors = VastEmbeddings().embed_documents(["a cat sat", "a dog ran"])
            assert VastEmbedding().get_query_embedding("a cat sat") == vectors[0]
            docs = [Document(page_content=t) for t in ("a dog ran", "the cat sat")]
            best = VastRerank(top_n=1).compress_documents(docs, "where did the cat sit")
            assert best[0].page_content == "the cat sat"
        """,
        test_markers="""
        import pytest
        from vast_llm import VastClient
        from vast_llm.emulator import Match, ToolCall, Turn

        @pytest.mark.vast_emulator(api="openai", faults=["worker_500"])
        def test_marker_gives_a_dedicated_emulator(vast_emulator):
            with VastClient(api="openai") as client:
                answer = client.chat([{"role": "user", "content": "hi"}], max_tokens=2)
            assert answer.route.attempts == 2
            vast_emulator.assert_all_faults_used()

        @pytest.mark.vast_emulator(script=["Bonjour.", "Au revoir."])
        def test_marker_with_a_script(vast_emulator):
            with VastClient(api="openai") as client:
                assert client.embed(["no turn is used"]).vectors  # scripts play generation only
                said = [client.chat([{"role": "user", "content": t}]).text for t in "ab"]
            assert said == ["Bonjour.", "Au revoir."]
            vast_emulator.assert_all_scripted_used()

        @pytest.mark.vast_emulator(script=[
            Turn(ToolCall("search"), when=Match(last_user_contains="docs")), "Done.",
        ])
        def test_unused_turns_fail_the_test(vast_emulator):
            with VastClient(api="openai") as client:
                client.chat([{"role": "user", "content": "What is Vast?"}])
            vast_emulator.assert_all_scripted_used()
        """,
    )
    result = run(pytester)
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: endpoint 'emulated-endpoint', 1 of 2 turns not used:",
            "*turn 1: ToolCall(name='search', arguments=None) when last user message contains "
            "'docs'; did not match request #1 (chat: last user message 'What is Vast?')",
            "*FAILED test_markers.py::test_unused_turns_fail_the_test*",
        ]
    )


def test_plugin_is_opt_in(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_no_fixture_without_the_plugin(request):
            assert "vast_emulator" not in request.fixturenames
        """
    )
    result = run(pytester, "--fixtures")
    assert "vast_emulator" not in result.stdout.str()
