"""``Watchdog``: bounds each wait of one request's task without a timer per wait.

A streaming request alternates between two waits: on the engine for its next
delta (bounded by ``server.stall_timeout_s``) and on the client's socket to
take a chunk (``server.write_timeout_s``: aiohttp's ``write`` blocks on drain
once the transport buffer is full). ``asyncio.timeout`` per wait would arm and
cancel a timer per token, which measured ~10-20 us here; instead each wait
only stores its deadline (``expect``) and one timer per request wakes every
``period_s`` to compare. A wait that overran has its task cancelled, and the
``with`` block turns that cancellation into ``Overrun(what)``, the way
``asyncio.timeout`` turns its own into ``TimeoutError``. Detection lags the
deadline by at most ``period_s``.
"""

from __future__ import annotations

import asyncio
import math
from types import TracebackType
from typing import Any


class Overrun(Exception):
    """The wait named ``what`` took longer than its limit."""

    def __init__(self, what: str, limit_s: float) -> None:
        super().__init__(f"{what} wait over {limit_s:g} s")
        self.what = what
        self.limit_s = limit_s


class Watchdog:
    """See the module docstring. Use as ``with Watchdog(period_s) as wd:``."""

    __slots__ = ("_cancelling", "_deadline", "_given", "_handle", "_limit", "_loop", "_period",
                 "_task", "_what", "fired")

    def __init__(self, period_s: float, task: asyncio.Task[Any] | None = None) -> None:
        """``task``: the current task, if the caller has it at hand (else looked up)."""
        self._period = period_s
        self._given = task
        self._deadline = math.inf
        self._what = ""
        self._limit = 0.0
        self.fired: Overrun | None = None
        self._handle: asyncio.TimerHandle | None = None

    def expect(self, what: str, limit_s: float) -> None:
        """The next wait is ``what`` and may take up to ``limit_s`` from now."""
        self._what = what
        self._limit = limit_s
        self._deadline = self._loop.time() + limit_s

    def relax(self) -> None:
        """No bounded wait from here on."""
        self._deadline = math.inf

    def __enter__(self) -> Watchdog:
        task = self._given or asyncio.current_task()
        assert task is not None, "Watchdog must be used inside a task"
        self._task = task
        self._loop = task.get_loop()
        self._cancelling = task.cancelling()
        self._handle = self._loop.call_later(self._period, self._check)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._handle is not None:
            self._handle.cancel()
        # The cancellation is ours, unless someone else (client gone, drain)
        # cancelled too: then it stays a cancellation.
        if (self.fired is not None and exc_type is asyncio.CancelledError
                and self._task.uncancel() <= self._cancelling):
            raise self.fired from exc

    def _check(self) -> None:
        if self._loop.time() >= self._deadline:
            self.fired = Overrun(self._what, self._limit)
            self._handle = None
            self._task.cancel(f"watchdog: {self.fired}")
        else:
            self._handle = self._loop.call_later(self._period, self._check)
