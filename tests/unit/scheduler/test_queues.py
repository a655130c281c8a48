"""ClassQueue: tenant fairness by tokens granted, EDF inside a tenant, lazy removal."""

from __future__ import annotations

import itertools

from sched_support import ticket

from scheduler.queues import ClassQueue
from scheduler.ticket import Ticket, TicketState

_seq = itertools.count()


def push(q: ClassQueue, tenant: str, *, cost: int = 100, deadline: float = 100.0,
         arrival: float = 0.0) -> Ticket:
    t = ticket("c", tenant=tenant, prompt_tokens=cost // 2, max_tokens=cost - cost // 2,
               arrival=arrival, deadline=deadline)
    t.seq = next(_seq)
    q.push(t)
    return t


def grant(q: ClassQueue) -> Ticket:
    """What the scheduler does on a grant: take the next, charge its tenant."""
    t = q.peek()
    assert t is not None
    q.remove(t)
    q.charge(t)
    t.state = TicketState.GRANTED
    return t


def drop(q: ClassQueue, t: Ticket) -> None:
    q.remove(t)
    t.state = TicketState.DONE


def test_light_tenant_is_not_starved_by_a_heavy_one() -> None:
    q = ClassQueue("c")
    for _ in range(50):
        push(q, "heavy")
    for _ in range(5):
        push(q, "light")
    order = [grant(q).tenant for _ in range(10)]
    # Equal costs: the two alternate, so the light tenant is done within 10 grants
    # even though 50 heavy tickets were queued ahead of it.
    assert order.count("light") == 5
    assert all(order[i] != order[i + 1] for i in range(9))


def test_fairness_counts_tokens_not_requests() -> None:
    q = ClassQueue("c")
    for _ in range(5):
        push(q, "big", cost=1000)
    for _ in range(30):
        push(q, "small", cost=100)
    order = [grant(q).tenant for _ in range(22)]
    # One 1000-token request buys the same share as ten 100-token ones.
    assert order == (["big"] + ["small"] * 10) * 2


def test_tenant_that_was_away_rejoins_at_the_current_minimum() -> None:
    q = ClassQueue("c")
    for _ in range(30):
        push(q, "busy")
    for _ in range(10):
        grant(q)
    for _ in range(10):
        push(q, "late")
    order = [grant(q).tenant for _ in range(10)]
    # No credit for the ten grants it missed while it had nothing queued.
    assert 4 <= order.count("late") <= 6


def test_idle_tenant_banks_no_credit_when_the_queue_ran_empty_meanwhile() -> None:
    q = ClassQueue("c")
    # Light load: each of busy's requests is granted at once, the queue runs empty.
    for _ in range(10):
        push(q, "busy")
        grant(q)
    assert len(q) == 0
    # A burst from both: the tenant that sat out the quiet period gets no head start
    # worth busy's whole history.
    for _ in range(10):
        push(q, "away")
    for _ in range(10):
        push(q, "busy")
    order = [grant(q).tenant for _ in range(6)]
    assert order.count("busy") >= 2, order


def test_earliest_deadline_first_within_a_tenant_then_arrival_order() -> None:
    q = ClassQueue("c")
    late = push(q, "t", deadline=9.0)
    early = push(q, "t", deadline=3.0)
    tie_first = push(q, "t", deadline=5.0)
    tie_second = push(q, "t", deadline=5.0)
    assert [grant(q) for _ in range(4)] == [early, tie_first, tie_second, late]
    assert q.peek() is None


def test_lazy_removal_keeps_counts_and_tokens_exact() -> None:
    q = ClassQueue("c")
    tickets = [push(q, tenant, cost=cost, deadline=float(i))
               for i, (tenant, cost) in enumerate([("a", 10), ("b", 20), ("a", 30),
                                                    ("b", 40), ("a", 50)])]
    assert len(q) == 5 and q.queued_tokens == 150
    drop(q, tickets[0])  # a heap top
    drop(q, tickets[3])  # buried in b's heap
    assert len(q) == 3 and q.queued_tokens == 100
    assert tickets[0].id not in q and q.get(tickets[3].id) is None
    assert tickets[2].id in q
    seen = []
    while q.peek() is not None:
        seen.append(grant(q))
    assert set(seen) == {tickets[1], tickets[2], tickets[4]}
    assert len(q) == 0 and q.queued_tokens == 0


def test_removed_tenant_with_only_dead_tickets_is_skipped() -> None:
    q = ClassQueue("c")
    gone = push(q, "gone")
    stays = push(q, "stays")
    drop(q, gone)
    assert q.peek() is stays


def test_oldest_is_the_first_arrival_still_queued_across_tenants() -> None:
    q = ClassQueue("c")
    assert q.oldest() is None
    first = push(q, "x", arrival=1.0, deadline=50.0)
    second = push(q, "y", arrival=2.0, deadline=10.0)
    third = push(q, "x", arrival=3.0, deadline=5.0)
    assert q.oldest() is first
    drop(q, first)
    assert q.oldest() is second
    # Granting by fairness/EDF in any order leaves oldest() right.
    q.remove(third)
    third.state = TicketState.GRANTED
    assert q.oldest() is second
    drop(q, second)
    assert q.oldest() is None
