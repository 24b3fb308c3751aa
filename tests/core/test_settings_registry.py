"""One declaration of every client setting, and everything derived from it."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import types
import typing

import httpx
import pytest

from vast_llm import AsyncVastClient, AsyncVastTransport, ConfigError, VastClient, VastTransport
from vast_llm._config import SETTINGS, settings_table
from vast_llm.fields import ClientFields

ROOT = pathlib.Path(__file__).resolve().parents[2]
KEY = "k-" + "x" * 30


def _strip_none(kind: typing.Any) -> set[typing.Any]:
    """The members of a union, None left out (``X | None`` and ``Optional[X]`` alike)."""
    if typing.get_origin(kind) not in (typing.Union, types.UnionType):
        return {kind} - {type(None)}
    flat: set[typing.Any] = set()
    for arg in typing.get_args(kind):
        flat |= _strip_none(arg)
    return flat


def test_the_readme_table_is_the_registry() -> None:
    readme = (ROOT / "README.md").read_text()
    assert settings_table() in readme, "regenerate it: python tools/settings_table.py"


def test_model_fields_agree_with_the_registry_name_by_name_and_type_by_type() -> None:
    hints = typing.get_type_hints(ClientFields)
    fields = set(ClientFields.model_fields)
    assert fields == {s.name for s in SETTINGS} - {"api_key"}  # each model declares its key
    for spec in SETTINGS:
        if spec.name == "api_key":
            continue
        assert _strip_none(hints[spec.name]) == _strip_none(spec.type), spec.name
        assert spec.doc in (ClientFields.model_fields[spec.name].description or "")


@pytest.mark.parametrize("cls", [VastClient, AsyncVastClient, VastTransport, AsyncVastTransport])
def test_unknown_settings_are_an_error_with_a_suggestion(cls: type) -> None:
    with pytest.raises(ConfigError, match="did you mean 'deadline'"):
        cls("ep", api_key=KEY, dedline=5)
    with pytest.raises(ConfigError, match="go to each call"):
        cls("ep", api_key=KEY, temperature=0.5)


@pytest.mark.parametrize("cls", [VastClient, AsyncVastClient, VastTransport, AsyncVastTransport])
def test_every_setting_is_accepted_by_every_driver(cls: type) -> None:
    limits = httpx.Limits(max_connections=8, max_keepalive_connections=2)
    driver = cls("ep", api_key=KEY, limits=limits, max_concurrency=3, route_timeout=2.5)
    assert driver._settings.limits is limits
    assert driver._settings.max_concurrency == 3
    assert driver._settings.route_timeout == 2.5


def test_per_call_settings_are_validated() -> None:
    with VastClient("ep", api_key=KEY) as client:
        s = client._settings.for_call({"timeout": 3, "deadline": 4, "max_retries": 0})
        assert (s.timeout.read, s.deadline, s.max_retries) == (3.0, 4.0, 0)
        with pytest.raises(ConfigError, match="deadline"):
            client._settings.for_call({"deadline": -1})
        with pytest.raises(ConfigError, match="per-call setting 'base_url'"):
            client._settings.for_call({"base_url": "https://x"})


@pytest.mark.system
def test_mypy_sees_the_literal_types_and_the_names(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("mypy", reason="mypy is a dev tool (not installed by make test-lowest)")
    snippet = tmp_path / "user_code.py"
    snippet.write_text(
        "from vast_llm import VastClient\n"
        "VastClient('ep', api='grpc')\n"
        "VastClient('ep', dedline=5)\n"
        "VastClient('ep', api='openai', deadline=5.0, timeout=3)\n"
    )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--cache-dir",
            str(tmp_path / "cache"),
            str(snippet),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    lines = [line for line in run.stdout.splitlines() if "error:" in line]
    assert any(":2:" in line and "api" in line for line in lines), run.stdout
    assert any(":3:" in line and "dedline" in line for line in lines), run.stdout
    assert not any(":4:" in line for line in lines), run.stdout


@pytest.mark.parametrize("keep", [1, 2, 8, 20])
def test_the_two_pools_share_the_keep_alive_connections(keep: int) -> None:
    """``limits.max_keepalive_connections`` is the client's in all (as with one pool): httpcore
    walks every kept connection per request: with two full pools the async client did 295-310
    req/s at concurrency 64 on the benchmark's emulator, 394-430 with them shared."""
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=keep)
    with VastClient("ep", api_key=KEY, limits=limits) as client:
        pools = client._pools()
        kept = [p._transport._pool._max_keepalive_connections for p in pools]  # type: ignore[attr-defined]
        assert [p._transport._pool._max_connections for p in pools] == [64, 64]  # type: ignore[attr-defined]
    assert kept[0] <= kept[1] and sum(kept) == max(keep, 2)
