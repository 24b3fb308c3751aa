"""A worker's prefix cache, so that the fake model's time to first token depends on it.

A model server computes the attention state (the KV cache) of every prompt token before the
first new token; a prompt that begins like one it has just served reuses that part. vLLM keeps
blocks of many prompts; llama.cpp (and so llama-cpp-python, behind the emulator's real model)
keeps the last sequence of a slot. :class:`PrefixCache` is the simplest of these: each worker
remembers its last prompt, and a request pays ``delay`` seconds per prompt token past the part
it shares with it. One conversation pinned to one worker (a session) then pays for each turn's
new tokens only; calls spread over workers, or a worker shared with other traffic, pay again
for the whole history.
"""

from __future__ import annotations

import re

__all__ = ["PrefixCache", "prompt_tokens"]

_TOKEN = re.compile(r"\w+|[^\w\s]")  # the fake model's tokens (count_tokens splits the same)


def prompt_tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


class PrefixCache:
    """One worker's cache of its last prompt (callers hold the emulator's state lock)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay  # seconds of prefill per prompt token not in the cache
        self.last: list[str] = []
        self.cached_tokens = 0  # prompt tokens served from the cache, in all
        self.prefilled_tokens = 0  # prompt tokens computed, in all

    def admit(self, text: str) -> float:
        """Take a prompt: the seconds its prefill costs. It becomes the cached prompt."""
        tokens = prompt_tokens(text)
        shared = _shared(self.last, tokens)
        self.last = tokens
        self.cached_tokens += shared
        self.prefilled_tokens += len(tokens) - shared
        return (len(tokens) - shared) * self.delay


def _shared(a: list[str], b: list[str]) -> int:
    """How many leading tokens ``a`` and ``b`` have in common."""
    n = 0
    for x, y in zip(a, b, strict=False):  # the shorter one bounds the prefix
        if x != y:
            break
        n += 1
    return n
