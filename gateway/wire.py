"""OpenAI wire format: response bodies and SSE chunks, byte for byte.

One ``Transcript`` per request accumulates what the engine produced (per
choice: text, tokens, logprobs, finish reason) and renders it either as SSE
chunks while streaming or as one response at the end. The first chunk of each
chat choice carries ``role`` *and* the first generated text: there is no
empty role-only event, which would fake time-to-first-token for every client.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from engines.protocol import TokenDelta, TokenLogprob
from gateway.validate import Kind

DONE = b"data: [DONE]\n\n"


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


@dataclass(slots=True)
class _Choice:
    text: list[str] = field(default_factory=list)
    tokens: int = 0
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    started: bool = False


class Transcript:
    """What one request has produced so far, in OpenAI's shapes."""

    def __init__(
        self,
        kind: Kind,
        request_id: str,
        model: str,
        n: int,
        prompt_tokens: int,
        top_logprobs: int | None,
        sla_class: str,
        include_usage: bool = False,
    ) -> None:
        self.kind = kind
        self.request_id = request_id
        self.model = model
        self.created = int(time.time())
        self.prompt_tokens = prompt_tokens
        self.top_logprobs = top_logprobs
        self.sla_class = sla_class
        self.include_usage = include_usage
        self.choices = [_Choice() for _ in range(n)]
        self._object = "text_completion" if kind == "completion" else "chat.completion.chunk"
        self._head = self._tail = b""  # the chunk envelope, rendered on first use
        self._plain: dict[int, tuple[bytes, bytes]] = {}  # per choice: see chunk

    @property
    def completion_tokens(self) -> int:
        choices = self.choices
        return choices[0].tokens if len(choices) == 1 else sum(c.tokens for c in choices)

    @property
    def finished(self) -> bool:
        return all(c.finish_reason is not None for c in self.choices)

    def usage(self) -> dict[str, int]:
        completion = self.completion_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }

    def add(self, delta: TokenDelta) -> None:
        """Record a delta (non-streaming path)."""
        choice = self.choices[delta.index]
        choice.text.append(delta.text)
        self._count(choice, delta)

    def _count(self, choice: _Choice, delta: TokenDelta) -> None:
        choice.tokens += len(delta.token_ids)
        if delta.logprobs:
            choice.logprobs.extend(delta.logprobs)
        if delta.finish_reason is not None:
            choice.finish_reason = str(delta.finish_reason)

    # -- streaming -----------------------------------------------------------

    def chunk(self, delta: TokenDelta) -> bytes:
        """Record a delta and render it as one SSE event."""
        choice = self.choices[delta.index]
        self._count(choice, delta)
        finish = choice.finish_reason if delta.finish_reason is not None else None
        if not self._head:
            self._render_envelope()
        if (finish is None and delta.logprobs is None
                and (choice.started or self.kind == "completion")):
            # Most deltas carry text alone: spliced between pre-rendered bytes, the
            # same bytes as dumping the body below (orjson escapes a str alike
            # anywhere), without building and dumping a dict per token.
            plain = self._plain.get(delta.index)
            if plain is None:
                plain = self._plain[delta.index] = self._plain_parts(delta.index)
            choice.started = True
            return plain[0] + orjson.dumps(delta.text) + plain[1]
        logprobs = self._logprobs(delta.logprobs) if delta.logprobs is not None else None
        body: dict[str, Any]
        if self.kind == "completion":
            body = {"index": delta.index, "text": delta.text, "logprobs": logprobs,
                    "finish_reason": finish}
        else:
            message: dict[str, Any] = {}
            if not choice.started:
                message["role"] = "assistant"
            if delta.text or not finish:
                message["content"] = delta.text
            body = {"index": delta.index, "delta": message, "logprobs": logprobs,
                    "finish_reason": finish}
        choice.started = True
        return self._head + orjson.dumps(body) + self._tail

    def _render_envelope(self) -> None:
        # Every chunk repeats the same envelope around its one choice: render it
        # once and splice each choice in (the same bytes as dumping the whole
        # dict: orjson writes keys in insertion order).
        envelope = orjson.dumps(self._envelope([], usage=None))
        cut = envelope.index(b'"choices":[]') + len(b'"choices":[')
        self._head, self._tail = b"data: " + envelope[:cut], envelope[cut:] + b"\n\n"

    def _plain_parts(self, index: int) -> tuple[bytes, bytes]:
        """What goes before and after the JSON string of a text-only delta's text."""
        if self.kind == "completion":
            body = {"index": index, "text": "", "logprobs": None, "finish_reason": None}
        else:
            body = {"index": index, "delta": {"content": ""}, "logprobs": None,
                    "finish_reason": None}
        rendered = orjson.dumps(body)
        cut = rendered.index(b'""')
        return self._head + rendered[:cut], rendered[cut + 2:] + self._tail

    def usage_chunk(self) -> bytes:
        return sse(self._envelope([], usage=self.usage()))

    def _envelope(self, choices: list[dict[str, Any]], usage: Any) -> dict[str, Any]:
        envelope = {
            "id": self.request_id,
            "object": self._object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "service_tier": self.sla_class,
            "choices": choices,
        }
        if self.include_usage:
            # With include_usage OpenAI sends "usage": null on every chunk but
            # the last; without it, no usage key at all.
            envelope["usage"] = usage
        return envelope

    # -- whole response -------------------------------------------------------

    def response(self) -> dict[str, Any]:
        choices: list[dict[str, Any]] = []
        for index, c in enumerate(self.choices):
            text = "".join(c.text)
            logprobs = self._logprobs(c.logprobs) if self.top_logprobs is not None else None
            if self.kind == "completion":
                choices.append({"index": index, "text": text, "logprobs": logprobs,
                                "finish_reason": c.finish_reason})
            else:
                choices.append({"index": index,
                                "message": {"role": "assistant", "content": text,
                                            "refusal": None},
                                "logprobs": logprobs, "finish_reason": c.finish_reason})
        return {
            "id": self.request_id,
            "object": "text_completion" if self.kind == "completion" else "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "service_tier": self.sla_class,
            "choices": choices,
            "usage": self.usage(),
        }

    def _logprobs(self, items: Any) -> dict[str, Any]:
        k = self.top_logprobs or 0
        if self.kind == "chat":
            return {"content": [
                {"token": lp.token, "logprob": lp.logprob, "bytes": list(lp.token.encode()),
                 "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())}
                                  for t, v in lp.top[:k]]}
                for lp in items
            ]}
        offsets, pos = [], 0
        for lp in items:
            offsets.append(pos)
            pos += len(lp.token)
        return {
            "tokens": [lp.token for lp in items],
            "token_logprobs": [lp.logprob for lp in items],
            "top_logprobs": [dict(lp.top[:k]) for lp in items],
            "text_offset": offsets,
        }
