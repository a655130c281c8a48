"""Strict request models for the OpenAI routes.

Decoding is msgspec's strict mode: ``true`` or ``"16"`` for an integer, NaN,
out-of-range numbers, unknown fields and invalid UTF-8 are refused with the
field's JSON path in the message. Semantic rules that span fields (``best_of``,
``stream_options`` without ``stream``) live in ``validate.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec

# Bounds are part of the API: generous for real use, tight enough that no
# single request can ask for absurd work.
# The hard ceilings; the operator's limits (``server.max_n`` ...) sit at or under
# them and are checked in validate.py, so they can change on a config reload.
N_CEILING = 128
STOP_CEILING = 64
LOGPROBS_CEILING = 20  # vLLM's default max_logprobs

MaxTokens = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
N = Annotated[int, msgspec.Meta(ge=1, le=N_CEILING)]
Temperature = Annotated[float, msgspec.Meta(ge=0.0, le=2.0)]
TopP = Annotated[float, msgspec.Meta(gt=0.0, le=1.0)]
Penalty = Annotated[float, msgspec.Meta(ge=-2.0, le=2.0)]
Seed = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
StopString = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Stop = StopString | Annotated[list[StopString], msgspec.Meta(max_length=STOP_CEILING)]
TokenId = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
ServiceTier = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """The operator's caps on one request's fan-out (``server:`` in the config)."""

    max_n: int = 16
    max_stop: int = 4
    max_logprobs: int = 20


class StreamOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    include_usage: bool = False
    continuous_usage_stats: bool = False


class _Common(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    model: str
    max_tokens: MaxTokens | None = None
    n: N = 1
    temperature: Temperature = 1.0
    top_p: TopP = 1.0
    presence_penalty: Penalty = 0.0
    frequency_penalty: Penalty = 0.0
    seed: Seed | None = None
    stop: Stop | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    service_tier: ServiceTier | None = None
    user: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    # vLLM's extension, sent by benchmark clients to fix output lengths.
    ignore_eos: bool = False


class CompletionBody(_Common, frozen=True, kw_only=True):
    """``POST /v1/completions``."""

    # msgspec allows one array type per union, so the element type is the
    # union: token ids, or a batch of strings / token lists (validate.py sorts it).
    prompt: str | Annotated[list[TokenId | str | list[TokenId]], msgspec.Meta(min_length=1)]
    logprobs: Annotated[int, msgspec.Meta(ge=0, le=LOGPROBS_CEILING)] | None = None
    echo: bool = False
    best_of: N | None = None
    suffix: str | None = None


class TextPart(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    type: Literal["text"]
    text: str


class Message(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | Annotated[list[TextPart], msgspec.Meta(min_length=1)]
    name: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class ChatBody(_Common, frozen=True, kw_only=True):
    """``POST /v1/chat/completions``."""

    messages: Annotated[list[Message], msgspec.Meta(min_length=1, max_length=1024)]
    max_completion_tokens: MaxTokens | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, msgspec.Meta(ge=0, le=LOGPROBS_CEILING)] | None = None
