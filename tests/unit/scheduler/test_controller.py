"""ConcurrencyController: AIMD on engine-side TTFT, and its convergence in closed loop."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sched_support import policy, scheduler, ticket
from sim_support import Phase, simulate

from scheduler.controller import ConcurrencyController
from scheduler.policy import ControllerSettings

SETTINGS = ControllerSettings(min_limit=2, increase=1, decrease=0.75, window_s=5.0,
                              interval_s=1.0, min_samples=5, quantile=0.95,
                              target_fraction=0.5)
PLAIN_AIMD = dataclasses.replace(SETTINGS, futile_hold_s=0.0)  # no check on what a cut bought


def started(max_limit: int = 32, ttft_target_s: float = 0.4,
            settings: ControllerSettings = SETTINGS) -> ConcurrencyController:
    c = ConcurrencyController(settings, max_limit, ttft_target_s)
    assert c.update(0.0) is False  # the first call only schedules the next step
    return c


def feed(c: ConcurrencyController, values: list[float], start: float = 0.1) -> None:
    for i, v in enumerate(values):
        c.observe(v, start + i * 0.01)


def test_target_is_the_fraction_of_the_class_target() -> None:
    c = started(ttft_target_s=0.4)
    assert c.target_s == pytest.approx(0.2)
    assert c.limit == 32 and c.state().last_action == "hold"


def test_decrease_when_the_quantile_is_over_target() -> None:
    c = started()
    feed(c, [0.3] * 10)
    assert c.update(1.0) is True
    assert c.limit == 24  # 32 * 0.75
    st = c.state()
    assert st.last_action == "decrease" and st.observed_s == pytest.approx(0.3)
    assert st.samples == 0  # samples from the old limit say nothing about the new one


def test_the_quantile_decides_not_the_worst_sample() -> None:
    c = started(max_limit=64, settings=ControllerSettings(initial_limit=32))
    feed(c, [0.1] * 99 + [5.0])
    c.note_binding()
    c.update(1.0)
    assert c.limit == 33 and c.state().last_action == "increase"
    c2 = started()
    feed(c2, [0.1] * 90 + [5.0] * 10)
    c2.update(1.0)
    assert c2.state().last_action == "decrease"


def test_increase_only_while_the_limit_binds() -> None:
    c = started(max_limit=64, settings=ControllerSettings(initial_limit=10))
    feed(c, [0.05] * 10)
    assert c.update(1.0) is False and c.limit == 10
    assert c.state().last_action == "hold"
    feed(c, [0.05] * 10, start=1.1)
    c.note_binding()
    assert c.update(2.0) is True and c.limit == 11
    feed(c, [0.05] * 10, start=2.1)
    assert c.update(3.0) is False and c.limit == 11  # binding is per interval


def test_at_target_exactly_is_not_over() -> None:
    c = started(ttft_target_s=0.5)
    feed(c, [0.25] * 10)
    c.update(1.0)
    assert c.limit == 32


def test_bounded_by_min_and_max() -> None:
    c = started(max_limit=12, settings=ControllerSettings(initial_limit=11, min_limit=3,
                                                          futile_hold_s=0.0))
    for step in range(1, 6):
        feed(c, [0.05] * 10, start=step - 0.9)
        c.note_binding()
        c.update(float(step))
    assert c.limit == 12
    for step in range(6, 20):
        feed(c, [0.3] * 10, start=step - 0.15)  # granted after the previous step
        c.update(float(step))
        assert c.limit >= 3
    assert c.limit == 3


def test_min_limit_above_the_engine_maximum_still_respects_the_maximum() -> None:
    c = started(max_limit=1, settings=ControllerSettings(min_limit=2))
    assert c.limit == 1
    feed(c, [9.0] * 10)
    c.update(1.0)
    assert c.limit == 1


def test_initial_limit_is_clamped() -> None:
    assert ConcurrencyController(ControllerSettings(initial_limit=500), 64, 1.0).limit == 64
    assert ConcurrencyController(ControllerSettings(initial_limit=1, min_limit=4), 64,
                                 1.0).limit == 4


def test_after_a_decrease_only_tickets_granted_under_the_new_limit_count() -> None:
    c = started()
    feed(c, [0.3] * 10)
    c.update(1.0)
    assert c.limit == 24
    c.observe(0.3, 1.2)  # granted at 0.9, while the limit was still 32
    c.observe(0.1, 1.2)  # granted at 1.1
    assert c.state().samples == 1


def test_hold_with_too_few_samples() -> None:
    c = started()
    feed(c, [9.0] * 4)
    c.note_binding()
    assert c.update(1.0) is False
    st = c.state()
    assert st.last_action == "hold" and st.observed_s is None and st.samples == 4


def test_steps_only_once_per_interval() -> None:
    c = started()
    feed(c, [9.0] * 10)
    assert c.update(0.5) is False
    assert c.update(1.0) is True
    feed(c, [9.0] * 10, start=1.01)
    assert c.update(1.5) is False and c.limit == 24


def test_samples_older_than_the_window_are_dropped() -> None:
    settings = ControllerSettings(window_s=5.0, interval_s=7.0, min_samples=5)
    c = started(settings=settings)  # next step at t = 7
    feed(c, [9.0] * 10, start=0.1)  # over target, but out of the window by then
    feed(c, [0.05] * 6, start=6.5)
    c.update(7.0)
    st = c.state()
    assert st.samples == 6 and st.last_action == "hold" and c.limit == 32


def test_disabled_controller_is_fixed_and_keeps_no_history() -> None:
    c = ConcurrencyController(ControllerSettings(enabled=False, initial_limit=7), 64, 0.4)
    for i in range(100_000):
        c.observe(9.0, i * 0.01)
        if i % 100 == 0:
            assert c.update(i * 0.01) is False
    st = c.state()
    assert c.limit == 7 and st.last_action == "fixed"
    # The window bounds what is kept even when no control step ever runs.
    assert st.samples <= 5.0 / 0.01 + 1


def test_each_class_is_judged_against_its_own_target() -> None:
    c = ConcurrencyController(SETTINGS, 32, 0.4, {"interactive": 0.4, "batch": 4.0})
    c.update(0.0)
    for i in range(10):
        c.observe(1.0, 0.1 + i * 0.01, "batch")  # slow, but batch may be: 1.0 < 2.0
        c.observe(0.1, 0.1 + i * 0.01, "interactive")
    c.note_binding()
    c.update(1.0)
    assert c.limit == 32 and c.state().last_action == "increase"
    for i in range(10):
        c.observe(0.3, 1.5 + i * 0.01, "interactive")  # over 0.5 * 0.4
    c.update(2.0)
    assert c.limit == 24 and c.state().observed_s == pytest.approx(0.3)


def test_unclassed_samples_and_thin_classes() -> None:
    c = ConcurrencyController(SETTINGS, 32, 0.4, {"interactive": 0.4, "batch": 4.0})
    c.update(0.0)
    feed(c, [0.3] * 10)  # no class: judged against the tightest target
    for i in range(4):  # too few to judge on their own
        c.observe(9.0, 0.5 + i * 0.01, "batch")
    c.update(1.0)
    assert c.limit == 24


def test_scheduler_reports_each_ticket_class_to_the_controller() -> None:
    s = scheduler([policy("interactive", ttft_target_s=0.4),
                   policy("batch", rank=1, ttft_target_s=10.0)], {"a": 32},
                  controller=SETTINGS)
    s.tick(0.0)
    for i in range(10):
        t = ticket("batch", arrival=0.0)
        s.submit(t, 0.0)
        s.dispatch(0.0)
        s.first_token(t, 0.1 + i * 0.05 + 2.0)  # 2 s TTFT: fine for batch
    s.tick(3.0)
    assert s.limit("a") == 32


# -- closed loop: the headline property -------------------------------------------------

# Engine TTFT = 0.02 s per running sequence; controller target = 0.5 * 0.42 s = 0.21 s,
# met up to 10 sequences and missed from 11: the limit should settle around 10.
PER_SEQ = 0.02
TARGET = 0.42
BAND = range(8, 12)  # 11 * 0.75 = 8


def closed_loop(phases: list[Phase]):  # type: ignore[no-untyped-def]
    s = scheduler([policy("interactive", ttft_target_s=TARGET)], {"a": 64},
                  controller=SETTINGS)
    return simulate(s, phases, decode_s=0.5)


def test_converges_after_a_load_step_and_stays() -> None:
    trace = closed_loop([Phase(20, 4, PER_SEQ), Phase(60, 40, PER_SEQ)])
    # Light load: the limit never binds, so it has no reason to move.
    assert set(trace.limits_between(0, 20)) == {64}
    assert max(trace.ttfts_between(0, 20)) <= 0.21
    # Step to 40 clients: from 64 down to the band within 15 s, and it stays there.
    settled = trace.limits_between(35, 80)
    assert set(settled) <= set(BAND), sorted(set(settled))
    assert 8.5 <= float(np.mean(settled)) <= 11
    ttfts = trace.ttfts_between(35, 80)
    assert float(np.quantile(ttfts, 0.95)) <= 0.21 * 1.1
    assert float(np.mean(ttfts)) <= 0.21


def test_reconverges_after_the_load_drops_and_returns() -> None:
    trace = closed_loop([Phase(40, 40, PER_SEQ), Phase(30, 4, PER_SEQ),
                         Phase(30, 40, PER_SEQ)])
    # Load gone: the limit neither runs away to the maximum nor collapses.
    assert set(trace.limits_between(40, 70)) <= set(BAND)
    assert max(trace.ttfts_between(45, 70)) <= 0.21
    # Load back: it is already where it belongs.
    assert set(trace.limits_between(70, 100)) <= set(BAND)
    assert float(np.quantile(trace.ttfts_between(70, 100), 0.95)) <= 0.21 * 1.1


def test_follows_a_slower_engine_down_and_back_up() -> None:
    trace = closed_loop([Phase(40, 40, PER_SEQ), Phase(40, 40, 2 * PER_SEQ),
                         Phase(40, 40, PER_SEQ)])
    # Twice the cost per sequence: the target is met up to 5 sequences.
    slow = trace.limits_between(50, 80)
    assert set(slow) <= {4, 5, 6}, sorted(set(slow))
    assert float(np.quantile(trace.ttfts_between(50, 80), 0.95)) <= 0.21 * 1.2
    # Cheap again: additive increase climbs back into the band.
    assert set(trace.limits_between(95, 120)) <= set(BAND)


# -- a cut that buys nothing is undone ----------------------------------------------------

def test_a_cut_that_does_not_lower_ttft_is_undone_then_held() -> None:
    c = started()
    feed(c, [0.3] * 10)
    c.update(1.0)
    assert c.limit == 24 and c.state().last_action == "decrease"
    feed(c, [0.3] * 10, start=1.5)  # the smaller batch starts no faster
    assert c.update(2.0) is True
    assert c.limit == 32 and c.state().last_action == "revert"
    for step in range(3, 32):  # futile_hold_s = 30: over target, but no cut
        feed(c, [0.3] * 10, start=step - 0.6)
        assert c.update(float(step)) is False
        assert c.limit == 32 and c.state().last_action == "hold"
        assert c.state().observed_s == pytest.approx(0.3)
    feed(c, [0.3] * 10, start=31.4)
    c.update(32.0)  # the hold is over: probe again
    assert c.limit == 24 and c.state().last_action == "decrease"


def test_a_cut_that_helps_is_followed_by_the_next() -> None:
    c = started()
    feed(c, [0.4] * 10)
    c.update(1.0)
    assert c.limit == 24
    feed(c, [0.3] * 10, start=1.5)  # 25% faster: over target still, cut again
    c.update(2.0)
    assert c.limit == 18 and c.state().last_action == "decrease"
    feed(c, [0.3 * 0.96] * 10, start=2.5)  # 4% faster: under min_gain (5%)
    c.update(3.0)
    assert c.limit == 24 and c.state().last_action == "revert"


def test_a_cut_under_target_clears_the_judgement() -> None:
    c = started()
    feed(c, [0.3] * 10)
    c.update(1.0)
    feed(c, [0.1] * 10, start=1.5)  # met: the cut did its job
    c.update(2.0)
    assert c.limit == 24 and c.state().last_action == "hold"
    feed(c, [0.3] * 10, start=2.5)  # over again later: a fresh cut, not a revert
    c.update(3.0)
    assert c.limit == 18 and c.state().last_action == "decrease"


def test_a_cut_starts_from_the_batch_in_use() -> None:
    c = started()  # limit 32, only 10 of it in use
    feed(c, [0.3] * 10)
    c.update(1.0, used=10)
    assert c.limit == 7  # 10 * 0.75: a cut from 32 to 24 would change nothing
    c2 = started(settings=PLAIN_AIMD)
    feed(c2, [0.3] * 10)
    c2.update(1.0, used=40)  # more in use than the limit (a cut just before): from the limit
    assert c2.limit == 24


def test_samples_from_a_batch_over_the_new_limit_are_not_evidence() -> None:
    # interactive (top class) runs in headroom past the limit; batch is what the limit sizes.
    s = scheduler([policy("interactive", ttft_target_s=0.4),
                   policy("batch", rank=1, ttft_target_s=100.0)], {"a": 32},
                  top_class_headroom=8, controller=ControllerSettings(initial_limit=8))
    s.tick(0.0)
    batch = [ticket("batch", arrival=0.0, timeout_s=1e9) for _ in range(20)]
    for t in batch:
        s.submit(t, 0.0)
    running = s.dispatch(0.0)
    assert len(running) == 8
    for i in range(6):  # slow interactive starts next to 8 batch sequences
        t = ticket("interactive", arrival=0.1)
        s.submit(t, 0.1)
        s.dispatch(0.1)
        s.first_token(t, 0.5 + i * 0.01)
        s.release(t, 0.6)
    s.tick(1.0)
    assert s.limit("a") == 6  # 8 * 0.75
    late = ticket("interactive", arrival=1.1)  # granted after the cut, but next to 8 batch
    s.submit(late, 1.1)
    s.dispatch(1.1)
    s.first_token(late, 1.5)
    assert s.snapshot().engines[0].controller.samples == 0
    for t in running[:2]:
        s.release(t, 1.6)  # the batch drains to the new limit
    s.dispatch(1.6)
    fresh = ticket("interactive", arrival=1.7)
    s.submit(fresh, 1.7)
    s.dispatch(1.7)
    s.first_token(fresh, 1.8)
    assert s.snapshot().engines[0].controller.samples == 1


FLOORED = [Phase(60, 40, PER_SEQ / 20, floor_s=0.3)]  # over target whatever the batch


def test_closed_loop_with_a_ttft_floor_keeps_the_batch() -> None:
    # Plain AIMD rides the limit to its floor chasing a target no batch size meets;
    # with the check, every cut is undone and the batch (the throughput) stays.
    s = scheduler([policy("interactive", ttft_target_s=TARGET)], {"a": 64},
                  controller=dataclasses.replace(PLAIN_AIMD, min_limit=4))
    plain = simulate(s, FLOORED, decode_s=0.5)
    assert set(plain.limits_between(20, 60)) == {4}
    s = scheduler([policy("interactive", ttft_target_s=TARGET)], {"a": 64},
                  controller=dataclasses.replace(SETTINGS, min_limit=4))
    checked = simulate(s, FLOORED, decode_s=0.5)
    limits = checked.limits_between(5, 60)
    assert float(np.mean(limits)) >= 40, sorted(set(limits))  # 40 clients: none held back
    assert min(limits) >= 28  # a probe cut (40 * 0.75 = 30), then back


def test_after_a_futile_cut_the_batch_grows_while_ttft_stays_at_the_engines_floor() -> None:
    c = started(max_limit=64)  # limit 64, target 0.2
    feed(c, [0.3] * 10)
    c.update(1.0)
    feed(c, [0.3] * 10, start=1.5)
    c.update(2.0)
    assert c.limit == 64 and c.state().last_action == "revert"  # floor: 0.3 / 0.2 = 1.5x
    c.limit = 40  # (as if it had been held lower before)
    feed(c, [0.31] * 10, start=2.5)  # within min_gain (5%) of the floor, and binding
    c.note_binding()
    c.update(3.0)
    assert c.limit == 41 and c.state().last_action == "increase"
    feed(c, [0.34] * 10, start=3.5)  # past the floor's tolerance: TTFT grew with the batch
    c.update(4.0)
    assert c.limit == 30 and c.state().last_action == "decrease"  # 41 * 0.75
