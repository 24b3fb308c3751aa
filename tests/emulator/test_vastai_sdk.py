"""Fidelity: the official vastai SDK (1.9.1, in its own virtualenv) works against the emulator."""

from __future__ import annotations

import json
import pathlib
import subprocess
from typing import Any

import pytest

from vast_llm.emulator import Emulator

pytestmark = pytest.mark.vastai_sdk

ROOT = pathlib.Path(__file__).resolve().parents[2]
SDK_PYTHON = ROOT / ".venv-vastai" / "bin" / "python"
DRIVER = pathlib.Path(__file__).with_name("vastai_sdk_driver.py")


def run_sdk(emu: Emulator, api: str) -> dict[str, Any]:
    if not SDK_PYTHON.exists():
        pytest.fail("the vastai SDK virtualenv is missing: run `make sdk` (make test does)")
    extra = [emu.worker_ca_file] if emu.worker_ca_file else []
    result = subprocess.run(
        [str(SDK_PYTHON), str(DRIVER), emu.base_url, emu.api_key, emu.endpoint, api, *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return out


def test_sdk_tgi_request_and_stream() -> None:
    with Emulator(api="tgi").serve() as emu:
        out = run_sdk(emu, "tgi")
        assert out["status"] == 200 and len(out["whole"]["generated_text"].split()) == 5
        tokens = [e["token"]["text"] for e in out["stream"]]
        assert "".join(tokens) == out["whole"]["generated_text"]
        assert out["stream"][-1]["details"]["finish_reason"] == "length"
        # The SDK found the endpoint through the console stub, routed, and sent the wrapped
        # format with the signed assignment, which the emulated worker verified.
        targets = [r.target for r in emu.requests]
        assert targets[0] == "console" and targets.count("worker") == 2
        worker = emu.worker_requests[0].json
        assert set(worker) == {"auth_data", "session_id", "payload"}
        # What vast-llm avoids: the official client sends the API key to the worker.
        assert emu.api_key in json.dumps(emu.worker_requests[0].headers)


def test_sdk_against_https_workers_under_the_emulators_ca() -> None:
    with Emulator(api="tgi", tls=True).serve() as emu:
        out = run_sdk(emu, "tgi")
        assert out["status"] == 200 and out["stream"][-1]["details"]["finish_reason"] == "length"
        assert emu.worker_requests[0].json["auth_data"]["url"].startswith("https://127.0.0.1:")


def test_sdk_openai_chat_stream() -> None:
    with Emulator(api="openai").serve() as emu:
        out = run_sdk(emu, "openai")
        assert out["whole"]["choices"][0]["message"]["content"]
        streamed = "".join(
            (e["choices"][0]["delta"].get("content") or "") for e in out["stream"] if e["choices"]
        )
        assert streamed == out["whole"]["choices"][0]["message"]["content"]


def test_sdk_waits_out_a_cold_start() -> None:
    # A scaled-to-zero endpoint: its worker wakes when the SDK's first route call asks (so the
    # SDK sees it cold however long its own start takes on a busy machine).
    with Emulator(api="tgi", cold_workers=True, activation_delay=1.5).serve() as emu:
        out = run_sdk(emu, "tgi")
        assert out["status"] == 200
        statuses = [json.loads(r.response).get("status") for r in emu.route_requests if r.response]
        assert any(s and "stopped" in s.lower() for s in statuses)
