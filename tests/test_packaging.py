"""Packaging: the floors `make test-lowest` installs, typed packages, one version, a full sdist."""

from __future__ import annotations

import pathlib
import sys
from importlib import metadata

import pytest

import vast_llm

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import lowest  # noqa: E402  (tools/ is not a package)

PROJECT = lowest.tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.mark.parametrize(
    ("requirement", "pin"),
    [
        ("httpx>=0.27,<1", "httpx==0.27"),
        ("httpx-sse >= 0.4.1, <0.5", "httpx-sse==0.4.1"),
        ("langchain_core<2,>=1.6", "langchain-core==1.6"),
        ("Foo.Bar[extra]>=2", "foo-bar==2"),
        ("httpx~=0.27", "httpx==0.27"),
        ("openai==3.57.0", "openai==3.57.0"),
        ("pytest==9; python_version < '3.11'", "pytest==9 ; python_version < '3.11'"),
    ],
)
def test_floor_pin(requirement: str, pin: str) -> None:
    assert lowest.floor_pin(requirement) == pin


@pytest.mark.parametrize("requirement", ["httpx<1", "httpx", "httpx!=0.27", "httpx===0.27"])
def test_a_requirement_without_a_floor_is_refused(requirement: str) -> None:
    with pytest.raises(SystemExit, match="no lower bound"):
        lowest.floor_pin(requirement)


def test_every_runtime_dependency_has_a_floor() -> None:
    pins = [lowest.floor_pin(r) for r in lowest.runtime_requirements()]
    names = {pin.split("==")[0] for pin in pins}
    assert {"httpx", "cryptography", "langchain-core", "llama-index-core"} <= names
    assert "llama-cpp-python" not in names  # `model` is pinned, not floored


def test_test_tools_come_from_the_dev_extra() -> None:
    tools = lowest.test_tools()
    assert any(t.startswith("pytest==") for t in tools)
    assert not any(t.startswith(("vast-llm", "mypy", "ruff", "langchain-tests")) for t in tools)


def test_dev_pins_name_an_installable_release_for_every_supported_python() -> None:
    """A pin whose release dropped a supported Python carries a marker and a sibling for it."""
    dev = PROJECT["project"]["optional-dependencies"]["dev"]
    for name in ("hypothesis", "matplotlib"):
        markers = sorted(r.split(";")[1].strip() for r in dev if r.startswith(f"{name}=="))
        assert markers == ["python_version < '3.11'", "python_version >= '3.11'"], name


def test_the_version_is_written_once() -> None:
    assert "version" not in PROJECT["project"] and "version" in PROJECT["project"]["dynamic"]
    assert PROJECT["tool"]["hatch"]["version"]["path"] == "vast_llm/_version.py"
    assert metadata.version("vast-llm") == vast_llm.__version__


def test_every_package_is_typed() -> None:
    for package in PROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]:
        typed = list((ROOT / package).rglob("py.typed"))
        assert typed, f"{package} has no py.typed"
    assert (ROOT / "llama_index" / "llms" / "vast" / "py.typed").exists()  # a namespace package


def test_the_sdist_carries_what_its_own_tests_need() -> None:
    included = set(PROJECT["tool"]["hatch"]["build"]["targets"]["sdist"]["include"])
    needed = {"tests", "tools", "benchmarks", ".ci", "Makefile", "LICENSE", "CHANGELOG.md"}
    assert needed <= included
    assert all((ROOT / path).exists() for path in included)


def test_the_demo_ships_beside_the_core_with_its_extra() -> None:
    import vast_llm_demo

    assert "vast_llm_demo" in PROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    assert not (ROOT / "vast_llm" / "demo").exists()  # the core ships no application
    demo = PROJECT["project"]["optional-dependencies"]["demo"]
    assert demo == [f"vast-llm[{','.join(vast_llm_demo._NEEDS)}]"]  # what the CLI asks for
