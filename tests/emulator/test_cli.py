"""The ``vast-llm`` command: emulator, route and generate; user mistakes are one line."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vast_llm import VastClient
from vast_llm.cli import _emulator, _parser, main
from vast_llm.emulator import Emulator

EXE = [sys.executable, "-m", "vast_llm.cli"]


def test_emulator_command_prints_its_address_and_serves(tmp_path: Path) -> None:
    script = tmp_path / "turns.json"
    script.write_text(json.dumps([{"answer": "Scripted hello.", "when": {"kind": "chat"}}]))
    process = subprocess.Popen(
        [
            *EXE,
            "emulator",
            "--api",
            "openai",
            "--workers",
            "2",
            "--fault",
            "worker_500:1",
            "--script",
            str(script),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines: dict[str, str] = {}
        deadline = time.monotonic() + 20
        while len(lines) < 3 and time.monotonic() < deadline:
            line = process.stdout.readline() if process.stdout else ""
            match = re.match(r"export (VAST_\w+)=(\S+)", line)
            if match:
                lines[match.group(1)] = match.group(2)
        assert set(lines) == {"VAST_BASE_URL", "VAST_ENDPOINT", "VAST_API_KEY"}
        with VastClient(
            lines["VAST_ENDPOINT"],
            api_key=lines["VAST_API_KEY"],
            base_url=lines["VAST_BASE_URL"],
            api="openai",
        ) as client:
            answer = client.chat([{"role": "user", "content": "hi"}], max_tokens=3)
        assert answer.text == "Scripted hello." and answer.route.attempts == 2  # a fault, once
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)
    assert process.returncode == 0


def test_emulator_options_build_the_emulator(tmp_path: Path) -> None:
    script = tmp_path / "turns.json"
    script.write_text('[{"tool_call": {"name": "search"}}, "Done."]')
    args = _parser().parse_args(
        ["emulator", "--api", "both", "--reasoning", "reasoning", "--script", str(script)]
    )
    emulator = _emulator(args)
    assert emulator.script is not None and emulator.script.to_data()["turns"] == [
        {"tool_call": {"name": "search"}},
        {"answer": "Done."},
    ]
    assert emulator._specs[0].api == "both" and emulator._specs[0].reasoning == "reasoning"
    assert emulator._specs[0].embeddings and emulator._specs[0].embedding_max_batch is None
    args = _parser().parse_args(["emulator", "--no-embeddings", "--embedding-max-batch", "8"])
    spec = _emulator(args)._specs[0]
    assert (spec.embeddings, spec.embedding_max_batch) == (False, 8)


def test_a_yaml_script_without_pyyaml_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "turns.yaml"
    script.write_text("- Hello.\n")
    monkeypatch.setitem(sys.modules, "yaml", None)  # as if PyYAML were not installed
    assert main(["emulator", "--script", str(script)]) == 1
    assert capsys.readouterr().err == (
        f"error: {script}: reading a YAML script needs PyYAML (pip install pyyaml); or write "
        "the script as JSON\n"
    )
    bad = tmp_path / "bad.json"
    bad.write_text('[{"anser": "x"}]')
    assert main(["emulator", "--script", str(bad)]) == 1
    assert "turn 1: unknown key(s) ['anser']" in capsys.readouterr().err


def test_list_faults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["emulator", "--list-faults"]) == 0
    assert "stream_cut" in capsys.readouterr().out


@pytest.fixture
def env(tgi: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    monkeypatch.setenv("VAST_API_KEY", tgi.api_key)
    monkeypatch.setenv("VAST_BASE_URL", tgi.base_url)
    return tgi


def test_route_command(env: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["route", env.endpoint, "--cost", "12"]) == 0
    out = capsys.readouterr().out
    assert "signature   g3 (verified)" in out and env.worker_urls()[0].split(":")[0] in out
    assert env.api_key not in out


@pytest.mark.parametrize("stream", [False, True])
def test_generate_command(env: Emulator, capsys: pytest.CaptureFixture[str], stream: bool) -> None:
    args = ["generate", env.endpoint, "Hello", "--max-tokens", "4"] + (
        ["--stream"] if stream else []
    )
    assert main(args) == 0
    captured = capsys.readouterr()
    assert len(captured.out.split()) == 4 and "finish length" in captured.err


@pytest.mark.parametrize(
    ("args", "env_key", "message"),
    [
        (["generate", "ep", "hi"], None, "no API key"),
        (["route", "ep", "--base-url", "ftp://x"], "k", "base_url"),
    ],
)
def test_user_mistakes_are_one_line(
    args: list[str], env_key: str | None, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("VAST_")}
    if env_key:
        environment["VAST_API_KEY"] = env_key
    result = subprocess.run(
        [*EXE, *args], capture_output=True, text=True, env=environment, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_wrong_key_is_one_line(
    env: Emulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VAST_API_KEY", "wrong-key")
    assert main(["generate", env.endpoint, "hi"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: HTTP 401") and "wrong-key" not in err


@pytest.mark.parametrize("command", ["emulator", "route", "generate", "demo"])
def test_help(command: str) -> None:
    result = subprocess.run([*EXE, command, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "usage: vast-llm" in result.stdout
