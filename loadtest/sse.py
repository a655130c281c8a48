"""Server-sent events of an OpenAI-style stream: framing, then meaning.

``SSEParser`` turns arbitrary byte chunks into complete ``data`` payloads (events end at a
blank line; ``\\r\\n`` is accepted; comment lines such as ``: ping`` and non-data fields are
skipped; multi-line data is joined with newlines, per the SSE spec). ``classify`` says what
one payload means for measurement.

What counts as a *token event* follows vLLM's ``benchmarks/serve.py``: on
``/v1/completions`` every event with a non-empty ``choices`` list (its text may be empty,
e.g. a special token). On ``/v1/chat/completions`` an event must carry generated content
(``content``, reasoning or tool calls): a role-only first event (which plain vLLM sends) is
not a token and does not stop the TTFT clock. vLLM's tool counts that role event, so on the
chat endpoint it reports a shorter TTFT than the first content token really took.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import orjson


class SSEParser:
    """Incremental SSE framing: ``feed(chunk)`` returns the data payloads it completed."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" in buffer:
            # keep a trailing "\r" for the next chunk: it may be half of a "\r\n"
            tail = b"\r" if buffer.endswith(b"\r") else b""
            buffer = buffer[: len(buffer) - len(tail)].replace(b"\r\n", b"\n") + tail
        blocks = buffer.split(b"\n\n")
        self._buffer = blocks.pop()
        payloads = []
        for block in blocks:
            # the common case, one "data: {...}" line, without a per-line loop
            if block.startswith(b"data: ") and b"\n" not in block:
                payloads.append(block[6:])
            elif block:
                data = _data_of(block)
                if data is not None:
                    payloads.append(data)
        return payloads

    @property
    def pending(self) -> bytes:
        """Bytes of an event not yet terminated by a blank line."""
        return self._buffer


def _data_of(block: bytes) -> bytes | None:
    lines = [
        line[5:].removeprefix(b" ")
        for line in block.split(b"\n")
        if line.startswith(b"data:")
    ]
    return b"\n".join(lines) if lines else None


class Kind(enum.Enum):
    TOKEN = "token"  # carries generated output: TTFT / ITL clock ticks
    USAGE = "usage"  # the include_usage summary (no choices)
    DONE = "done"  # "[DONE]"
    ERROR = "error"  # an in-stream error object
    OTHER = "other"  # anything else (role-only chat delta, keep-alive JSON)


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One payload's meaning. ``usage`` may ride on a token event too (continuous usage)."""

    kind: Kind
    completion_tokens: int | None = None
    prompt_tokens: int | None = None
    error: str = ""


_DONE = StreamEvent(Kind.DONE)
_TOKEN = StreamEvent(Kind.TOKEN)
_OTHER = StreamEvent(Kind.OTHER)


def _carries_content(choice: dict[str, Any]) -> bool:
    delta = choice.get("delta") or {}
    return bool(
        delta.get("content")
        or delta.get("reasoning_content")
        or delta.get("reasoning")
        or delta.get("tool_calls")
    )


def classify(payload: bytes, chat: bool) -> StreamEvent:
    """What one ``data`` payload means; malformed JSON is an ``ERROR`` event."""
    if payload == b"[DONE]":
        return _DONE
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return StreamEvent(Kind.ERROR, error=f"malformed stream event: {payload[:80]!r}")
    if not isinstance(data, dict):
        return StreamEvent(Kind.ERROR, error=f"malformed stream event: {payload[:80]!r}")
    usage = data.get("usage")
    completion = prompt = None
    if isinstance(usage, dict):
        completion, prompt = usage.get("completion_tokens"), usage.get("prompt_tokens")
    choices = data.get("choices")
    if choices and isinstance(choices, list):
        if not chat or _carries_content(choices[0]):
            if completion is None and prompt is None:
                return _TOKEN  # the common event: no allocation
            return StreamEvent(Kind.TOKEN, completion, prompt)
        return StreamEvent(Kind.OTHER, completion, prompt)
    if "error" in data:
        error = data["error"]
        message = error.get("message", "") if isinstance(error, dict) else str(error)
        return StreamEvent(Kind.ERROR, error=f"in-stream error: {message}"[:200])
    if usage is not None:
        return StreamEvent(Kind.USAGE, completion, prompt)
    return _OTHER
