"""``ConcurrencyController``: one engine's concurrency limit, from its TTFT.

The guide's DynamicBatchController grew the batch while *total* latency was
low. That signal includes the gateway's own queue, so a controller driven by it
shrinks the batch exactly when the queue is long, which lengthens the queue.
This one is driven by *engine-side* TTFT (grant -> first token): how long the
engine takes to start a request with this many sequences already in its batch.
AIMD: additive increase while under target and the limit was binding,
multiplicative decrease when over, bounded by [min_limit, max_limit].
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from scheduler.policy import ControllerSettings


@dataclass(frozen=True, slots=True)
class ControllerState:
    limit: int
    target_s: float
    observed_s: float | None  # the window's quantile, None with too few samples
    samples: int
    last_action: str  # "increase", "decrease", "hold", "fixed"


class ConcurrencyController:
    def __init__(self, settings: ControllerSettings, max_limit: int, ttft_target_s: float) -> None:
        self.settings = settings
        self.max_limit = max_limit
        self.target_s = ttft_target_s * settings.target_fraction
        initial = settings.initial_limit if settings.initial_limit is not None else max_limit
        self.limit = max(settings.min_limit, min(max_limit, initial))
        self._samples: deque[tuple[float, float]] = deque()  # (time, ttft)
        self._next_update: float | None = None
        self._binding = False
        self._last_action = "hold" if settings.enabled else "fixed"
        self._observed: float | None = None

    def observe(self, ttft_s: float, now: float) -> None:
        self._samples.append((now, ttft_s))

    def note_binding(self) -> None:
        """The limit held back a ticket that could otherwise have been granted."""
        self._binding = True

    def update(self, now: float) -> bool:
        """Run one control step if its interval has passed. True if the limit changed."""
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
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()
        before = self.limit
        if len(self._samples) < s.min_samples:
            self._observed = None
            action = "hold"
        else:
            values = np.fromiter((v for _, v in self._samples), dtype=float)
            self._observed = float(np.quantile(values, s.quantile))
            if self._observed > self.target_s:
                self.limit = max(s.min_limit, int(self.limit * s.decrease))
                # Samples taken at the old limit say nothing about the new one.
                self._samples.clear()
                action = "decrease"
            elif self._binding:
                self.limit = min(self.max_limit, self.limit + s.increase)
                action = "increase"
            else:
                action = "hold"
        self._binding = False
        self._last_action = action
        return self.limit != before

    def state(self) -> ControllerState:
        return ControllerState(self.limit, self.target_s, self._observed, len(self._samples),
                               self._last_action)
