"""The scheduler keeps no finished ticket alive: memory and GC work stay flat under load."""

from __future__ import annotations

import gc

from sched_support import policy, scheduler, ticket

from scheduler.ticket import Ticket


def _live_tickets() -> int:
    gc.collect()
    # type(), not isinstance(): the latter reads __class__, which some lazy
    # third-party objects answer with a warning.
    return sum(type(o) is Ticket for o in gc.get_objects())


def test_granted_and_released_tickets_are_not_retained() -> None:
    # One busy class and nothing below it: the case where only the queue's own
    # bookkeeping could trim its arrival order.
    s = scheduler([policy("interactive")], {"a": 4})
    before = _live_tickets()
    now = 0.0
    for _ in range(2_000):
        now += 0.001
        t = ticket("interactive", arrival=now)
        assert s.submit(t, now) is None
        assert s.dispatch(now) == [t]
        s.release(t, now)
    del t
    assert s.next_deadline() is None  # the dispatcher's timer pass drops stale deadlines
    assert _live_tickets() - before < 10
    assert s.counters["interactive"]["finished"] == 2_000


def test_queued_tickets_still_come_out_oldest_first_after_trimming() -> None:
    s = scheduler([policy("interactive")], {"a": 1})
    first, second, third = (ticket("interactive", arrival=float(i)) for i in range(3))
    for t in (first, second, third):
        assert s.submit(t, t.arrival) is None
    assert s.dispatch(3.0) == [first]
    s.release(first, 3.0)
    assert s.queues["interactive"].oldest() is second
    s.cancel(second)
    assert s.queues["interactive"].oldest() is third
    assert s.dispatch(4.0) == [third]


def test_queued_count_follows_every_way_out_of_a_queue() -> None:
    s = scheduler([policy("interactive", queue_timeout_s=1.0), policy("batch", rank=1)],
                  {"a": 1})
    tickets = [ticket("interactive", arrival=0.0, timeout_s=1.0) for _ in range(3)]
    tickets += [ticket("batch", arrival=0.0) for _ in range(2)]
    for t in tickets:
        assert s.submit(t, 0.0) is None
    total = lambda: sum(len(q) for q in s.queues.values())  # noqa: E731
    assert s.queued() == total() == 5
    (granted,) = s.dispatch(0.0)  # one slot
    assert s.queued() == total() == 4
    s.cancel(tickets[1])
    assert s.queued() == total() == 3
    assert len(s.expire(2.0)) == 1  # the last interactive one timed out
    assert s.queued() == total() == 2
    s.release(granted, 2.0)
    assert len(s.dispatch(2.0)) == 1 and s.queued() == total() == 1
