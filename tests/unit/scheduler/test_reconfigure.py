"""Scheduler.reconfigure (a config reload): queued and granted tickets survive,
controller limits carry over, a removed class drains under its old policy."""

from __future__ import annotations

import pytest
from sched_support import FIXED, policy, reconciles, scheduler, ticket

from scheduler.policy import ControllerSettings, SchedulerSettings
from scheduler.ticket import TicketState

AIMD = ControllerSettings(enabled=True, min_limit=1, interval_s=1.0, window_s=10.0,
                          min_samples=1, target_fraction=1.0)


def settings(controller: ControllerSettings = FIXED, **kw: float) -> SchedulerSettings:
    return SchedulerSettings(controller=controller, **kw)  # type: ignore[arg-type]


def test_queued_and_granted_tickets_survive_a_changed_policy() -> None:
    s = scheduler([policy("interactive", max_queue=10), policy("batch", rank=1)], {"a": 1})
    running, waiting = ticket("interactive"), ticket("interactive")
    for t in (running, waiting):
        assert s.submit(t, 0.0) is None
    assert s.dispatch(0.0) == [running]
    s.reconfigure([policy("interactive", max_queue=1), policy("batch", rank=1)], settings())
    assert s.classes["interactive"].max_queue == 1
    assert waiting.state is TicketState.QUEUED and len(s.queues["interactive"]) == 1
    over = ticket("interactive")
    rejection = s.submit(over, 0.1)
    assert rejection is not None and rejection.reason == "queue_full"  # the new bound
    s.release(running, 0.2)
    assert s.dispatch(0.2) == [waiting]
    reconciles(s)


def test_a_removed_class_drains_under_its_old_policy_and_refuses_newcomers() -> None:
    s = scheduler([policy("interactive"), policy("legacy", rank=1)], {"a": 1})
    first, queued = ticket("interactive"), ticket("legacy")
    assert s.submit(first, 0.0) is None and s.submit(queued, 0.0) is None
    assert s.dispatch(0.0) == [first]
    s.reconfigure([policy("interactive")], settings())
    assert [c.policy.name for c in s.snapshot().classes] == ["interactive"]
    late = ticket("legacy")
    rejection = s.submit(late, 0.1)
    assert rejection is not None and rejection.reason == "no_class"
    s.release(first, 0.2)
    assert s.dispatch(0.2) == [queued]  # still served
    assert "legacy" not in s.classes  # and gone once drained
    s.release(queued, 0.3, "finished")
    assert s.counters["legacy"]["finished"] == 1
    reconciles(s)


def test_a_removed_class_with_nothing_queued_is_gone_at_once() -> None:
    s = scheduler([policy("interactive"), policy("legacy")], {"a": 2})
    running = ticket("legacy")
    assert s.submit(running, 0.0) is None and s.dispatch(0.0) == [running]
    s.reconfigure([policy("interactive")], settings())
    assert set(s.classes) == {"interactive"}
    s.first_token(running, 0.1)  # a granted ticket of a gone class still ends cleanly
    s.release(running, 0.2)
    assert s.inflight["a"] == 0
    reconciles(s)


def test_a_new_class_is_served_at_once() -> None:
    s = scheduler([policy("interactive")], {"a": 2})
    s.reconfigure([policy("interactive"), policy("gold", rank=0, weight=2.0)], settings())
    t = ticket("gold")
    assert s.submit(t, 0.0) is None
    assert s.dispatch(0.0) == [t]
    assert [c.policy.name for c in s.snapshot().classes] == ["interactive", "gold"]


def test_controller_limits_carry_over_and_take_the_new_targets() -> None:
    s = scheduler([policy("interactive", ttft_target_s=1.0)], {"a": 16}, controller=AIMD)
    tickets = [ticket("interactive") for _ in range(16)]
    for t in tickets:
        s.submit(t, 0.0)
    s.dispatch(0.0)
    s.tick(0.0)
    for t in tickets:
        s.first_token(t, 2.0)  # 2 s engine-side TTFT, over the 1 s target
    assert s.tick(2.0) and s.limit("a") == 12
    s.reconfigure([policy("interactive", ttft_target_s=0.25)],
                  settings(AIMD, rate_window_s=30.0))
    assert s.limit("a") == 12  # learned, not reset to max_num_seqs
    assert s.controllers["a"].target_s == 0.25
    s.reconfigure([policy("interactive")], settings(ControllerSettings(min_limit=14)))
    assert s.limit("a") == 14  # clamped into the new bounds
    s.reconfigure([policy("interactive")],
                  settings(ControllerSettings(enabled=False, initial_limit=4)))
    assert s.limit("a") == 4  # a disabled controller holds its fixed limit


def test_unknown_engines_are_refused_and_nothing_changes() -> None:
    s = scheduler([policy("interactive")], {"a": 2})
    before = dict(s.classes)
    with pytest.raises(ValueError, match="unknown engines"):
        s.reconfigure([policy("interactive", engines=("b",))], settings())
    assert s.classes == before


def test_a_drained_retired_class_frees_the_reserved_slots_in_the_same_dispatch() -> None:
    # "old" (rank 0) is removed while a ticket waits in it; "low" (rank 1) is then the
    # engine's most urgent class and may use the reserved slot as soon as "old" is gone.
    s = scheduler([policy("old", rank=0), policy("low", rank=1)], {"a": 2}, reserved_slots=1)
    waiting_old, waiting_low = ticket("old"), ticket("low")
    assert s.submit(waiting_old, 0.0) is None and s.submit(waiting_low, 0.0) is None
    s.reconfigure([policy("low", rank=1)], settings(reserved_slots=1))
    assert s.dispatch(0.0) == [waiting_old, waiting_low]
    reconciles(s)
