"""The fake model's prefill cost: each worker caches its last prompt, and a request pays only
for the prompt tokens past what it shares with it (counted, not timed)."""

from __future__ import annotations

from vast_llm import VastClient
from vast_llm.emulator import Emulator, GenRequest
from vast_llm.emulator._models import prompt_of
from vast_llm.emulator._prefix import PrefixCache, prompt_tokens


def test_a_prompt_pays_for_what_the_last_one_did_not_share() -> None:
    cache = PrefixCache(delay=0.5)
    assert cache.admit("one two three") == 1.5
    assert cache.admit("one two three four") == 0.5  # the growing conversation
    assert cache.admit("one two") == 0.0  # a prefix of the cached prompt
    assert cache.admit("zero one two") == 1.5  # shares nothing at the start
    assert (cache.cached_tokens, cache.prefilled_tokens) == (5, 7)
    assert prompt_tokens("user: Hi, there!") == ["user", ":", "Hi", ",", "there", "!"]


def conversation(client_call: object, turns: int, tag: str) -> None:
    messages: list[dict[str, str]] = []
    for turn in range(turns):
        messages.append({"role": "user", "content": f"{tag} {turn}: " + "word " * 50})
        answer = client_call(messages, max_tokens=8)  # type: ignore[operator]
        messages.append({"role": "assistant", "content": answer.text})


def prefilled(emu: Emulator) -> int:
    """Prompt tokens computed on all workers since the last call; resets the counts."""
    total = 0
    for worker in emu.workers:
        assert worker.prefix is not None
        total += worker.prefix.prefilled_tokens
        worker.prefix.prefilled_tokens = 0
    return total


def test_a_session_prefills_each_turn_once_where_routing_prefills_the_history() -> None:
    with Emulator(api="openai", workers=2, prefill_delay=1e-6).serve() as emu:
        client = VastClient(emu.endpoint, api_key=emu.api_key, base_url=emu.base_url, api="openai")
        with client:
            conversation(client.chat, 6, "routed")
            routed = prefilled(emu)
            with client.session() as session:
                conversation(session.chat, 6, "pinned")
            pinned = prefilled(emu)
        last = [r for r in emu.worker_requests if r.path == "/v1/chat/completions"][-1]
        final = prompt_tokens(prompt_of(GenRequest(messages=last.json["payload"]["messages"])))
    # In the session each prompt token was computed once: those of the last prompt, the
    # conversation whole, but for its first two tokens ("user", ":"), which the worker's last
    # prompt began with too. Routed over two workers, each worker recomputed what the other
    # had been sent meanwhile.
    assert pinned == len(final) - 2
    assert routed > 1.5 * pinned
