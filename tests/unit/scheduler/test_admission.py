"""Admission at arrival: each reason, its Retry-After, and client deadlines."""

from __future__ import annotations

import math

import pytest
from sched_support import policy, reconciles, scheduler, ticket

from scheduler.admission import check_admission
from scheduler.core import Scheduler
from scheduler.ticket import TicketState


def drained_at_one_per_second(s: Scheduler, cls: str) -> float:
    """Run ten tickets through engine "a" (limit 1), one released per second at
    t = 1..10; returns a time at which the measured drain rate is exactly 1/s."""
    for i in range(10):
        t = ticket(cls, arrival=float(i))
        assert s.submit(t, float(i)) is None
        assert s.dispatch(float(i)) == [t]
        s.release(t, float(i + 1))
    return 11.0


def test_retry_after_is_whole_seconds_and_at_least_one() -> None:
    p = policy("c", queue_timeout_s=0.4, max_queue=0)
    t = ticket("c")
    for predicted, expected in [(None, 1), (0.0, 1), (0.3, 1), (1.0, 1), (2.01, 3), (7.5, 8)]:
        r = check_admission(p, 0, 0, t.cost, t.deadline, predicted, 0.0)
        assert r is not None and r.reason == "queue_full"
        assert r.retry_after_s == expected and r.retry_after_s == int(r.retry_after_s)
    unknown = check_admission(policy("c", queue_timeout_s=12.2, max_queue=0), 0, 0, t.cost,
                              t.deadline, None, 0.0)
    assert unknown is not None and unknown.retry_after_s == 13  # the class timeout


def test_queue_full() -> None:
    s = scheduler([policy("c", max_queue=3)], {"a": 1})
    now = drained_at_one_per_second(s, "c")
    holder = ticket("c", arrival=now)
    s.submit(holder, now)
    s.dispatch(now)
    for _ in range(3):
        assert s.submit(ticket("c", arrival=now), now) is None
    shed = ticket("c", arrival=now)
    r = s.submit(shed, now)
    assert r is not None and r.reason == "queue_full"
    # Three queued ahead, none free, draining 1/s: a fourth runs in 4 s.
    assert s.predicted_wait(s.classes["c"], now) == pytest.approx(4.0)
    assert r.retry_after_s == 4
    assert shed.state is TicketState.DONE
    assert s.counters["c"]["rejected:queue_full"] == 1
    reconciles(s)


def test_queue_tokens_budget_counts_prompt_and_output_tokens() -> None:
    s = scheduler([policy("c", max_queued_tokens=100)])
    assert s.submit(ticket("c", prompt_tokens=30, max_tokens=30), 0.0) is None
    assert s.submit(ticket("c", prompt_tokens=20, max_tokens=20), 0.0) is None  # exactly 100
    r = s.submit(ticket("c", prompt_tokens=1, max_tokens=0), 0.0)
    assert r is not None and r.reason == "queue_tokens"
    assert r.retry_after_s >= 1 and r.retry_after_s == int(r.retry_after_s)
    assert s.queues["c"].queued_tokens == 100
    reconciles(s)


def test_predicted_wait_past_the_deadline_is_shed_with_that_wait() -> None:
    s = scheduler([policy("c")], {"a": 1})
    now = drained_at_one_per_second(s, "c")
    holder = ticket("c", arrival=now)
    s.submit(holder, now)
    s.dispatch(now)
    for _ in range(4):
        s.submit(ticket("c", arrival=now), now)
    # Four ahead, draining 1/s: a new ticket waits ~5 s.
    assert s.predicted_wait(s.classes["c"], now) == pytest.approx(5.0)
    r = s.submit(ticket("c", arrival=now, deadline=now + 4.9), now)
    assert r is not None and r.reason == "predicted_wait"
    assert r.retry_after_s == 5
    assert s.counters["c"]["rejected:predicted_wait"] == 1
    reconciles(s)


def test_client_deadline_tightens_the_budget() -> None:
    s = scheduler([policy("c", queue_timeout_s=30.0)], {"a": 1})
    now = drained_at_one_per_second(s, "c")
    holder = ticket("c", arrival=now)
    s.submit(holder, now)
    s.dispatch(now)
    s.submit(ticket("c", arrival=now), now)
    # Predicted wait 2 s: fine within the class's 30 s timeout...
    assert s.submit(ticket("c", arrival=now, timeout_s=30.0), now) is None
    # ...now 3 s, past a client deadline 2.5 s away, within one 3.5 s away.
    wait = s.predicted_wait(s.classes["c"], now)
    assert wait is not None and wait == pytest.approx(3.0)
    tight = s.submit(ticket("c", arrival=now, deadline=now + 2.5), now)
    assert tight is not None and tight.reason == "predicted_wait"
    assert tight.retry_after_s == math.ceil(wait)
    assert s.submit(ticket("c", arrival=now, deadline=now + 3.5), now) is None


def test_unknown_drain_rate_admits_rather_than_guessing() -> None:
    s = scheduler([policy("c")], {"a": 1})
    for _ in range(20):
        assert s.submit(ticket("c", deadline=0.5), 0.0) is None
    assert s.predicted_wait(s.classes["c"], 0.0) is None


def test_free_slots_predict_no_wait() -> None:
    s = scheduler([policy("c")], {"a": 4})
    for _ in range(3):
        s.submit(ticket("c"), 0.0)
    assert s.predicted_wait(s.classes["c"], 0.0) == 0.0


def test_no_healthy_engine() -> None:
    s = scheduler([policy("i", engines=["a"]), policy("b", rank=1, engines=["b"])],
                  {"a": 2, "b": 2})
    s.set_healthy(["b"])
    r = s.submit(ticket("i"), 0.0)
    assert r is not None and r.reason == "no_engine"
    assert r.retry_after_s >= 1 and r.retry_after_s == int(r.retry_after_s)
    assert s.submit(ticket("b"), 0.0) is None  # the other class's engine is fine
    assert s.counters["i"]["rejected:no_engine"] == 1
    reconciles(s)


def test_set_healthy_ignores_unknown_engines() -> None:
    s = scheduler([policy("c")], {"a": 2})
    s.set_healthy(["a", "ghost"])
    assert s.healthy == {"a"}


def test_precheck_sheds_a_full_queue_before_the_ticket_exists() -> None:
    """What does not depend on the prompt's size is decided before tokenizing,
    with the same reason, Retry-After and counters as ``submit``."""
    s = scheduler([policy("c", max_queue=3)], {"a": 1})
    now = drained_at_one_per_second(s, "c")
    assert s.precheck("c", now + 30, now) is None  # nothing queued: not shed
    holder = ticket("c", arrival=now)
    s.submit(holder, now)
    s.dispatch(now)
    for _ in range(2):
        s.submit(ticket("c", arrival=now), now)
    assert s.precheck("c", now + 30, now) is None  # room for one more
    s.submit(ticket("c", arrival=now), now)
    r = s.precheck("c", now + 30, now)
    assert r is not None and r.reason == "queue_full" and r.retry_after_s == 4
    assert r == s.submit(ticket("c", arrival=now), now)
    assert s.counters["c"]["rejected:queue_full"] == 2
    reconciles(s)


def test_precheck_sheds_a_predicted_wait_past_the_deadline() -> None:
    s = scheduler([policy("c")], {"a": 1})
    now = drained_at_one_per_second(s, "c")
    s.submit(ticket("c", arrival=now), now)
    s.dispatch(now)
    for _ in range(4):
        s.submit(ticket("c", arrival=now), now)
    # Four ahead, draining 1/s: ~5 s.
    assert s.precheck("c", now + 5.1, now) is None
    r = s.precheck("c", now + 4.9, now)
    assert r is not None and r.reason == "predicted_wait" and r.retry_after_s == 5
    reconciles(s)


def test_precheck_leaves_the_token_budget_and_unknown_classes_to_submit() -> None:
    s = scheduler([policy("c", max_queued_tokens=100)], {"a": 1})
    s.submit(ticket("c", prompt_tokens=25, max_tokens=25), 0.0)
    s.submit(ticket("c", prompt_tokens=25, max_tokens=25), 0.0)
    assert s.queues["c"].queued_tokens == 100
    assert s.precheck("c", 30.0, 0.0) is None  # the size is not known yet
    assert s.precheck("gone", 30.0, 0.0) is None  # submit answers no_class
    s.set_healthy([])
    r = s.precheck("c", 30.0, 0.0)
    assert r is not None and r.reason == "no_engine"
    reconciles(s)


def test_predicted_wait_counts_the_top_class_headroom() -> None:
    """Found on the H200: with the batch filling the engine to its limit and a slow
    measured drain, interactive requests were shed (predicted_wait) though dispatch
    would have started them at once in the top class's headroom past the limit."""
    from scheduler.policy import ControllerSettings

    s = scheduler([policy("interactive", queue_timeout_s=2.0),
                   policy("batch", rank=1, queue_timeout_s=60.0)], {"a": 16},
                  top_class_headroom=2,
                  controller=ControllerSettings(enabled=False, initial_limit=4, min_limit=1))
    for i in range(4):
        t = ticket("batch", arrival=float(i))
        assert s.submit(t, float(i)) is None
        assert s.dispatch(float(i)) == [t]
    s.release(t, 5.0)  # one release in 10 s: a drain rate of 0.1/s
    t = ticket("batch", arrival=5.0)
    s.submit(t, 5.0)
    assert s.dispatch(5.0) == [t]
    s.submit(ticket("batch", arrival=5.5), 5.5)  # queued: the engine is at its limit
    assert s.inflight["a"] == 4
    # Interactive may still go two past the limit: no wait, no shed.
    assert s.predicted_wait(s.classes["interactive"], 6.0) == 0.0
    assert s.precheck("interactive", 6.5, 6.0) is None  # was shed: 1 s > 0.5 s
    vip = ticket("interactive", arrival=6.0, timeout_s=2.0)
    assert s.submit(vip, 6.0) is None
    assert s.dispatch(6.0) == [vip]
    # Batch has no headroom: its wait is what the drain rate says.
    wait = s.predicted_wait(s.classes["batch"], 6.0)
    assert wait is not None and wait > 0
    reconciles(s)
