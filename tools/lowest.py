"""The lowest versions pyproject.toml allows, as pip inputs for `make test-lowest`.

    python tools/lowest.py constraints   # name==floor for every runtime dependency and extra
    python tools/lowest.py tools         # the test tools from the `dev` extra, as pinned there
    python tools/lowest.py check         # (in the lowest venv) the installed versions are the floors

The floors are read from pyproject.toml, so they are written in one place. Only direct
dependencies are held at their floors; what they pull in resolves as it would for a user
(pip has no "lowest for everything" mode, and a transitive floor is not ours to declare).
"""

from __future__ import annotations

import pathlib
import re
import sys
from importlib import metadata

try:
    import tomllib
except ImportError:  # Python 3.10: pip's own copy of the same parser
    from pip._vendor import tomli as tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Extras held at their floors: every one a user can install except `model` (the real model,
# which compiles for minutes and is pinned, not floored) and `dev` (tools, not dependencies).
EXTRAS = ("langchain", "llamaindex", "emulator", "aiohttp")
# Test tools left out of the lowest run: the linters run no test, and langchain-tests requires
# httpx>=0.28.1, above our httpx floor (0.27), so LangChain's standard suite
# (tests/langchain/test_standard.py) runs in `make test` only.
SKIPPED_TOOLS = frozenset({"mypy", "ruff", "langchain-tests"})
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([^;]*?)\s*(;.*)?$")


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _project() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        project: dict[str, object] = tomllib.load(f)["project"]
    return project


def floor_pin(requirement: str) -> str:
    """``"httpx>=0.27,<1"`` -> ``"httpx==0.27"`` (``~=`` alike); markers kept; pins stay pins."""
    match = REQUIREMENT.match(requirement)
    if match is None:
        raise SystemExit(f"cannot read the requirement {requirement!r}")
    name, _extras, specifiers, marker = match.groups()
    for spec in specifiers.split(","):
        spec = spec.strip()
        if spec.startswith((">=", "==", "~=")) and not spec.startswith("==="):
            return f"{_name(name)}=={spec[2:].strip()}{' ' + marker if marker else ''}"
    raise SystemExit(f"{requirement!r} has no lower bound: give it one (>=) in pyproject.toml")


def runtime_requirements() -> list[str]:
    """The core's dependencies and those of every extra in EXTRAS, as written in pyproject."""
    project = _project()
    extras: dict[str, list[str]] = project["optional-dependencies"]  # type: ignore[assignment]
    requirements: list[str] = list(project["dependencies"])  # type: ignore[call-overload]
    for extra in EXTRAS:
        requirements += extras[extra]
    return requirements


def test_tools() -> list[str]:
    """The `dev` extra's own pins (not its self-references), less SKIPPED_TOOLS."""
    dev: list[str] = _project()["optional-dependencies"]["dev"]  # type: ignore[index]
    tools = []
    for requirement in dev:
        match = REQUIREMENT.match(requirement)
        assert match is not None, requirement
        name = _name(match.group(1))
        if name != "vast-llm" and name not in SKIPPED_TOOLS:
            tools.append(requirement)
    return tools


def check() -> int:
    """Every floored distribution is installed at exactly its floor (run it in the lowest venv)."""
    wrong = []
    for pin in map(floor_pin, runtime_requirements()):
        name, _, rest = pin.partition("==")
        wanted = rest.split(";")[0].strip()
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "(not installed)"
        # "0.27" is installed as "0.27.0": compare release segments padded with zeros.
        if _release(installed) != _release(wanted):
            wrong.append(f"{name}: floor {wanted}, installed {installed}")
    print("\n".join(wrong) or "every dependency is at its floor")
    return 1 if wrong else 0


def _release(version: str) -> tuple[int, ...]:
    parts = [int(p) for p in re.findall(r"\d+", version.split("+")[0])[:3]]
    return tuple(parts + [0] * (3 - len(parts)))


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else ""
    if command == "constraints":
        print("\n".join(floor_pin(r) for r in runtime_requirements()))
    elif command == "tools":
        print("\n".join(test_tools()))
    elif command == "check":
        return check()
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
