"""Helpers that keep error messages short and clean (issue 14 item 9: a 60 KB worker URL was
quoted whole in every error and log line)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vast_llm._errors import abbreviate


def test_short_urls_are_kept() -> None:
    for url in ["http://10.0.0.1:8000", "https://w.example/x?y=1", "http://[::1]:9/"]:
        assert abbreviate(url) == url


def test_a_long_url_keeps_scheme_host_port_and_a_hash() -> None:
    url = "http://10.0.0.1:8000/" + "a" * 60_000
    short = abbreviate(url)
    assert short.startswith("http://10.0.0.1:8000/… (60021 chars, #") and len(short) < 80
    assert abbreviate(url + "b") != short  # two long URLs stay apart
    assert abbreviate("http://[::1]:9/" + "x" * 500).startswith("http://[::1]:9/… (")


def test_credentials_and_control_characters_never_show() -> None:
    assert abbreviate("http://user:secret@w:1/p").startswith("http://w:1/… (24 chars, #")
    assert "\n" not in abbreviate("http://w:1/\nInjected: header")
    assert abbreviate("http://" + "h" * 70_000 + ":1/").startswith("http://hhhh")
    assert len(abbreviate("http://" + "h" * 70_000 + ":1/")) < 120


@given(st.text(max_size=400))
def test_anything_is_short_and_printable(url: str) -> None:
    short = abbreviate(url)
    assert len(short) <= 120 and not any(ord(c) < 32 or 127 <= ord(c) <= 159 for c in short)
