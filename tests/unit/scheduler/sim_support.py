"""A synthetic engine and closed-loop clients to drive the scheduler in virtual time.

The engine's TTFT grows with the sequences it is running: a ticket granted when
``n`` sequences (itself included) are in the batch sees its first token after
``per_seq_s * n`` seconds, then decodes for ``decode_s``. With a TTFT target
``T`` for the controller, the limit that meets it is ``T / per_seq_s``.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

from sched_support import ticket

from scheduler.core import Scheduler
from scheduler.ticket import Ticket


@dataclass(frozen=True, slots=True)
class Phase:
    duration_s: float
    clients: int  # closed loop: each keeps one request outstanding
    per_seq_s: float  # engine TTFT per running sequence
    floor_s: float = 0.0  # engine TTFT that no batch size removes (one step, a busy CPU)


@dataclass
class Trace:
    limits: list[tuple[float, int]] = field(default_factory=list)  # (time, limit) per tick
    ttfts: list[tuple[float, float]] = field(default_factory=list)  # (time, engine TTFT)

    def limits_between(self, start: float, end: float) -> list[int]:
        return [v for t, v in self.limits if start <= t < end]

    def ttfts_between(self, start: float, end: float) -> list[float]:
        return [v for t, v in self.ttfts if start <= t < end]


def simulate(s: Scheduler, phases: list[Phase], *, engine: str = "a", cls: str = "interactive",
             decode_s: float = 0.5, tick_s: float = 0.1) -> Trace:
    trace = Trace()
    events: list[tuple[float, int, str, Ticket]] = []
    order = itertools.count()
    outstanding = 0
    now = 0.0

    def arrive(at: float) -> None:
        nonlocal outstanding
        t = ticket(cls, arrival=at, timeout_s=1e9)
        assert s.submit(t, at) is None
        outstanding += 1

    def dispatch(at: float, phase: Phase) -> None:
        for t in s.dispatch(at):
            ttft = phase.floor_s + phase.per_seq_s * s.inflight[engine]
            heapq.heappush(events, (at + ttft, next(order), "first", t))
            heapq.heappush(events, (at + ttft + decode_s, next(order), "done", t))

    for phase in phases:
        end = now + phase.duration_s
        while outstanding < phase.clients:
            arrive(now)
        dispatch(now, phase)
        next_tick = now
        while now < end:
            if events and events[0][0] <= next_tick:
                now, _, kind, t = heapq.heappop(events)
                if kind == "first":
                    assert t.granted_at is not None
                    s.first_token(t, now)
                    trace.ttfts.append((now, now - t.granted_at))
                else:
                    s.release(t, now)
                    outstanding -= 1
                    if outstanding < phase.clients:
                        arrive(now)
            else:
                now = next_tick
                s.tick(now)
                trace.limits.append((now, s.limit(engine)))
                next_tick = now + tick_s
            dispatch(now, phase)
    return trace
