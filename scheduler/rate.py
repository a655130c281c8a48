"""``RateMeter``: events per second over a sliding window (for drain rates)."""

from __future__ import annotations

from collections import deque


class RateMeter:
    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._events: deque[float] = deque()
        self._started: float | None = None

    def record(self, now: float) -> None:
        if self._started is None:
            self._started = now
        self._events.append(now)
        self._trim(now)

    def rate(self, now: float) -> float | None:
        """Events per second, or None before there is anything to go on."""
        self._trim(now)
        if self._started is None or not self._events:
            return None
        span = min(self.window_s, now - self._started)
        if span <= 0:
            return None
        return len(self._events) / span

    def _trim(self, now: float) -> None:
        horizon = now - self.window_s
        while self._events and self._events[0] < horizon:
            self._events.popleft()
