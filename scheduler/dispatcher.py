"""``Dispatcher``: the one async driver around the pure ``Scheduler``.

Requests call ``acquire`` (admission happens at once; then they wait for a
grant), ``first_token`` and ``release``. Dispatch runs inline on every event
that can free a slot or add work, so a grant costs no extra loop hop. One
background task, owned by whoever calls ``run``, handles the timers: queue
deadlines (expired tickets get ``Expired``) and the controllers' ticks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Sequence

from scheduler.admission import Rejection
from scheduler.core import Scheduler
from scheduler.policy import ClassPolicy, SchedulerSettings
from scheduler.ticket import Ticket, TicketState

logger = logging.getLogger(__name__)


class Rejected(Exception):
    """Shed at admission (429)."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.message)
        self.rejection = rejection


class Expired(Exception):
    """Waited past its deadline in the queue (503)."""

    def __init__(self, ticket: Ticket, waited_s: float) -> None:
        super().__init__(f"queued {waited_s:.1f} s in {ticket.sla_class!r} without a free engine")
        self.ticket = ticket
        self.waited_s = waited_s


class Dispatcher:
    def __init__(self, scheduler: Scheduler, clock: Callable[[], float] | None = None,
                 on_change: Callable[[], None] | None = None) -> None:
        self.scheduler = scheduler
        self._clock = clock
        self._waiters: dict[str, asyncio.Future[str]] = {}
        self._wake = asyncio.Event()
        self._on_change = on_change  # e.g. refresh gauges
        self._next_wake = math.inf  # when ``run`` wakes next, on the ``now()`` clock

    def now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    async def acquire(self, ticket: Ticket) -> str:
        """Admit and wait for a grant; returns the engine name.

        Raises ``Rejected`` at once when shed, ``Expired`` when the deadline
        passes in the queue. If the caller is cancelled (client gone) the
        ticket leaves the queue, or, if it was granted meanwhile, its slot is
        released.
        """
        rejection = self.scheduler.submit(ticket, self.now())
        if rejection is not None:
            raise Rejected(rejection)
        self._dispatch(arriving=ticket)
        if ticket.engine is not None:
            # Granted (placed) on arrival, a free slot: nothing to wait for, no future.
            return ticket.engine
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters[ticket.id] = future
        if ticket.state is TicketState.QUEUED and ticket.deadline < self._next_wake:
            # Its deadline is nearer than the timers' next wake-up. Only then:
            # waking the timer task on every arrival cost a loop pass per request.
            self._wake.set()
        try:
            return await future
        except asyncio.CancelledError:
            self._waiters.pop(ticket.id, None)
            if ticket.state is TicketState.QUEUED:
                self.scheduler.cancel(ticket)
            elif ticket.state is TicketState.GRANTED:
                self.release(ticket, "abandoned")
            raise

    def precheck(self, sla_class: str, deadline: float) -> None:
        """Raise ``Rejected`` if a request of this class would be shed whatever
        its size (see ``Scheduler.precheck``); cheap enough to run before the
        prompt is tokenized."""
        rejection = self.scheduler.precheck(sla_class, deadline, self.now())
        if rejection is not None:
            raise Rejected(rejection)

    def first_token(self, ticket: Ticket) -> None:
        if self.scheduler.first_token(ticket, self.now()):
            self._dispatch()  # its prompt left the prefill budget: a paced class may start

    def release(self, ticket: Ticket, outcome: str = "finished") -> None:
        self.scheduler.release(ticket, self.now(), outcome)
        self._dispatch()

    def reconfigure(self, classes: Sequence[ClassPolicy], settings: SchedulerSettings) -> None:
        """New class policies and settings (a config reload); waiting requests keep
        waiting. New limits or classes may free slots, so dispatch runs at once."""
        self.scheduler.reconfigure(classes, settings)
        self._dispatch()
        self._wake.set()  # the timer interval may have changed

    def set_healthy(self, engines: Iterable[str]) -> None:
        self.scheduler.set_healthy(engines)
        self._dispatch()

    def _dispatch(self, arriving: Ticket | None = None) -> None:
        """Grant what can run now and wake the waiters; ``arriving``, a ticket just
        submitted whose caller has no waiter yet, is left for the caller to see."""
        for ticket in self.scheduler.dispatch(self.now()):
            if ticket is arriving:
                continue
            future = self._waiters.pop(ticket.id, None)
            if future is None or future.done():
                # Its waiter is gone (cancelled between grant and now). Not
                # "cancelled": that counts tickets that left the queue ungranted.
                self.scheduler.release(ticket, self.now(), "abandoned")
                continue
            assert ticket.engine is not None
            future.set_result(ticket.engine)
        if self._on_change is not None:
            self._on_change()

    async def run(self, healthy: Callable[[], Iterable[str]] | None = None) -> None:
        """Timers: expire tickets past their deadline, tick the controllers, and
        (if given a source) follow engine health."""
        while True:
            interval = self.scheduler.settings.controller.interval_s  # a reload may change it
            if healthy is not None:
                engines = set(healthy())
                if engines != self.scheduler.healthy:
                    self.set_healthy(engines)
            now = self.now()
            for ticket in self.scheduler.expire(now):
                future = self._waiters.pop(ticket.id, None)
                if future is not None and not future.done():
                    future.set_exception(Expired(ticket, now - ticket.arrival))
            if self.scheduler.tick(now):
                self._dispatch()
            elif self._on_change is not None:
                self._on_change()
            deadline = self.scheduler.next_deadline()
            wait = interval if deadline is None else min(interval, max(0.0, deadline - now))
            self._next_wake = now + wait
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(wait, 0.001))
