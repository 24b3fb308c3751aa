"""Load with faults: 1,000 concurrent async requests (200 in a plain ``pytest``; ``make test``
runs the thousand), ~10% of them meeting a random fault. Every request ends (recovered or a
typed error) within its deadline, no request's work is sent to a worker twice after its answer
started, and sockets and tasks return to the baseline."""

from __future__ import annotations

import asyncio

from tests.conftest import sweep
from tests.reliability.scenarios import OK, _client_sockets, emulator_ports, run_load
from vast_llm.emulator import Emulator

N = sweep(1000, 200)


async def test_thousand_concurrent_requests_with_faults() -> None:
    with Emulator(workers=4).serve() as emu:
        result = await run_load(emu, n=N, fault_rate=0.1)
    print(f"\n{result}")
    assert sum(result.outcomes.values()) == N  # every request ended
    assert set(result.outcomes) <= {OK, "WorkerStreamError", "WorkerError"}
    assert result.outcomes[OK] >= 0.9 * N  # only faults that strike after output can fail a request
    assert result.over_deadline == 0
    assert result.sent_twice_after_first_byte == 0
    # Only the keep-alive pools stay open: the autoscaler's and the workers' (two trust
    # decisions, two pools), each keeping up to 20 connections.
    assert result.client_sockets_idle <= 2 * 20
    assert result.client_sockets_after <= result.client_sockets_before
    assert result.tasks_after == result.tasks_before


async def test_thousand_concurrent_requests_with_faults_on_an_aiohttp_session() -> None:
    """The same load on the aiohttp driver: its connector, its exceptions, its stream closing."""
    import aiohttp

    with Emulator(workers=4).serve() as emu:
        async with aiohttp.ClientSession() as session:
            # The session's idle pool is aiohttp's to keep (up to its keep-alive timeout); what
            # must hold is that nothing is left once the session closes.
            result = await run_load(emu, n=N, fault_rate=0.1, http_client=session)
        await asyncio.sleep(0.2)  # let the closed connections settle
        result.client_sockets_after = _client_sockets(emulator_ports(emu))
    print(f"\n{result}")
    assert sum(result.outcomes.values()) == N
    assert set(result.outcomes) <= {OK, "WorkerStreamError", "WorkerError"}
    assert result.outcomes[OK] >= 0.9 * N
    assert result.over_deadline == 0
    assert result.sent_twice_after_first_byte == 0
    assert result.client_sockets_after <= result.client_sockets_before
    assert result.tasks_after == result.tasks_before
