"""The simulated engine's continuous batch: pure and synchronous, no clock.

Shaped after vLLM v1's scheduler (and nano-vllm's), at the granularity the
cost model needs. Every choice of a request is its own sequence, as vLLM v1
fans out ``n``. One step:

1. Running sequences, oldest first, take tokens from the step's budget
   (``max_num_batched_tokens``): one for a decoding sequence, the rest of its
   prompt for a prefilling one, so a long prompt is chunked over steps.
2. KV grows in blocks with the tokens computed. When a running sequence cannot
   grow, a victim is preempted: the newest running sequence (``fcfs``) or the
   one with the largest ``(priority, arrival)`` (``priority``). Its blocks are
   freed and it waits again to recompute prompt and output (vLLM's recompute
   preemption); tokens it already emitted stay emitted.
3. If nothing was preempted, waiting sequences join in queue order while the
   batch is under ``max_num_seqs`` and budget and blocks last.

``complete`` then samples one token for each sequence whose computed tokens
caught up with its tokens: the step that finishes a prefill also yields its
first token, and every decoding sequence yields one token per step.
"""

from __future__ import annotations

import enum
import heapq
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from engines.protocol import FinishReason, GenerationRequest, TokenDelta, TokenLogprob
from engines.sim_profile import SimulatedProfile


class SeqState(enum.Enum):
    WAITING = enum.auto()
    RUNNING = enum.auto()
    FINISHED = enum.auto()


@dataclass(slots=True, eq=False)
class SimSequence:
    """One choice of one request, as the batch tracks it."""

    request_id: str
    index: int
    prompt_len: int
    max_tokens: int
    ignore_eos: bool
    logprobs: int | None
    priority: int
    arrival: int  # admission order into the engine; breaks every tie
    rng: random.Random
    output_len: int = 0
    computed: int = 0  # tokens whose KV exists
    blocks: int = 0
    state: SeqState = SeqState.WAITING

    @property
    def num_tokens(self) -> int:
        return self.prompt_len + self.output_len

    @property
    def pending(self) -> int:
        """Tokens to compute before the next token can be sampled."""
        return self.num_tokens - self.computed

    @property
    def decoding(self) -> bool:
        return self.output_len > 0 and self.pending == 1


@dataclass(frozen=True, slots=True)
class StepPlan:
    """What one step computes: ``(sequence, tokens)`` pairs and their cost inputs."""

    scheduled: tuple[tuple[SimSequence, int], ...]
    prefill_tokens: int
    preempted: int


@dataclass(slots=True)
class _WaitingQueue:
    """Waiting sequences by ``(priority or 0, arrival)``.

    Under ``fcfs`` the key is arrival alone, which also puts a preempted
    sequence back at the front, as vLLM's ``prepend_request`` does: every
    running sequence arrived before every sequence that never ran.
    """

    by_priority: bool
    _heap: list[tuple[int, int, SimSequence]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self._heap)

    def __iter__(self) -> Iterator[SimSequence]:
        return (entry[2] for entry in self._heap)

    def push(self, seq: SimSequence) -> None:
        key = seq.priority if self.by_priority else 0
        heapq.heappush(self._heap, (key, seq.arrival, seq))

    def peek(self) -> SimSequence:
        return self._heap[0][2]

    def pop(self) -> SimSequence:
        return heapq.heappop(self._heap)[2]

    def discard_finished(self) -> None:
        self._heap = [e for e in self._heap if e[2].state is not SeqState.FINISHED]
        heapq.heapify(self._heap)


class SimBatch:
    """Running and waiting sequences, KV blocks, and the step rules above."""

    def __init__(self, profile: SimulatedProfile) -> None:
        self._profile = profile
        self._total_blocks = profile.kv_blocks
        self._free_blocks = self._total_blocks
        self._arrivals = 0
        self._by_request: dict[str, list[SimSequence]] = {}
        self.running: list[SimSequence] = []
        self.waiting = _WaitingQueue(by_priority=profile.scheduling_policy == "priority")
        self.preemptions = 0

    # -- queries ----------------------------------------------------------

    @property
    def has_work(self) -> bool:
        return bool(self.running) or bool(self.waiting)

    @property
    def kv_cache_usage(self) -> float:
        return 1.0 - self._free_blocks / self._total_blocks

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._by_request

    # -- requests ---------------------------------------------------------

    def add(self, request: GenerationRequest, seed: int) -> None:
        """Queue every choice of ``request``; its id must not be in the batch."""
        spec = request.sampling
        seqs = [
            SimSequence(
                request_id=request.request_id,
                index=i,
                prompt_len=len(request.prompt_token_ids),
                max_tokens=spec.max_tokens,
                ignore_eos=spec.ignore_eos,
                logprobs=spec.logprobs,
                priority=request.priority,
                arrival=self._arrivals + i,
                rng=random.Random(f"{seed}/{i}"),
            )
            for i in range(spec.n)
        ]
        self._arrivals += spec.n
        self._by_request[request.request_id] = seqs
        for seq in seqs:
            self.waiting.push(seq)

    def abort(self, request_id: str) -> list[int]:
        """Drop a request's unfinished choices; returns their indexes."""
        seqs = self._by_request.pop(request_id, [])
        dropped = [s for s in seqs if s.state is not SeqState.FINISHED]
        was_waiting = any(s.state is SeqState.WAITING for s in dropped)
        for seq in dropped:
            self._finish(seq)
        if dropped:
            self.running = [s for s in self.running if s.state is SeqState.RUNNING]
        if was_waiting:
            self.waiting.discard_finished()
        return [s.index for s in dropped]

    def clear(self) -> None:
        """Forget everything (the engine died)."""
        for request_id in list(self._by_request):
            self.abort(request_id)

    # -- steps ------------------------------------------------------------

    def schedule(self) -> StepPlan:
        """Choose this step's sequences and tokens (see the module docstring)."""
        budget = self._profile.max_num_batched_tokens
        scheduled: dict[SimSequence, int] = {}
        preempted = 0
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            tokens = min(seq.pending, budget)
            if self._try_grow(seq, seq.computed + tokens):
                scheduled[seq] = tokens
                budget -= tokens
                i += 1
                continue
            victim_index = self._victim_index()
            victim = self.running.pop(victim_index)
            self._preempt(victim)
            preempted += 1
            budget += scheduled.pop(victim, 0)
            if victim_index < i:
                i -= 1
        if not preempted:
            while self.waiting and budget > 0 and len(self.running) < self._profile.max_num_seqs:
                seq = self.waiting.peek()
                tokens = min(seq.pending, budget)
                if not self._try_grow(seq, tokens):
                    break
                self.waiting.pop()
                seq.state = SeqState.RUNNING
                self.running.append(seq)
                scheduled[seq] = tokens
                budget -= tokens
        prefill = sum(n for seq, n in scheduled.items() if not seq.decoding)
        return StepPlan(tuple(scheduled.items()), prefill, preempted)

    def complete(self, plan: StepPlan) -> list[tuple[str, TokenDelta]]:
        """Apply a finished step: the deltas it produced, by request id."""
        out: list[tuple[str, TokenDelta]] = []
        finished = False
        for seq, tokens in plan.scheduled:
            if seq.state is not SeqState.RUNNING:
                continue  # aborted while the step ran
            seq.computed += tokens
            if seq.pending:
                continue  # a prefill chunk: no token yet
            delta = self._sample(seq)
            out.append((seq.request_id, delta))
            if delta.finish_reason is not None:
                self._finish(seq)
                self._forget_if_done(seq.request_id)
                finished = True
        if finished:
            self.running = [s for s in self.running if s.state is SeqState.RUNNING]
        return out

    # -- internals --------------------------------------------------------

    def _try_grow(self, seq: SimSequence, tokens: int) -> bool:
        need = math.ceil(tokens / self._profile.block_size) - seq.blocks
        if need > self._free_blocks:
            return False
        if need > 0:
            seq.blocks += need
            self._free_blocks -= need
        return True

    def _victim_index(self) -> int:
        if not self.waiting.by_priority:
            return len(self.running) - 1
        return max(
            range(len(self.running)),
            key=lambda k: (self.running[k].priority, self.running[k].arrival),
        )

    def _preempt(self, seq: SimSequence) -> None:
        self._release(seq)
        seq.computed = 0
        seq.state = SeqState.WAITING
        self.waiting.push(seq)
        self.preemptions += 1

    def _finish(self, seq: SimSequence) -> None:
        self._release(seq)
        seq.state = SeqState.FINISHED

    def _release(self, seq: SimSequence) -> None:
        self._free_blocks += seq.blocks
        seq.blocks = 0

    def _forget_if_done(self, request_id: str) -> None:
        seqs = self._by_request.get(request_id, [])
        if all(s.state is SeqState.FINISHED for s in seqs):
            self._by_request.pop(request_id, None)

    def _sample(self, seq: SimSequence) -> TokenDelta:
        p = self._profile
        # Draw both numbers always, so ignore_eos changes when a choice stops,
        # never which tokens it emits.
        draw = seq.rng.random()
        token = seq.rng.randrange(p.vocab_size - 1)
        token += token >= p.eos_token_id  # never EOS by accident
        seq.output_len += 1
        finish: FinishReason | None = None
        if not seq.ignore_eos and draw < p.eos_prob:
            token, finish = p.eos_token_id, FinishReason.STOP
        elif seq.output_len >= seq.max_tokens or seq.num_tokens >= p.max_model_len:
            finish = FinishReason.LENGTH
        text = "" if token == p.eos_token_id else token_text(token)
        logprobs = None if seq.logprobs is None else (_logprob(token, text, seq.logprobs, p),)
        return TokenDelta(seq.index, text, (token,), finish, logprobs)


def token_text(token_id: int) -> str:
    """The simulated detokenization of one (non-EOS) token."""
    return f" t{token_id}"


def _logprob(token: int, text: str, top: int, p: SimulatedProfile) -> TokenLogprob:
    # A fixed function of the token, so asking for logprobs never changes the
    # random stream and hence never the tokens.
    chosen = -1.0 - (token % 97) / 10.0
    alternatives = tuple(
        (token_text((token + k) % p.vocab_size), chosen - k) for k in range(1, top + 1)
    )
    return TokenLogprob(text, chosen, ((text, chosen), *alternatives))
