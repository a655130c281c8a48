"""``SimulatedEngine``: the ``Engine`` protocol over a cost model, no model at all.

For fast deterministic tests of the layers above, front-end overhead
benchmarks (zero-cost mode) and what-if capacity planning. Never the default;
``EngineInfo.extra["simulated"] == "true"`` labels it wherever engines are
listed, and its log lines say "simulated".

One background task per engine (owned by ``start``/``stop``) runs the steps of
a continuous batch (``engines.sim_batch``): each step sleeps its simulated cost
(``engines.sim_profile``) times ``time_scale`` on the event loop's clock, then
hands each sequence's new token to its request's stream. Tokens are a seeded
pseudo-random function of ``(seed or request_id, choice index)``, so for a given
profile, seed and arrival order everything but wall-clock jitter is repeatable.

Fault hooks for reliability tests: ``fail_next``, ``kill``, ``stall``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import dataclasses
import hashlib
import logging
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engines.protocol import (
    EngineDeadError,
    EngineError,
    EngineInfo,
    EngineStats,
    FinishReason,
    GenerationRequest,
    TokenDelta,
    WarmupReport,
)
from engines.sim_batch import SimBatch
from engines.sim_profile import DEFAULT_PROFILE, SimulatedProfile

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Fault:
    error: EngineError
    after_tokens: int


class _Stream:
    """Deltas of one request on their way from the step loop to its generator.

    The generator, when it finds nothing queued, waits on a bare future that the
    next ``push`` (or ``fail``) resolves: one wake-up per token without an
    ``asyncio.Event``'s waiter list and its clear/wait/remove on every token.
    """

    __slots__ = ("_loop", "_waiter", "deltas", "error", "fault", "open_choices")

    def __init__(self, choices: int, fault: _Fault | None) -> None:
        self.deltas: collections.deque[TokenDelta] = collections.deque()
        self.error: EngineError | None = None
        self.fault = fault
        self.open_choices = choices
        self._waiter: asyncio.Future[None] | None = None
        self._loop = asyncio.get_running_loop()

    def push(self, delta: TokenDelta) -> None:
        self.deltas.append(delta)
        self._wake()

    def fail(self, error: EngineError) -> None:
        self.error = error  # overtakes queued deltas: the engine is gone
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():  # else its generator was cancelled while waiting
                waiter.set_result(None)

    def waiter(self) -> asyncio.Future[None]:
        """A future the next ``push`` or ``fail`` resolves (await it when empty)."""
        waiter = self._waiter = self._loop.create_future()
        return waiter


class SimulatedEngine:
    """A simulated engine (see the module docstring)."""

    def __init__(
        self,
        name: str,
        served_model_name: str | None = None,
        profile: SimulatedProfile = DEFAULT_PROFILE,
        *,
        model_path: str | None = None,
    ) -> None:
        """``model_path``: a real model directory whose tokenizer the gateway
        should load for this engine (tests of the whole app); its weights are
        never read."""
        self.name = name
        self.profile = profile
        self._info = EngineInfo(
            model_path=model_path or f"simulated:{name}",
            served_model_name=served_model_name or name,
            max_model_len=profile.max_model_len,
            eos_token_id=profile.eos_token_id,
            extra={"simulated": "true"},
        )
        self._batch = SimBatch(profile)
        self._streams: dict[str, _Stream] = {}
        self._faults: collections.deque[_Fault] = collections.deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._dead = False
        self._stalled_until = 0.0
        self._simulated_s = 0.0

    @classmethod
    def from_args(
        cls, name: str, served_model_name: str | None, args: Mapping[str, Any]
    ) -> SimulatedEngine:
        """An engine whose profile is the default with config ``args`` applied."""
        return cls(name, served_model_name, SimulatedProfile.from_args(args))

    @classmethod
    def zero_cost(
        cls,
        name: str,
        served_model_name: str | None = None,
        profile: SimulatedProfile = DEFAULT_PROFILE,
    ) -> SimulatedEngine:
        """An engine whose steps cost nothing: tokens as fast as the loop allows."""
        return cls(name, served_model_name, dataclasses.replace(profile, zero_cost=True))

    @property
    def simulated_seconds(self) -> float:
        """Simulated busy time so far (sum of step costs, before ``time_scale``)."""
        return self._simulated_s

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> EngineInfo:
        if self._stopped:
            raise EngineDeadError(f"simulated engine {self.name} was stopped; make a new one")
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run_steps(), name=f"simulated-engine-{self.name}"
            )
            logger.info("simulated engine %s started: %s", self.name, self.profile)
        return self._info

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for request_id in list(self._streams):
            self._abort_request(request_id)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        logger.info("simulated engine %s stopped", self.name)

    @property
    def healthy(self) -> bool:
        return self._task is not None and not self._stopped and not self._dead

    def stats(self) -> EngineStats:
        return EngineStats(
            name=self.name,
            healthy=self.healthy,
            running=len(self._batch.running),
            waiting=len(self._batch.waiting),
            kv_cache_usage=self._batch.kv_cache_usage,
            preemptions=self._batch.preemptions,
            inflight=len(self._streams),
        )

    # -- generation --------------------------------------------------------

    async def warmup(self, prompts: Sequence[GenerationRequest]) -> WarmupReport:
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def run(request: GenerationRequest) -> int:
            count = 0
            async for delta in self.generate(request):
                count += len(delta.token_ids)
            return count

        counts = await asyncio.gather(*(run(p) for p in prompts))
        return WarmupReport(
            engine=self.name,
            requests=len(prompts),
            seconds=loop.time() - started,
            prompt_tokens=sum(len(p.prompt_token_ids) for p in prompts),
            output_tokens=sum(counts),
        )

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[TokenDelta, None]:
        stream = self._admit(request)
        rid = request.request_id
        emitted = 0
        try:
            while stream.open_choices:
                if stream.fault is not None and emitted >= stream.fault.after_tokens:
                    raise copy.copy(stream.fault.error)
                # The queue read inline: awaiting the bare future costs no
                # coroutine per token.
                while stream.error is None and not stream.deltas:
                    await stream.waiter()
                if stream.error is not None:
                    raise stream.error
                delta = stream.deltas.popleft()
                if delta.finish_reason is not None:
                    stream.open_choices -= 1
                emitted += len(delta.token_ids)
                yield delta
        finally:
            # Closed early (client gone), failed or done: a no-op in the last case.
            del self._streams[rid]
            self._batch.abort(rid)

    async def abort(self, request_id: str) -> None:
        self._abort_request(request_id)

    # -- fault hooks ---------------------------------------------------------

    def fail_next(
        self, n: int = 1, exc: EngineError | None = None, *, after_tokens: int = 0
    ) -> None:
        """Make the next ``n`` requests raise ``exc`` (default: a plain ``EngineError``).

        With ``after_tokens`` > 0 each such request first streams that many tokens
        (all choices together), then fails mid-stream; one that finishes sooner
        just finishes.
        """
        error = exc or EngineError(f"simulated engine {self.name}: injected failure")
        self._faults.extend(_Fault(error, after_tokens) for _ in range(n))

    def kill(self) -> None:
        """Die now: in-flight and later requests raise ``EngineDeadError``."""
        self._die(EngineDeadError(f"simulated engine {self.name} was killed"))
        if self._task is not None:
            self._task.cancel()  # stop() still awaits it

    def stall(self, seconds: float) -> None:
        """Pause the step loop for ``seconds`` of the loop clock (not scaled).

        The watchdogs that detect a stalled engine measure the loop clock, so the
        stall does too. Takes effect at the next step; extends, never shortens,
        a stall already under way. The engine stays ``healthy`` meanwhile.
        """
        until = asyncio.get_running_loop().time() + seconds
        self._stalled_until = max(self._stalled_until, until)

    # -- internals -----------------------------------------------------------

    def _admit(self, request: GenerationRequest) -> _Stream:
        if self._dead:
            raise EngineDeadError(f"simulated engine {self.name} is dead")
        if not self.healthy:
            raise EngineDeadError(f"simulated engine {self.name} is not running")
        fault = self._faults.popleft() if self._faults else None
        if fault is not None and fault.after_tokens <= 0:
            raise copy.copy(fault.error)
        self._validate(request)
        spec = request.sampling
        seed = spec.seed if spec.seed is not None else _stable_seed(request.request_id)
        self._batch.add(request, seed)
        stream = _Stream(spec.n, fault)
        self._streams[request.request_id] = stream
        self._wake.set()
        return stream

    def _validate(self, request: GenerationRequest) -> None:
        spec, prompt_len = request.sampling, len(request.prompt_token_ids)
        limit = self.profile.max_model_len
        problem = None
        if request.request_id in self._streams:
            problem = f"request id {request.request_id!r} is already running"
        elif spec.n < 1 or spec.max_tokens < 1:
            problem = f"n ({spec.n}) and max_tokens ({spec.max_tokens}) must be >= 1"
        elif not 0 < prompt_len < limit:
            problem = f"prompt of {prompt_len} tokens does not fit max_model_len {limit}"
        if problem:
            raise EngineError(f"simulated engine {self.name} refused the request: {problem}")

    def _abort_request(self, request_id: str) -> None:
        stream = self._streams.get(request_id)
        for index in self._batch.abort(request_id):
            if stream is not None:
                stream.push(TokenDelta(index, "", (), FinishReason.ABORT))

    def _die(self, error: EngineDeadError) -> None:
        self._dead = True
        for stream in self._streams.values():
            stream.fail(error)
        self._batch.clear()

    async def _run_steps(self) -> None:
        loop = asyncio.get_running_loop()
        step_end = loop.time()
        try:
            while True:
                while (pause := self._stalled_until - loop.time()) > 0:
                    await asyncio.sleep(pause)
                    step_end = loop.time()
                if not self._batch.has_work:
                    self._wake.clear()
                    await self._wake.wait()
                    step_end = loop.time()
                    continue
                plan = self._batch.schedule()
                cost = self.profile.step_seconds(len(plan.scheduled), plan.prefill_tokens)
                self._simulated_s += cost
                # Steps keep to a timetable, so the loop's own work between steps
                # (up to one step's length) is absorbed instead of added: with a
                # small time_scale it would otherwise dwarf the simulated costs.
                duration = cost * self.profile.time_scale
                step_end = max(step_end, loop.time() - duration) + duration
                await asyncio.sleep(step_end - loop.time())
                for request_id, delta in self._batch.complete(plan):
                    self._streams[request_id].push(delta)
        except Exception as exc:
            # A bug in the simulation: fail loudly, as a dead engine would.
            logger.exception("simulated engine %s step loop failed", self.name)
            self._die(EngineDeadError(f"simulated engine {self.name} failed: {exc!r}"))


def _stable_seed(request_id: str) -> int:
    # hash() of a str changes per process; runs must repeat across processes.
    return int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=8).digest(), "big")
