"""Client data reaches a log as one printable line: no CR/LF, no ANSI, bounded."""

from __future__ import annotations

import logging

import pytest

from gateway.logsafe import one_line


@pytest.mark.parametrize(("raw", "shown"), [
    ("/v1/completions", "/v1/completions"),
    ("a\r\nINFO forged line", "a\\r\\nINFO forged line"),
    ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
    ("tab\there", "tab\\there"),
    ("nul\x00del\x7fc1\x85", "nul\\x00del\\x7fc1\\x85"),
    ("ls\u2028ps\u2029", "ls\\u2028ps\\u2029"),
    ("back\\nslash", "back\\\\nslash"),
    ("héllo ✓", "héllo ✓"),
])
def test_escapes_everything_that_could_break_or_forge_a_line(raw: str, shown: str) -> None:
    assert one_line(raw) == shown


def test_truncates_and_says_how_long_it_was() -> None:
    out = one_line("x" * 10_000, limit=8)
    assert out == "xxxxxxxx...[10000 chars]"


def test_non_strings_are_rendered_then_escaped() -> None:
    assert one_line(b"a\nb") == "b'a\\\\nb'"  # str(bytes) already escapes; backslash doubled


def test_a_logged_value_stays_on_one_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        logging.getLogger("t").info("path %s", one_line("/x\n2026 ERROR fake\x1b[2J"))
    (record,) = caplog.records
    message = record.getMessage()
    assert "\n" not in message and "\x1b" not in message
