"""``SimulatedProfile``: the cost model and limits of one simulated engine.

A step of the simulated continuous batch costs

    base_step_ms + per_seq_ms * sequences_in_step + prefill_per_token_ms * prefill_tokens

simulated milliseconds, scaled by ``time_scale`` into loop-clock seconds. The
defaults are calibrated roughly on the 2-layer demo model served by vLLM 0.32 on
this 2-core CPU: about 15 ms per decode step at a small batch, 30 ms at 64
sequences, and a capacity near 15 req/s of 256-in/64-out (DESIGN.md §1
measured 14.2 req/s achieved at 50 offered). A linear model cannot also keep a
256-token prefill at 20 ms and still saturate at 15 req/s, so the prefill rate
is set for the capacity: a lone 256-token prefill step costs about 51 ms.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

SchedulingPolicy = Literal["fcfs", "priority"]


@dataclass(frozen=True, slots=True)
class SimulatedProfile:
    """Limits and costs of a simulated engine; field names are the config keys."""

    max_num_seqs: int = 64
    """Most sequences (choices) in the running batch; the rest wait in the engine."""
    max_num_batched_tokens: int = 2048
    """Token budget of one step; a longer prefill is chunked over several steps."""
    kv_capacity_tokens: int = 2_097_152
    """KV cache size in tokens (the demo model's 512 B/token in 1 GiB)."""
    block_size: int = 16
    """KV is allocated in blocks of this many tokens, as vLLM's paged attention does."""
    max_model_len: int = 2048
    """Context length: prompt plus output tokens of one sequence."""
    base_step_ms: float = 14.5
    """Fixed cost of every step (scheduling, sampling, the model's weights pass)."""
    per_seq_ms: float = 0.24
    """Extra cost per sequence in the step."""
    prefill_per_token_ms: float = 0.14
    """Extra cost per prompt token computed in the step (prefill or recompute)."""
    eos_prob: float = 0.0
    """Chance that each sampled token is EOS, unless the request sets ``ignore_eos``."""
    time_scale: float = 1.0
    """Loop-clock seconds per simulated second (0.01: 100x faster than real).

    0 never sleeps yet still adds up ``SimulatedEngine.simulated_seconds``:
    capacity what-ifs at full speed. Below about 0.05 the loop's own work per
    step (tens of microseconds) starts to show in latencies measured on the
    loop clock; simulated busy time is unaffected.
    """
    zero_cost: bool = False
    """Steps cost nothing and never sleep: for front-end overhead benchmarks."""
    scheduling_policy: SchedulingPolicy = "fcfs"
    """Order of the engine's waiting queue: arrival, or request ``priority`` then arrival."""
    vocab_size: int = 1024
    """Sampled token ids lie in ``[0, vocab_size)`` (the demo model's vocabulary)."""
    eos_token_id: int = 2
    """The id emitted when a choice stops on EOS."""

    def __post_init__(self) -> None:
        for key in ("max_num_seqs", "max_num_batched_tokens", "block_size", "max_model_len"):
            if getattr(self, key) < 1:
                raise ValueError(f"simulated engine: {key} must be >= 1")
        if self.kv_capacity_tokens < self.max_model_len:
            # vLLM refuses to start in this case too: one sequence must always fit.
            raise ValueError(
                f"simulated engine: kv_capacity_tokens ({self.kv_capacity_tokens}) "
                f"must hold max_model_len ({self.max_model_len})"
            )
        for key in ("base_step_ms", "per_seq_ms", "prefill_per_token_ms", "time_scale"):
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) >= 0):
                raise ValueError(f"simulated engine: {key} must be finite and >= 0")
        if not 0.0 <= self.eos_prob <= 1.0:
            raise ValueError("simulated engine: eos_prob must be within [0, 1]")
        if self.scheduling_policy not in ("fcfs", "priority"):
            raise ValueError('simulated engine: scheduling_policy must be "fcfs" or "priority"')
        if not 0 <= self.eos_token_id < self.vocab_size:
            raise ValueError("simulated engine: eos_token_id must lie in [0, vocab_size)")

    @property
    def kv_blocks(self) -> int:
        """KV capacity in whole blocks."""
        return self.kv_capacity_tokens // self.block_size

    def step_seconds(self, sequences: int, prefill_tokens: int) -> float:
        """Simulated (unscaled) duration of one step; 0 in zero-cost mode."""
        if self.zero_cost:
            return 0.0
        ms = (
            self.base_step_ms
            + self.per_seq_ms * sequences
            + self.prefill_per_token_ms * prefill_tokens
        )
        return ms / 1000.0

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> SimulatedProfile:
        """The default profile with ``args`` (a config mapping) applied.

        Raises ``ValueError`` naming the key for unknown keys, wrongly typed
        values (``true`` or ``"16"`` for a number) and out-of-range values.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(args) - set(fields))
        if unknown:
            raise ValueError(
                f"simulated engine: unknown argument(s) {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(sorted(fields))}"
            )
        for key, value in args.items():
            _check_type(key, value, type(getattr(_DEFAULT, key)))
        return dataclasses.replace(_DEFAULT, **dict(args))


def _check_type(key: str, value: object, expected: type) -> None:
    # bool is an int subclass: refuse it for numbers, as the gateway config does.
    if expected is bool:
        ok = isinstance(value, bool)
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif expected is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        ok = isinstance(value, expected)
    if not ok:
        raise ValueError(
            f"simulated engine: {key} must be {expected.__name__}, got {value!r}"
        )


_DEFAULT = SimulatedProfile()
DEFAULT_PROFILE = _DEFAULT
"""The calibrated default (see the module docstring)."""
