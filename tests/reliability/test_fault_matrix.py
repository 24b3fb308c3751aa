"""The fault matrix: every fault × sync/async × TGI/OpenAI × streamed or not → the expected
outcome (recovered, or a specific typed error) within the deadline."""

from __future__ import annotations

import pytest

from tests.reliability.scenarios import DEADLINE, ERRORS, OK, cases, expected, fault_for, run_case
from vast_llm.emulator import Emulator


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("api", ["tgi", "openai"])
@pytest.mark.parametrize(("name", "persistent"), cases(),
                         ids=[f"{n}-{'always' if p else 'once'}" for n, p in cases()])  # fmt: skip
async def test_fault(
    request: pytest.FixtureRequest,
    flavor: str,
    api: str,
    stream: bool,
    name: str,
    persistent: bool,
) -> None:
    emu: Emulator = request.getfixturevalue("tgi" if api == "tgi" else "openai_emu")
    outcome = await run_case(emu, flavor, api, stream, fault_for(name, persistent))
    want = expected(name, stream, persistent)
    assert outcome.kind == want, f"{name}: expected {want}, got {outcome.kind}: {outcome.error}"
    assert outcome.elapsed < DEADLINE
    if want != OK:
        assert isinstance(outcome.error, ERRORS[want])
        assert emu.api_key not in str(outcome.error)
    if outcome.kind == "WorkerStreamError" and stream:
        # Tokens were handed out before the failure, and the request was not sent again.
        assert outcome.chunks == 2 and outcome.worker_requests == 1
    if name in {"bad_signature", "missing_signature", "foreign_key", "tampered_url",
                "pubkey_garbage"}:  # fmt: skip
        assert outcome.worker_requests == 0  # strict: no unverified worker was contacted
