"""Dispatcher: the async driver around the pure scheduler (fake clock, no real waits
beyond a few loop turns and the timer loop's millisecond polls)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import pytest
from sched_support import FIXED, policy, reconciles, scheduler, ticket

from scheduler.controller import ConcurrencyController
from scheduler.dispatcher import Dispatcher, Expired, Rejected
from scheduler.policy import ControllerSettings
from scheduler.ticket import TicketState

POLL = ControllerSettings(enabled=False, interval_s=0.002)  # run() polls every 2 ms


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(engines: dict[str, int] | None = None, controller: ControllerSettings = FIXED,
         **class_kw: Any) -> tuple[Dispatcher, FakeClock]:
    clock = FakeClock()
    s = scheduler([policy("c", engines=list(engines or {"a": 1}), **class_kw)],
                  engines or {"a": 1}, controller=controller)
    return Dispatcher(s, clock=clock), clock


async def turns(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def until(predicate: Callable[[], bool], limit_s: float = 1.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + limit_s
    while not predicate():
        assert loop.time() < end, "condition not reached"
        await asyncio.sleep(0.001)


@contextlib.asynccontextmanager
async def running(d: Dispatcher,
                  healthy: Callable[[], Iterable[str]] | None = None) -> AsyncIterator[None]:
    task = asyncio.create_task(d.run(healthy))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def no_leaks(d: Dispatcher) -> None:
    assert d._waiters == {}
    assert d.scheduler.queued() == 0
    reconciles(d.scheduler)


async def test_acquire_grants_at_once_when_free() -> None:
    d, clock = make()
    t = ticket("c", arrival=clock.now)
    assert await d.acquire(t) == "a"
    assert t.state is TicketState.GRANTED and t.granted_at == clock.now
    d.release(t)
    assert d.scheduler.inflight["a"] == 0
    no_leaks(d)


async def test_queued_acquire_resolves_on_release() -> None:
    d, clock = make()
    first, second = ticket("c", arrival=clock.now), ticket("c", arrival=clock.now)
    await d.acquire(first)
    waiting = asyncio.create_task(d.acquire(second))
    await turns()
    assert not waiting.done() and second.state is TicketState.QUEUED
    clock.now += 2.0
    d.release(first)
    assert await waiting == "a"
    assert second.granted_at == clock.now
    d.release(second)
    no_leaks(d)


async def test_cancelled_waiter_leaves_the_queue() -> None:
    d, clock = make()
    holder, queued = ticket("c", arrival=clock.now), ticket("c", arrival=clock.now)
    await d.acquire(holder)
    waiting = asyncio.create_task(d.acquire(queued))
    await turns()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert queued.state is TicketState.DONE
    assert d.scheduler.counters["c"]["cancelled"] == 1
    assert d.scheduler.next_deadline() is None
    d.release(holder)
    assert d.scheduler.inflight["a"] == 0  # nothing was granted to the gone waiter
    no_leaks(d)


async def test_cancelled_between_grant_and_wakeup_gives_the_slot_back() -> None:
    d, clock = make()
    holder, queued, third = (ticket("c", arrival=clock.now) for _ in range(3))
    await d.acquire(holder)
    waiting = asyncio.create_task(d.acquire(queued))
    await turns()
    d.release(holder)  # grants `queued`; its task has not run yet
    assert queued.state is TicketState.GRANTED
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert d.scheduler.inflight["a"] == 0
    assert d.scheduler.counters["c"]["abandoned"] == 1
    assert await d.acquire(third) == "a"  # the slot really is free
    d.release(third)
    no_leaks(d)


async def test_waiter_cancelled_before_dispatch_is_never_granted() -> None:
    d, clock = make()
    holder, queued = ticket("c", arrival=clock.now), ticket("c", arrival=clock.now)
    await d.acquire(holder)
    waiting = asyncio.create_task(d.acquire(queued))
    await turns()
    waiting.cancel()  # its future is cancelled, its handler has not run yet
    d.release(holder)  # a dispatch in that window
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert queued.state is TicketState.DONE
    assert d.scheduler.inflight["a"] == 0
    assert d._waiters == {}


async def test_expired_after_the_deadline() -> None:
    d, clock = make(controller=POLL)
    holder = ticket("c", arrival=clock.now)
    late = ticket("c", arrival=clock.now, deadline=clock.now + 5.0)
    await d.acquire(holder)
    async with running(d):
        waiting = asyncio.create_task(d.acquire(late))
        await turns()
        clock.now += 4.9
        await asyncio.sleep(0.01)
        assert not waiting.done()
        clock.now += 0.2
        await until(waiting.done)
        with pytest.raises(Expired) as info:
            await waiting
    assert info.value.ticket is late
    assert info.value.waited_s == pytest.approx(5.1)
    assert late.state is TicketState.DONE
    assert d.scheduler.counters["c"]["expired"] == 1
    d.release(holder)
    no_leaks(d)


async def test_rejected_carries_the_rejection() -> None:
    d, clock = make(max_queue=0)
    with pytest.raises(Rejected) as info:
        await d.acquire(ticket("c", arrival=clock.now))
    r = info.value.rejection
    assert r.reason == "queue_full" and r.retry_after_s >= 1
    assert str(info.value) == r.message
    no_leaks(d)


async def test_run_follows_engine_health() -> None:
    d, clock = make(engines={"a": 1, "b": 1}, controller=POLL)
    up = {"a", "b"}
    first = ticket("c", arrival=clock.now)
    async with running(d, lambda: up):
        up.discard("a")
        await until(lambda: d.scheduler.healthy == {"b"})
        assert await d.acquire(first) == "b"
        second = ticket("c", arrival=clock.now)
        waiting = asyncio.create_task(d.acquire(second))
        await turns()
        assert not waiting.done()  # b is full, a is down
        up.add("a")
        assert await waiting == "a"
        d.release(first)
        d.release(second)
    no_leaks(d)


async def test_run_ticks_controllers_and_grants_when_a_limit_grows() -> None:
    settings = ControllerSettings(initial_limit=1, min_limit=1, interval_s=0.002,
                                  window_s=60.0, min_samples=1)
    d, clock = make(engines={"a": 4}, controller=settings)
    changes: list[int] = []
    d = Dispatcher(d.scheduler, clock=clock,
                   on_change=lambda: changes.append(d.scheduler.limit("a")))
    holder, queued = ticket("c", arrival=clock.now), ticket("c", arrival=clock.now)
    await d.acquire(holder)
    clock.now += 0.01
    d.first_token(holder)  # fast: well under target
    async with running(d):
        waiting = asyncio.create_task(d.acquire(queued))  # the limit of 1 binds
        for _ in range(3):  # first step schedules, the next one may grow
            await asyncio.sleep(0.005)
            clock.now += 1.0
        assert await asyncio.wait_for(waiting, 1.0) == "a"
    controller: ConcurrencyController = d.scheduler.controllers["a"]
    assert controller.limit >= 2
    assert changes  # observers heard about it
    d.release(holder)
    d.release(queued)
    no_leaks(d)
