"""``ConcurrencyController``: one engine's concurrency limit, from its TTFT.

The guide's DynamicBatchController grew the batch while *total* latency was
low. That signal includes the gateway's own queue, so a controller driven by it
shrinks the batch exactly when the queue is long, which lengthens the queue.
This one is driven by *engine-side* TTFT (grant -> first token): how long the
engine takes to start a request with this many sequences already in its batch.
AIMD: additive increase while under target and the limit was binding,
multiplicative decrease when over, bounded by [min_limit, max_limit].

A cut only helps while the engine's step time depends on its batch. Past that
point (a prefill waits one step whatever the batch; the CPU is shared) cutting
further lowers throughput and not TTFT, and plain AIMD rides the limit down to
its floor. So each cut is checked: once samples from the smaller batch arrive,
a cut that did not lower the over-target ratio by ``min_gain`` is undone, and
for ``futile_hold_s`` the controller aims at what the engine showed it can do
(that ratio, plus ``min_gain``) instead of the target: it grows the batch while
TTFT stays there, and cuts only when TTFT rises past it. Then it probes the
real target again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from scheduler.policy import ControllerSettings


@dataclass(frozen=True, slots=True)
class ControllerState:
    limit: int
    target_s: float
    observed_s: float | None  # the window's quantile, None with too few samples
    samples: int
    last_action: str  # "increase", "decrease", "hold", "revert" (a futile cut undone), "fixed"
    observed_by_class: tuple[tuple[str, float], ...] = ()  # each class's window quantile


class ConcurrencyController:
    """AIMD on engine-side TTFT, judged per class against that class's own target.

    A batch request's TTFT may be long by design (vLLM runs it after interactive
    work when the engine uses priorities); only a class missing *its* target is
    a reason to shrink the batch. Samples without a class are judged against
    the tightest target.
    """

    def __init__(self, settings: ControllerSettings, max_limit: int, ttft_target_s: float,
                 class_targets: Mapping[str, float] | None = None) -> None:
        self.settings = settings
        self.max_limit = max_limit
        self.target_s = ttft_target_s * settings.target_fraction
        self._targets = {c: t * settings.target_fraction for c, t in (class_targets or {}).items()}
        initial = settings.initial_limit if settings.initial_limit is not None else max_limit
        # The engine's max_num_seqs wins over a min_limit configured above it.
        self.min_limit = min(settings.min_limit, max_limit)
        self.limit = max(self.min_limit, min(max_limit, initial))
        self._samples: dict[str | None, deque[tuple[float, float]]] = {}
        self._next_update: float | None = None
        self._binding = False
        self._last_action = "hold" if settings.enabled else "fixed"
        self._observed: float | None = None
        self._decreased_at = float("-inf")
        self._cut: tuple[int, float] | None = None  # (limit before, ratio that made it)
        self._hold_until = float("-inf")  # until then, aim at _floor: the last cut bought nothing
        self._floor = 1.0  # the over-target ratio the smaller batch still showed
        self._by_class: tuple[tuple[str, float], ...] = ()

    def observe(self, ttft_s: float, now: float, sla_class: str | None = None) -> None:
        if not self.settings.enabled:
            return  # nothing would ever trim them
        if now - ttft_s < self._decreased_at:
            return  # granted under the old limit: not evidence about this one
        self._samples.setdefault(sla_class, deque()).append((now, ttft_s))

    def note_binding(self) -> None:
        """The limit held back a ticket that could otherwise have been granted."""
        self._binding = True

    def update(self, now: float, used: int | None = None) -> bool:
        """Run one control step if its interval has passed. True if the limit changed.

        ``used``: how much of the limit the engine's batch fills now (None: unknown).
        A cut starts from it when it is below the limit, so that it shrinks the batch.
        """
        s = self.settings
        if not s.enabled:
            return False
        if self._next_update is None:
            self._next_update = now + s.interval_s
            return False
        if now < self._next_update:
            return False
        self._next_update = now + s.interval_s
        horizon = now - s.window_s
        worst: tuple[float, float] | None = None  # (quantile / target, quantile)
        by_class: list[tuple[str, float]] = []
        for sla_class, samples in self._samples.items():
            while samples and samples[0][0] < horizon:
                samples.popleft()
            if len(samples) < s.min_samples:
                continue
            values = np.fromiter((v for _, v in samples), dtype=float)
            q = float(np.quantile(values, s.quantile))
            by_class.append((sla_class or "", q))
            ratio = q / self._targets.get(sla_class, self.target_s)  # type: ignore[arg-type]
            if worst is None or ratio > worst[0]:
                worst = (ratio, q)
        self._by_class = tuple(by_class)
        before = self.limit
        if worst is None:
            self._observed = None
            action = "hold"
        else:
            self._observed = worst[1]
            action = self._step(worst[0], now, self.limit if used is None else used)
        self._binding = False
        self._last_action = action
        return self.limit != before

    def _step(self, ratio: float, now: float, used: int) -> str:
        """One AIMD step on the worst class's quantile / target; the action taken."""
        s = self.settings
        if ratio <= 1.0:
            self._cut = None  # under target: the last cut (if any) did its job
            if self._binding:
                self.limit = min(self.max_limit, self.limit + s.increase)
                return "increase"
            return "hold"
        cut, self._cut = self._cut, None
        if cut is not None and ratio > cut[1] * (1.0 - s.min_gain):
            # The smaller batch is no faster to start: give its throughput back.
            self._set_limit(cut[0], now)
            self._hold_until = now + s.futile_hold_s
            self._floor = ratio
            return "revert"
        if now < self._hold_until and ratio <= self._floor * (1.0 + s.min_gain):
            # As fast as this engine starts requests: more batch costs no TTFT.
            if self._binding:
                self.limit = min(self.max_limit, self.limit + s.increase)
                return "increase"
            return "hold"
        limit = self.limit
        self._set_limit(max(self.min_limit, int(min(limit, used) * s.decrease)), now)
        if s.futile_hold_s > 0 and self.limit < min(limit, used):
            self._cut = (limit, ratio)  # a cut the batch feels: judged on what follows
        return "decrease"

    def _set_limit(self, limit: int, now: float) -> None:
        self.limit = limit
        # Samples taken at the old limit say nothing about the new one.
        self._samples.clear()
        self._decreased_at = now

    def state(self) -> ControllerState:
        return ControllerState(self.limit, self.target_s, self._observed,
                               sum(len(v) for v in self._samples.values()), self._last_action,
                               self._by_class)
