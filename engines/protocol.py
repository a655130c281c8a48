"""The engine seam: everything above this module depends on these types only.

An ``Engine`` turns one tokenized ``GenerationRequest`` into a stream of
``TokenDelta`` values. Implementations: ``VLLMEngine`` (real vLLM, in process)
and, for fast tests of the layers above, the simulated engine. Nothing here
assumes the engine lives in this process: a remote engine fits the same shape.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


class FinishReason(enum.StrEnum):
    """Why one choice ended, with OpenAI's spelling."""

    STOP = "stop"  # EOS or a stop string
    LENGTH = "length"  # max_tokens or the context ran out
    ABORT = "abort"  # aborted by us (client gone, drain timeout)


@dataclass(frozen=True, slots=True)
class SamplingSpec:
    """What the client asked for, already validated. Mirrors OpenAI's knobs."""

    max_tokens: int
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: int | None = None  # number of top alternatives; None = no logprobs
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    ignore_eos: bool = False


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One tokenized request, ready for an engine."""

    request_id: str
    prompt_token_ids: Sequence[int]
    sampling: SamplingSpec
    priority: int = 0  # vLLM priority (lower runs first) when the engine uses it


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """Log-probability of one sampled token and its top alternatives."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class TokenDelta:
    """New output of one choice since its previous delta.

    ``token_ids`` may be empty only on a final delta that carries nothing but a
    ``finish_reason``. ``text`` is the detokenized text of these tokens (stop
    strings already cut off by the engine).
    """

    index: int
    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason | None = None
    logprobs: tuple[TokenLogprob, ...] | None = None


@dataclass(frozen=True, slots=True)
class EngineStats:
    """A snapshot of one engine, read by the scheduler and the metrics collector."""

    name: str
    healthy: bool
    running: int  # sequences in the engine's batch
    waiting: int  # sequences queued inside the engine
    kv_cache_usage: float  # fraction 0..1
    preemptions: int  # cumulative
    inflight: int  # requests we have handed it that have not finished


@dataclass(frozen=True, slots=True)
class WarmupReport:
    """What warming one engine cost."""

    engine: str
    requests: int
    seconds: float
    prompt_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class EngineInfo:
    """Static facts about an engine's model, known once it has started."""

    model_path: str
    served_model_name: str
    max_model_len: int
    eos_token_id: int | None = None
    extra: dict[str, str] = field(default_factory=dict)


class EngineError(Exception):
    """The engine failed this request (not the client's fault)."""


class EngineDeadError(EngineError):
    """The engine is gone; every request on it fails."""


@runtime_checkable
class Engine(Protocol):
    """A named generation backend. See the module docstring."""

    name: str

    async def start(self) -> EngineInfo:
        """Load the model and become able to generate. Idempotent per instance."""
        ...

    async def warmup(self, prompts: Sequence[GenerationRequest]) -> WarmupReport:
        """Run these requests to completion to take cold paths off the first client."""
        ...

    def generate(self, request: GenerationRequest) -> AsyncGenerator[TokenDelta, None]:
        """Stream the request's deltas; ends after every choice has finished.

        Closing the iterator early (client gone) must abort the request in the
        engine. Raises ``EngineError`` when the engine fails the request.
        """
        ...

    async def abort(self, request_id: str) -> None:
        """Stop a running request; a no-op for unknown or finished ids."""
        ...

    def stats(self) -> EngineStats:
        """A current snapshot; cheap, never blocks."""
        ...

    @property
    def healthy(self) -> bool: ...

    async def stop(self) -> None:
        """Abort what runs and release the engine. Idempotent."""
        ...
