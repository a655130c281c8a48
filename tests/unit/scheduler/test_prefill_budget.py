"""Prefill pacing: lower classes start only while the engine's prefill budget has room."""

from __future__ import annotations

from sched_support import policy, reconciles, scheduler, ticket

from scheduler.policy import ControllerSettings

CLASSES = [policy("interactive"), policy("batch", rank=1)]


def paced(budget: int = 100, **kw: object):  # type: ignore[no-untyped-def]
    return scheduler(CLASSES, {"a": 16}, prefill_budget_tokens=budget, **kw)


def queue(s, cls: str, n: int, prompt: int = 60, at: float = 0.0):  # type: ignore[no-untyped-def]
    tickets = [ticket(cls, prompt_tokens=prompt, arrival=at) for _ in range(n)]
    for t in tickets:
        assert s.submit(t, at) is None
    return tickets


def prefill(s) -> int:  # type: ignore[no-untyped-def]
    return s.snapshot().engines[0].prefill_tokens


def test_lower_class_waits_while_the_budget_is_spent() -> None:
    s = paced(100)
    batch = queue(s, "batch", 5)
    granted = s.dispatch(0.0)
    assert granted == batch[:2]  # 0 -> 60 -> 120: the second starts while 60 < 100
    assert prefill(s) == 120 and s.inflight["a"] == 2
    assert s.first_token(batch[0], 0.1) is True  # 60 left in prefill, work queued
    assert s.dispatch(0.1) == [batch[2]]
    s.release(batch[1], 0.2)  # ended before its first token: its prompt leaves too
    assert prefill(s) == 60
    assert s.dispatch(0.2) == [batch[3]]
    reconciles(s)


def test_the_top_class_is_never_paced() -> None:
    s = paced(100)
    queue(s, "batch", 4)
    s.dispatch(0.0)
    urgent = queue(s, "interactive", 3, prompt=500)
    assert s.dispatch(0.0) == urgent
    assert prefill(s) == 120  # its prompts do not count either


def test_off_and_on_an_engine_of_one_rank_nothing_is_paced() -> None:
    s = paced(0)
    queue(s, "batch", 5)
    assert len(s.dispatch(0.0)) == 5
    one_rank = scheduler([policy("batch", rank=1)], {"a": 16}, prefill_budget_tokens=100)
    queue(one_rank, "batch", 5)
    assert len(one_rank.dispatch(0.0)) == 5
    assert one_rank.snapshot().engines[0].prefill_tokens == 0


def test_a_first_token_with_nothing_queued_asks_for_no_dispatch() -> None:
    s = paced(100)
    (t,) = queue(s, "batch", 1)
    s.dispatch(0.0)
    assert s.first_token(t, 0.1) is False and prefill(s) == 0
    assert s.first_token(t, 0.2) is False  # the second report of it changes nothing


def test_pacing_is_not_a_binding_limit() -> None:
    # Held back by the budget, not by the limit: the controller must not grow the limit.
    s = paced(100, controller=ControllerSettings(initial_limit=8, interval_s=1.0,
                                                 min_samples=1, target_fraction=1.0))
    s.tick(0.0)
    batch = queue(s, "batch", 6)
    s.dispatch(0.0)
    s.first_token(batch[0], 0.01)  # fast: under target
    s.dispatch(0.01)
    s.tick(1.0)
    assert s.limit("a") == 8
