"""Scheduler.dispatch and the ticket lifecycle around it (injected clock)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sched_support import policy, reconciles, scheduler, ticket

from scheduler.core import Scheduler
from scheduler.policy import ControllerSettings
from scheduler.ticket import Ticket, TicketState


def submit(s: Scheduler, cls: str, n: int = 1, now: float = 0.0, **kw: Any) -> list[Ticket]:
    out = []
    for _ in range(n):
        t = ticket(cls, arrival=now, **kw)
        assert s.submit(t, now) is None
        out.append(t)
    return out


def test_strict_rank_on_a_shared_engine() -> None:
    s = scheduler([policy("interactive"), policy("batch", rank=1)], {"a": 2})
    batch = submit(s, "batch", 3)
    inter = submit(s, "interactive", 3, now=0.1)
    first = s.dispatch(0.2)
    assert first == inter[:2]
    s.release(first[0], 0.3)
    assert s.dispatch(0.3) == [inter[2]]
    s.release(first[1], 0.4)
    assert s.dispatch(0.4) == [batch[0]]
    reconciles(s)


def test_weighted_shares_among_classes_of_one_rank() -> None:
    s = scheduler([policy("gold", weight=3.0), policy("silver", weight=1.0)], {"a": 1})
    submit(s, "gold", 400)
    submit(s, "silver", 400)
    served: Counter[str] = Counter()
    for step in range(200):
        now = float(step)
        (t,) = s.dispatch(now)
        served[t.sla_class] += 1
        s.release(t, now + 0.5)
    assert abs(served["gold"] - 150) <= 2 and abs(served["silver"] - 50) <= 2


def test_idle_class_banks_no_share() -> None:
    s = scheduler([policy("x"), policy("y")], {"a": 1})
    submit(s, "x", 60)
    for step in range(50):  # y has nothing to send for a while
        (t,) = s.dispatch(float(step))
        s.release(t, float(step))
    submit(s, "y", 20, now=50.0)
    order = []
    for step in range(50, 60):
        (t,) = s.dispatch(float(step))
        order.append(t.sla_class)
        s.release(t, float(step))
    assert order.count("x") >= 4, order  # y does not get 50 grants in a row


def test_starvation_promotion_under_constant_higher_backlog() -> None:
    s = scheduler([policy("interactive"), policy("batch", rank=1)], {"a": 1},
                  promotion_age_s=10.0)
    (old,) = submit(s, "batch", 1, now=0.0)
    now = 0.0
    running = None
    while old.state is TicketState.QUEUED:
        assert now < 11.0, "batch starved past the promotion age"
        if running is not None:
            s.release(running, now)
        submit(s, "interactive", 1, now=now)  # the higher class never runs dry
        granted = s.dispatch(now)
        assert len(granted) == 1
        running = granted[0]
        if now < 10.0:
            assert running.sla_class == "interactive"
        now += 0.25
    assert old.promoted and old.granted_at == 10.0  # the first dispatch past the age
    assert s.counters["batch"]["promoted"] == 1
    assert s.counters["interactive"]["promoted"] == 0
    reconciles(s)


def test_promoted_class_shares_by_weight_without_banked_credit() -> None:
    s = scheduler([policy("interactive"), policy("batch", rank=1)], {"a": 1},
                  promotion_age_s=10.0)
    submit(s, "batch", 60, now=0.0)
    order = []
    now, running = 0.0, None
    while now < 20.0:
        if running is not None:
            s.release(running, now)
        submit(s, "interactive", 1, now=now)
        (running,) = s.dispatch(now)
        if now >= 10.0:
            order.append(running.sla_class)
        now += 0.1
    # Once old enough, batch takes turns with interactive (weights 1:1); it must
    # not take over the engine to "catch up" for the 100 grants it was ranked out of.
    assert 0 < order.count("batch") <= order.count("interactive") + 1
    assert "batch,batch" not in ",".join(order)


def test_classes_compete_only_for_engines_they_may_use() -> None:
    s = scheduler([policy("interactive", engines=["a"]),
                   policy("batch", rank=1, engines=["b"])], {"a": 1, "b": 1})
    inter = submit(s, "interactive", 5)
    batch = submit(s, "batch", 2)
    granted = s.dispatch(0.0)
    assert granted == [inter[0], batch[0]]
    assert (inter[0].engine, batch[0].engine) == ("a", "b")
    s.release(batch[0], 1.0)
    # Interactive backlog on a does not hold batch back from b.
    assert s.dispatch(1.0) == [batch[1]]


def test_higher_class_may_take_a_shared_engine_first() -> None:
    s = scheduler([policy("interactive", engines=["a", "b"]),
                   policy("batch", rank=1, engines=["b"])], {"a": 1, "b": 1})
    inter = submit(s, "interactive", 3)
    submit(s, "batch", 3)
    assert s.dispatch(0.0) == inter[:2]


def test_reserved_slots_are_kept_for_the_engines_most_urgent_class() -> None:
    s = scheduler([policy("interactive", engines=["a"]),
                   policy("batch", rank=1, engines=["a", "b"])], {"a": 4, "b": 2},
                  reserved_slots=1)
    batch = submit(s, "batch", 8)
    granted = s.dispatch(0.0)
    # a keeps its last slot for interactive; b serves no higher class: all of it.
    assert Counter(t.engine for t in granted) == {"a": 3, "b": 2}
    (urgent,) = submit(s, "interactive", 1, now=0.1)
    assert s.dispatch(0.1) == [urgent] and urgent.engine == "a"
    assert s.inflight == {"a": 4, "b": 2}
    s.release(urgent, 0.2)
    assert s.dispatch(0.2) == []  # the freed slot is the reserved one again
    s.release(granted[0], 0.3)
    assert s.dispatch(0.3) == [batch[5]]


def test_work_held_back_by_a_reservation_makes_the_limit_bind() -> None:
    s = scheduler([policy("interactive"), policy("batch", rank=1)], {"a": 8},
                  reserved_slots=1, controller=ControllerSettings(initial_limit=4, min_samples=1))
    s.tick(0.0)
    submit(s, "batch", 5)
    granted = s.dispatch(0.0)
    assert len(granted) == 3 and s.inflight["a"] < s.limit("a")
    for t in granted:
        s.first_token(t, 0.01)  # fast: room to grow
    s.tick(1.0)
    assert s.limit("a") == 5


def test_top_class_headroom_lets_only_the_urgent_class_past_the_limit() -> None:
    s = scheduler([policy("interactive"), policy("batch", rank=1)], {"a": 8},
                  top_class_headroom=2,
                  controller=ControllerSettings(enabled=False, initial_limit=4, min_limit=1))
    submit(s, "batch", 6)
    assert len(s.dispatch(0.0)) == 4  # batch stops at the controller's limit
    urgent = submit(s, "interactive", 3, now=0.1)
    assert s.dispatch(0.1) == urgent[:2]  # two past the limit, no further
    assert s.inflight["a"] == 6 and s.limit("a") == 4


def test_headroom_stops_at_max_num_seqs() -> None:
    s = scheduler([policy("interactive")], {"a": 3}, top_class_headroom=10)
    submit(s, "interactive", 5)
    assert len(s.dispatch(0.0)) == 3


def test_reservation_never_shuts_a_class_out() -> None:
    s = scheduler([policy("interactive"), policy("batch", rank=1)], {"a": 1},
                  reserved_slots=3)
    (t,) = submit(s, "batch")
    assert s.dispatch(0.0) == [t]  # at least one slot stays usable


def test_engine_limits_are_never_exceeded() -> None:
    s = scheduler([policy("c", engines=["a", "b"])], {"a": 2, "b": 3})
    tickets = submit(s, "c", 10)
    granted = s.dispatch(0.0)
    assert len(granted) == 5
    assert s.inflight == {"a": 2, "b": 3}
    assert Counter(t.engine for t in granted) == {"a": 2, "b": 3}
    assert s.dispatch(0.0) == []
    s.release(granted[0], 1.0)
    more = s.dispatch(1.0)
    assert more == [tickets[5]] and more[0].engine == granted[0].engine
    assert s.inflight == {"a": 2, "b": 3}


def test_unhealthy_engines_get_nothing() -> None:
    s = scheduler([policy("c", engines=["a", "b"])], {"a": 2, "b": 2})
    s.set_healthy(["b"])
    submit(s, "c", 5)
    granted = s.dispatch(0.0)
    assert [t.engine for t in granted] == ["b", "b"]
    assert s.inflight["a"] == 0
    s.set_healthy(["a", "b"])
    assert [t.engine for t in s.dispatch(1.0)] == ["a", "a"]


def test_only_unhealthy_engines_left_means_the_queue_waits() -> None:
    s = scheduler([policy("c", engines=["a"])], {"a": 2})
    submit(s, "c", 2)
    s.set_healthy([])
    assert s.dispatch(0.0) == []
    assert len(s.queues["c"]) == 2


def test_prefix_affinity_then_least_loaded() -> None:
    s = scheduler([policy("c", engines=["a", "b"])], {"a": 4, "b": 4})
    submit(s, "c", 2)
    s.dispatch(0.0)
    assert s.inflight == {"a": 1, "b": 1}
    (first,) = submit(s, "c", prefix_key=42)
    s.dispatch(0.1)
    assert first.engine == "a"  # a tie on load, broken by name; a now holds prefix 42
    for step in (0.2, 0.3):
        (again,) = submit(s, "c", prefix_key=42)
        s.dispatch(step)
        assert again.engine == "a"  # busier than b, but its prefix cache is warm
    assert s.inflight == {"a": 4, "b": 1}
    (spill,) = submit(s, "c", prefix_key=42)
    s.dispatch(0.4)
    assert spill.engine == "b"  # a is full: least loaded, and b now holds the prefix
    assert s.affinity.lookup(42) == "b"
    (other,) = submit(s, "c", prefix_key=7)
    s.dispatch(0.5)
    assert other.engine == "b"  # the only engine with room


def test_least_loaded_is_by_fraction_of_limit() -> None:
    s = scheduler([policy("c", engines=["a", "b"])], {"a": 4, "b": 8})
    submit(s, "c", 5)
    engines = [t.engine for t in s.dispatch(0.0)]
    # By fraction in use, then count, then name: 0=0 -> a; 1/4 > 0 -> b; 1/4 > 1/8 -> b;
    # 1/4 = 2/8 but a runs fewer -> a; 2/4 > 2/8 -> b.
    assert engines == ["a", "b", "b", "a", "b"]
    assert s.inflight == {"a": 2, "b": 3}


def test_affinity_ignores_an_engine_the_class_may_not_use() -> None:
    s = scheduler([policy("i", engines=["a"]), policy("b", engines=["b"])], {"a": 2, "b": 2})
    (t1,) = submit(s, "i", prefix_key=9)
    s.dispatch(0.0)
    (t2,) = submit(s, "b", prefix_key=9)
    s.dispatch(0.0)
    assert (t1.engine, t2.engine) == ("a", "b")


def test_expire_returns_exactly_the_tickets_past_their_deadline() -> None:
    s = scheduler([policy("c")], {"a": 1})
    granted = ticket("c", deadline=1.0)
    s.submit(granted, 0.0)
    s.dispatch(0.0)
    d1, d2, d3 = (ticket("c", deadline=d) for d in (1.0, 2.0, 3.0))
    cancelled = ticket("c", deadline=1.5)
    for t in (d3, d1, cancelled, d2):
        s.submit(t, 0.0)
    s.cancel(cancelled)
    assert s.next_deadline() == 1.0
    assert s.expire(0.99) == []
    assert s.expire(2.0) == [d1, d2]  # deadline == now counts as past
    assert d1.state is TicketState.DONE and d3.state is TicketState.QUEUED
    assert granted.state is TicketState.GRANTED
    assert s.next_deadline() == 3.0
    assert s.expire(2.5) == []
    assert s.counters["c"]["expired"] == 2
    assert len(s.queues["c"]) == 1
    assert s.expire(10.0) == [d3]
    assert s.next_deadline() is None
    reconciles(s)


def test_cancel_removes_a_queued_ticket_only() -> None:
    s = scheduler([policy("c")], {"a": 1})
    running, waiting = submit(s, "c", 2)
    s.dispatch(0.0)
    assert s.cancel(waiting) is True
    assert waiting.state is TicketState.DONE
    assert len(s.queues["c"]) == 0 and s.queues["c"].queued_tokens == 0
    assert s.cancel(waiting) is False
    assert s.cancel(running) is False  # granted: release it instead
    s.release(running, 1.0)
    assert s.dispatch(1.0) == []
    assert s.counters["c"]["cancelled"] == 1
    reconciles(s)


def test_release_frees_the_slot_once() -> None:
    s = scheduler([policy("c")], {"a": 1})
    first, second = submit(s, "c", 2)
    assert s.dispatch(0.0) == [first]
    s.release(first, 1.0)
    s.release(first, 1.0)  # twice: no double free
    assert s.inflight["a"] == 0
    assert s.dispatch(1.0) == [second]
    assert s.inflight["a"] == 1
    assert s.counters["c"]["finished"] == 1


def test_release_of_a_queued_ticket_cancels_it() -> None:
    s = scheduler([policy("c")], {"a": 1})
    (t,) = submit(s, "c")
    s.release(t, 0.0, "failed")
    assert t.state is TicketState.DONE and s.counters["c"]["cancelled"] == 1
    assert s.dispatch(0.0) == []
    reconciles(s)


def test_counters_reconcile_across_every_ending() -> None:
    s = scheduler([policy("c", max_queue=6), policy("d", rank=1)], {"a": 2})
    tickets = submit(s, "c", 6, deadline=5.0)
    assert s.submit(ticket("c"), 0.0) is not None  # queue full
    submit(s, "d", 2)
    reconciles(s)
    granted = s.dispatch(0.0)
    s.cancel(tickets[3])
    reconciles(s)
    s.release(granted[0], 1.0)
    s.release(granted[1], 1.0, "failed")
    s.dispatch(1.0)
    s.expire(6.0)
    reconciles(s)
    snap = {c.policy.name: c for c in s.snapshot().classes}
    assert snap["c"].counters["submitted"] == 7
    assert snap["c"].queued == 0 and snap["d"].queued == 2
    assert s.counters["c"]["expired"] == 1


def test_first_token_feeds_engine_ttft_and_class_p99() -> None:
    s = scheduler([policy("c")], {"a": 2}, controller=ControllerSettings())
    (t,) = submit(s, "c", now=1.0)
    s.dispatch(1.5)
    s.first_token(t, 1.75)
    s.first_token(t, 9.0)  # only the first counts
    snap = s.snapshot()
    assert snap.classes[0].ttft_p99_s == 0.75  # arrival -> first token
    assert s.controllers["a"].state().samples == 1  # engine side: 0.25 s
    assert snap.engines[0].inflight == 1
