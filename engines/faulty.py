"""``FaultyEngine``: any ``Engine``, with faults a test can provoke on demand.

It wraps the real thing (``VLLMEngine`` or the simulated engine) and forwards
everything, except that a test can make it

- ``fail_next``: fail the next requests with an ``EngineError`` (at once or
  after some tokens), the engine staying healthy;
- ``stall``: hold back every delta for a while (or until ``resume``), as a
  hung engine would, while the wrapped engine keeps running (closing the
  stream still aborts it there);
- ``kill``: die now: every in-flight stream raises ``EngineDeadError`` at once,
  ``healthy`` turns false and later requests are refused.

Each request's deltas are pumped from the wrapped engine by a task owned by
that request's generator, so a fault reaches a consumer that is waiting for
its next delta. ``aborted`` lists the request ids whose streams were closed
before they finished, for tests that check an abort reached the engine.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace

from engines.protocol import (
    Engine,
    EngineDeadError,
    EngineError,
    EngineInfo,
    EngineStats,
    GenerationRequest,
    TokenDelta,
    WarmupReport,
)


@dataclass(frozen=True, slots=True)
class _Failure:
    error: EngineError
    after_tokens: int


class _Relay:
    """Deltas of one request between its pump task and its generator."""

    __slots__ = ("deltas", "done", "error", "ready")

    def __init__(self) -> None:
        self.deltas: collections.deque[TokenDelta] = collections.deque()
        self.error: BaseException | None = None
        self.done = False
        self.ready = asyncio.Event()

    def fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self.ready.set()


class FaultyEngine:
    """An ``Engine`` wrapper with fault hooks (see the module docstring)."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.name = inner.name
        self.aborted: list[str] = []
        self._failures: collections.deque[_Failure] = collections.deque()
        self._relays: dict[str, _Relay] = {}
        self._dead: EngineDeadError | None = None
        self._stalled_until = 0.0
        self._unstall = asyncio.Event()

    # -- fault hooks -------------------------------------------------------

    def fail_next(self, n: int = 1, *, after_tokens: int = 0,
                  error: EngineError | None = None) -> None:
        """Fail the next ``n`` requests, each after ``after_tokens`` tokens."""
        error = error or EngineError(f"engine {self.name}: injected failure")
        self._failures.extend(_Failure(error, after_tokens) for _ in range(n))

    def stall(self, seconds: float) -> None:
        """Deliver no delta for ``seconds`` of the loop clock (extends, never shortens)."""
        until = asyncio.get_running_loop().time() + seconds
        self._stalled_until = max(self._stalled_until, until)
        self._unstall.clear()

    def resume(self) -> None:
        """End a stall now."""
        self._stalled_until = 0.0
        self._unstall.set()

    def kill(self) -> None:
        """Die now (see the module docstring). ``stop`` still releases the wrapped engine."""
        if self._dead is None:
            self._dead = EngineDeadError(f"engine {self.name} was killed")
        for relay in self._relays.values():
            relay.fail(self._dead)
        self._unstall.set()

    # -- Engine --------------------------------------------------------------

    async def start(self) -> EngineInfo:
        return await self.inner.start()

    async def warmup(self, prompts: Sequence[GenerationRequest]) -> WarmupReport:
        return await self.inner.warmup(prompts)

    async def stop(self) -> None:
        # As VLLMEngine does: what still runs fails, it does not "finish".
        stopped = EngineDeadError(f"engine {self.name} was stopped")
        for relay in self._relays.values():
            relay.fail(stopped)
        await self.inner.stop()

    @property
    def healthy(self) -> bool:
        return self._dead is None and self.inner.healthy

    def stats(self) -> EngineStats:
        return replace(self.inner.stats(), healthy=self.healthy)

    async def abort(self, request_id: str) -> None:
        await self.inner.abort(request_id)

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[TokenDelta, None]:
        if self._dead is not None:
            raise self._dead
        failure = self._failures.popleft() if self._failures else None
        if failure is not None and failure.after_tokens <= 0:
            raise failure.error
        rid = request.request_id
        relay = _Relay()
        self._relays[rid] = relay
        pump = asyncio.create_task(self._pump(request, relay), name=f"faulty-pump-{rid}")
        emitted = 0
        finished = False
        try:
            while True:
                delta = await self._next(relay)
                if delta is None:
                    finished = True
                    return
                if failure is not None and emitted >= failure.after_tokens:
                    raise failure.error
                emitted += len(delta.token_ids)
                yield delta
        finally:
            del self._relays[rid]
            if not finished:
                self.aborted.append(rid)
            pump.cancel()  # closes the wrapped stream, which aborts the request there
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    async def _next(self, relay: _Relay) -> TokenDelta | None:
        loop = asyncio.get_running_loop()
        while True:
            if relay.error is not None:
                raise relay.error
            pause = self._stalled_until - loop.time()
            if pause > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._unstall.wait(), pause)
                continue
            if relay.deltas:
                return relay.deltas.popleft()
            if relay.done:
                return None
            relay.ready.clear()
            await relay.ready.wait()

    async def _pump(self, request: GenerationRequest, relay: _Relay) -> None:
        try:
            async with aclosing(self.inner.generate(request)) as deltas:
                async for delta in deltas:
                    relay.deltas.append(delta)
                    relay.ready.set()
            relay.done = True
            relay.ready.set()
        except EngineError as exc:
            relay.fail(exc)
