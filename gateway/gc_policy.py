"""When the cyclic garbage collector may pause the serving loop.

CPython collects by generation: young collections are short, a full (gen-2)
collection scans every tracked object that is not frozen. Start-up's millions
of objects are frozen once the engines are warm (``gc.freeze`` in ``app``), but
under overload the heap fills again with *queued requests* — each an aiohttp
request, its task and coroutine, the parsed body, token ids, a ticket, a future.
Measured at 2x capacity with 2,000 requests queued (demo model, CPU box): one
automatic full collection stopped the loop for 148 ms, and CPython's default
young thresholds (700, 10) gave gen-1 pauses of 10-30 ms.

The policy here:
* young collections stay automatic but smaller: gen 1 every ``GEN1_EVERY``
  young collections instead of 10 (gen-1 pauses p50 3.5 ms instead of 10-15);
* automatic full collections are off (a threshold no run reaches); the gateway
  runs them itself, when nothing is queued (the heap holds only requests in
  flight, so the pause is short) at most every ``idle_every_s``, and regardless
  after ``max_every_s``, which bounds how long cyclic garbage can linger.

Pauses of every generation are observed into ``gateway_gc_pause_seconds``.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

GEN0_THRESHOLD = 700  # CPython's default
GEN1_EVERY = 3
# Far beyond any run's gen-1 count: full collections happen only when maybe_collect runs one.
_NO_AUTOMATIC_FULL = 1 << 30


@dataclass(slots=True)
class FullCollectionClock:
    """Decides when the next full collection is due (pure; the clock is passed in)."""

    idle_every_s: float = 10.0
    max_every_s: float = 300.0
    last: float = 0.0

    def due(self, now: float, idle: bool) -> bool:
        waited = now - self.last
        return waited >= self.max_every_s or (idle and waited >= self.idle_every_s)


class CollectorPolicy:
    """Owns the collector's thresholds and the full collections while serving."""

    def __init__(self, observe: Callable[[int, float], None],
                 clock: FullCollectionClock | None = None,
                 now: Callable[[], float] = time.monotonic) -> None:
        self._observe = observe  # (generation, seconds) for every collection
        self.clock = clock or FullCollectionClock()
        self._now = now
        self._started: float | None = None
        self.full_collections = 0

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            self._observe(int(info["generation"]), time.perf_counter() - self._started)
            self._started = None

    def install(self) -> tuple[int, int, int]:
        """Take over the thresholds and start observing pauses; the old thresholds."""
        old = gc.get_threshold()
        gc.set_threshold(GEN0_THRESHOLD, GEN1_EVERY, _NO_AUTOMATIC_FULL)
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)
        self.clock.last = self._now()
        return old

    def uninstall(self, thresholds: tuple[int, int, int]) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        gc.set_threshold(*thresholds)

    def maybe_collect(self, idle: bool) -> bool:
        """Run a full collection if one is due now; True if it ran."""
        now = self._now()
        if not self.clock.due(now, idle):
            return False
        gc.collect()
        self.clock.last = self._now()
        self.full_collections += 1
        return True

    async def run(self, idle: Callable[[], bool], period_s: float = 1.0) -> None:
        """Forever (until cancelled): look every ``period_s``; collect when due."""
        thresholds = self.install()
        try:
            while True:
                await asyncio.sleep(period_s)
                self.maybe_collect(idle())
        finally:
            self.uninstall(thresholds)
