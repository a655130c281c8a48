"""Client data on its way into a log line: one line, printable, bounded.

Anything a client sends (a path, a model name, a header value) may carry CR/LF
(to forge a log line), ANSI escapes (to rewrite an operator's terminal) or a
megabyte of text. ``one_line`` escapes every control and line-breaking
character the way Python's ``unicode_escape`` does and truncates, so a log line
is always exactly one line of what the gateway wrote. Prompts, completions and
API keys are never logged at all; this is for the few fields that are.
"""

from __future__ import annotations

import re

_LIMIT = 200
# C0 and C1 controls, DEL, and the Unicode line/paragraph separators that some
# log viewers break lines on; backslash too, so an escape cannot be forged.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\\\\]")


_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match[0]
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def one_line(value: object, limit: int = _LIMIT) -> str:
    """``value`` as one printable line of at most ``limit`` characters (plus a marker)."""
    text = value if isinstance(value, str) else str(value)
    cut = len(text) > limit
    escaped = _UNSAFE.sub(_escape, text[:limit])
    return f"{escaped}...[{len(text)} chars]" if cut else escaped
