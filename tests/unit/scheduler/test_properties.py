"""Hypothesis: a state machine drives the Scheduler through random arrivals,
dispatches, first tokens, releases, cancels, expiries, clock steps, health
changes and controller ticks, and checks its invariants after every step:

- no ticket is lost or served twice: each submitted ticket is in exactly one of
  rejected, queued, granted, released, expired, cancelled, and granted at most once;
- no engine is granted past its limit (nor a lower class into its reserved
  slots), and its inflight is exactly its granted, unreleased tickets;
- dispatch is work-conserving: afterwards no queued ticket (promotion-age old or
  not) has a healthy eligible engine with a free slot;
- every rejection carries a whole-second Retry-After of at least 1 s;
- each class queue's count and token sum are exactly its queued tickets'.

The machine also reconfigures the scheduler mid-run (a config reload: classes
added, changed and removed, new controller settings); every invariant above
holds across it, and a removed class's queued tickets are still dispatched.

A second property bounds starvation itself: under a constant higher-class
backlog, a lower class whose oldest ticket is past the promotion age is served
within its weighted turn, and promotion never hands it a long run of its own.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from scheduler.core import Scheduler
from scheduler.policy import ClassPolicy, ControllerSettings, SchedulerSettings
from scheduler.ticket import Ticket, TicketState

ENGINES = ("a", "b", "c")
BUCKETS = ("rejected", "queued", "granted", "released", "expired", "cancelled")


@st.composite
def configurations(draw: st.DrawFn) -> tuple[list[ClassPolicy], dict[str, int],
                                             SchedulerSettings]:
    engines = {e: draw(st.integers(1, 4)) for e in ENGINES[:draw(st.integers(1, 3))]}
    classes, sched = draw(policies(sorted(engines)))
    return classes, engines, sched


@st.composite
def policies(draw: st.DrawFn, engines: list[str]) -> tuple[list[ClassPolicy],
                                                          SchedulerSettings]:
    """Classes named from k0..k3 (so a redraw adds, keeps and drops names) and settings."""
    classes = []
    names = draw(st.lists(st.integers(0, 3), min_size=1, max_size=3, unique=True))
    for i in names:
        eligible = draw(st.sets(st.sampled_from(sorted(engines)), min_size=1))
        classes.append(ClassPolicy(
            name=f"k{i}", rank=draw(st.integers(0, 2)),
            weight=draw(st.sampled_from([0.25, 1.0, 3.0])),
            ttft_target_s=draw(st.sampled_from([0.1, 0.5, 2.0])), tpot_target_s=0.1,
            queue_timeout_s=draw(st.sampled_from([0.5, 2.0, 10.0])),
            max_queue=draw(st.integers(0, 8)),
            max_queued_tokens=draw(st.sampled_from([50, 200, 10_000])),
            priority=i, engines=frozenset(eligible)))
    controller = ControllerSettings(
        enabled=draw(st.booleans()), initial_limit=draw(st.none() | st.integers(1, 4)),
        min_limit=draw(st.integers(1, 3)), decrease=draw(st.sampled_from([0.5, 0.75])),
        window_s=2.0, interval_s=draw(st.sampled_from([0.5, 1.0])),
        min_samples=draw(st.integers(1, 3)), quantile=0.9, target_fraction=0.5)
    sched = SchedulerSettings(promotion_age_s=draw(st.sampled_from([0.5, 2.0, 5.0])),
                              reserved_slots=draw(st.integers(0, 2)),
                              prefill_budget_tokens=draw(st.sampled_from([0, 1, 60])),
                              rate_window_s=draw(st.sampled_from([1.0, 5.0])),
                              controller=controller)
    return classes, sched


class SchedulerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.ids = itertools.count()
        self.where: dict[str, str] = {}  # ticket id -> bucket
        self.tickets: dict[str, Ticket] = {}
        self.ever_granted: set[str] = set()
        self.outcomes: Counter[tuple[str, str]] = Counter()  # (class, release outcome)

    @initialize(config=configurations())
    def build(self, config: tuple[list[ClassPolicy], dict[str, int], SchedulerSettings]) -> None:
        classes, engines, sched = config
        self.s = Scheduler(classes, engines, sched)
        self.classes = sorted(self.s.classes)  # those new tickets may name

    @rule(data=st.data())
    def reconfigure(self, data: st.DataObject) -> None:
        classes, sched = data.draw(policies(sorted(self.s.inflight)))
        queued_before = {t.id for t in self.in_bucket("queued")}
        self.s.reconfigure(classes, sched)
        self.classes = sorted(c.name for c in classes)
        for t in self.in_bucket("queued"):
            assert t.sla_class in self.s.classes  # a removed class keeps its queued tickets
        assert {t.id for t in self.in_bucket("queued")} == queued_before

    def usable_limit(self, engine: str, cls: str,
                     classes: dict[str, ClassPolicy] | None = None) -> int:
        """The engine's limit as this class sees it: a class below the engine's most
        urgent rank may not take its last ``reserved_slots`` (but always one)."""
        classes = classes if classes is not None else self.s.classes
        top = min(c.rank for c in classes.values() if engine in c.engines)
        limit = self.s.limit(engine)
        if classes[cls].rank > top:
            limit = max(1, limit - self.s.settings.reserved_slots)
        return limit

    def paced_out(self, engine: str, cls: str) -> bool:
        """Whether this class waits on the engine's prefill budget (the model's own
        view: prompts of the paced tickets granted there without a first token)."""
        budget = self.s.settings.prefill_budget_tokens
        ranks = {c.rank for c in self.s.classes.values() if engine in c.engines}
        if not budget or len(ranks) < 2 or self.s.classes[cls].rank == min(ranks):
            return False
        return self.prefill(engine) >= budget

    def prefill(self, engine: str) -> int:
        return sum(t.prompt_tokens for t in self.in_bucket("granted")
                   if t.engine == engine and t.paced and t.first_token_at is None)

    def in_bucket(self, bucket: str) -> list[Ticket]:
        return [self.tickets[i] for i, b in sorted(self.where.items()) if b == bucket]

    def move(self, ticket: Ticket, bucket: str) -> None:
        self.where[ticket.id] = bucket

    # -- rules ---------------------------------------------------------------------

    @rule(data=st.data(), tenant=st.sampled_from(["x", "y", "z"]),
          prompt=st.integers(1, 120), out=st.integers(0, 60),
          client_s=st.none() | st.floats(0.01, 20.0), prefix=st.none() | st.integers(0, 3))
    def submit(self, data: st.DataObject, tenant: str, prompt: int, out: int,
               client_s: float | None, prefix: int | None) -> None:
        cls = data.draw(st.sampled_from(self.classes))
        budget = self.s.classes[cls].queue_timeout_s
        if client_s is not None:
            budget = min(budget, client_s)  # a client deadline only tightens
        t = Ticket(id=f"t{next(self.ids)}", sla_class=cls, tenant=tenant, prompt_tokens=prompt,
                   max_tokens=out, arrival=self.now, deadline=self.now + budget,
                   prefix_key=prefix)
        self.tickets[t.id] = t
        rejection = self.s.submit(t, self.now)
        if rejection is None:
            assert t.state is TicketState.QUEUED
            self.move(t, "queued")
        else:
            assert t.state is TicketState.DONE
            assert rejection.retry_after_s >= 1
            assert rejection.retry_after_s == int(rejection.retry_after_s)
            assert rejection.reason in {"queue_full", "queue_tokens", "predicted_wait",
                                        "no_engine", "no_class"}
            self.move(t, "rejected")

    @rule()
    def dispatch(self) -> None:
        running = dict(self.s.inflight)
        healthy = set(self.s.healthy)
        # As dispatch saw them: a class removed by a reconfigure (retired) leaves as
        # soon as its last queued ticket is granted, and the next grant sees it gone.
        classes = dict(self.s.classes)
        retired_left = Counter(t.sla_class for t in self.in_bucket("queued")
                               if t.sla_class not in self.classes)
        prefill = {e: self.prefill(e) for e in running}
        budget = self.s.settings.prefill_budget_tokens
        grants = self.s.dispatch(self.now)
        for t in grants:
            assert self.where[t.id] == "queued", "granted a ticket that was not queued"
            assert t.id not in self.ever_granted, "granted twice"
            assert t.state is TicketState.GRANTED and t.granted_at == self.now
            assert t.engine is not None
            assert t.engine in healthy and t.engine in classes[t.sla_class].engines
            # At its grant, in order: under the limit (and off the reserved slots).
            assert running[t.engine] < self.usable_limit(t.engine, t.sla_class, classes), \
                f"engine {t.engine} granted past its limit"
            running[t.engine] += 1
            if t.paced:  # started only while the engine's prefill budget had room
                assert prefill[t.engine] < budget, f"{t.id} started past the prefill budget"
                prefill[t.engine] += t.prompt_tokens
            if t.sla_class in retired_left:
                retired_left[t.sla_class] -= 1
                if not retired_left[t.sla_class]:
                    del classes[t.sla_class]
            self.ever_granted.add(t.id)
            self.move(t, "granted")
        assert running == self.s.inflight
        # Work-conserving: nothing left queued that some free eligible engine could run,
        # so in particular nothing older than the promotion age waits beside a free slot.
        age = self.s.settings.promotion_age_s
        for t in self.in_bucket("queued"):
            can_run = {e for e in self.s.classes[t.sla_class].engines & self.s.healthy
                       if self.s.inflight[e] < self.usable_limit(e, t.sla_class)
                       and not self.paced_out(e, t.sla_class)}
            assert not can_run, f"{t.id} ({t.sla_class}) left waiting beside {can_run}"
            assert not (self.now - t.arrival > age + 1e-9 and can_run)

    @precondition(lambda self: any(b == "granted" for b in self.where.values()))
    @rule(data=st.data())
    def first_token(self, data: st.DataObject) -> None:
        t = data.draw(st.sampled_from(self.in_bucket("granted")))
        self.s.first_token(t, self.now)
        assert t.first_token_at is not None

    @precondition(lambda self: any(b == "granted" for b in self.where.values()))
    @rule(data=st.data(), outcome=st.sampled_from(["finished", "failed", "aborted"]))
    def release(self, data: st.DataObject, outcome: str) -> None:
        t = data.draw(st.sampled_from(self.in_bucket("granted")))
        self.s.release(t, self.now, outcome)
        assert t.state is TicketState.DONE
        self.outcomes[(t.sla_class, outcome)] += 1
        self.move(t, "released")

    @precondition(lambda self: any(b == "queued" for b in self.where.values()))
    @rule(data=st.data(), via_release=st.booleans())
    def cancel(self, data: st.DataObject, via_release: bool) -> None:
        t = data.draw(st.sampled_from(self.in_bucket("queued")))
        if via_release:
            self.s.release(t, self.now, "failed")  # a queued ticket is cancelled
        else:
            assert self.s.cancel(t) is True
        assert t.state is TicketState.DONE
        self.move(t, "cancelled")

    @precondition(lambda self: bool(self.where))
    @rule(data=st.data())
    def end_twice(self, data: st.DataObject) -> None:
        """Cancelling or releasing a ticket that is already done changes nothing."""
        done = [t for t in self.tickets.values() if t.state is TicketState.DONE]
        if not done:
            return
        t = data.draw(st.sampled_from(sorted(done, key=lambda t: t.id)))
        assert self.s.cancel(t) is False
        self.s.release(t, self.now)

    @rule()
    def expire(self) -> None:
        due = {t.id for t in self.in_bucket("queued") if t.deadline <= self.now}
        expired = self.s.expire(self.now)
        assert {t.id for t in expired} == due and len(expired) == len(due)
        for t in expired:
            assert t.state is TicketState.DONE
            self.move(t, "expired")
        nxt = self.s.next_deadline()
        queued = [t.deadline for t in self.in_bucket("queued")]
        assert nxt == (min(queued) if queued else None)

    @rule(dt=st.sampled_from([0.0, 0.01, 0.1, 0.5, 1.0, 2.0, 6.0]))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule()
    def tick(self) -> None:
        self.s.tick(self.now)

    @rule(data=st.data())
    def health(self, data: st.DataObject) -> None:
        self.s.set_healthy(data.draw(st.sets(st.sampled_from(sorted(self.s.inflight)))))

    # -- invariants -------------------------------------------------------------------

    @invariant()
    def every_ticket_in_exactly_one_place(self) -> None:
        state_of = {"queued": TicketState.QUEUED, "granted": TicketState.GRANTED}
        for tid, bucket in self.where.items():
            assert bucket in BUCKETS
            assert self.tickets[tid].state is state_of.get(bucket, TicketState.DONE)
        assert set(self.where) == set(self.tickets)
        granted_or_after = {i for i, b in self.where.items() if b in ("granted", "released")}
        assert granted_or_after == self.ever_granted

    @invariant()
    def queues_hold_exactly_the_queued_tickets(self) -> None:
        for name, q in self.s.queues.items():
            mine = [t for t in self.in_bucket("queued") if t.sla_class == name]
            assert len(q) == len(mine)
            assert all(q.get(t.id) is t for t in mine)
            assert q.queued_tokens == sum(t.cost for t in mine)
            assert q.oldest() is (min(mine, key=lambda t: t.seq) if mine else None)
            if mine:
                assert q.peek() in mine

    @invariant()
    def inflight_is_granted_and_unreleased(self) -> None:
        on: Counter[str | None] = Counter(t.engine for t in self.in_bucket("granted"))
        for e, n in self.s.inflight.items():
            assert n == on[e]
            snapshot = {x.name: x for x in self.s.snapshot().engines}
            assert snapshot[e].prefill_tokens == self.prefill(e)  # back to 0 when none left
            c = self.s.controllers[e]
            assert min(c.settings.min_limit, c.max_limit) <= self.s.limit(e) <= c.max_limit

    @invariant()
    def counters_reconcile(self) -> None:
        for name, c in self.s.counters.items():
            mine = Counter(b for i, b in self.where.items()
                           if self.tickets[i].sla_class == name)
            rejected = sum(v for k, v in c.items() if k.startswith("rejected:"))
            assert c["submitted"] == sum(mine.values())
            assert rejected == mine["rejected"]
            assert c["admitted"] == c["granted"] + c["expired"] + c["cancelled"] + mine["queued"]
            assert c["granted"] == mine["granted"] + mine["released"]
            assert c["expired"] == mine["expired"] and c["cancelled"] == mine["cancelled"]
            for outcome in ("finished", "failed", "aborted"):
                assert c[outcome] == self.outcomes[(name, outcome)]


SchedulerMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestScheduler = SchedulerMachine.TestCase


@settings(max_examples=60, deadline=None)
@given(top_weights=st.lists(st.sampled_from([0.5, 1.0, 2.0, 4.0]), min_size=1, max_size=2),
       low_weight=st.sampled_from([0.25, 1.0, 3.0]), promotion_age_s=st.sampled_from([0.5, 2.0]),
       low_arrivals=st.lists(st.integers(0, 150), min_size=1, max_size=40))
def test_promotion_bounds_the_wait_of_a_lower_class(
        top_weights: list[float], low_weight: float, promotion_age_s: float,
        low_arrivals: list[int]) -> None:
    tops = [ClassPolicy(name=f"top{i}", rank=0, weight=w, ttft_target_s=1.0, tpot_target_s=0.1,
                        queue_timeout_s=1e9, max_queue=10**6, max_queued_tokens=10**9,
                        priority=0, engines=frozenset({"a"}))
            for i, w in enumerate(top_weights)]
    low = ClassPolicy(name="low", rank=1, weight=low_weight, ttft_target_s=1.0,
                      tpot_target_s=0.1, queue_timeout_s=1e9, max_queue=10**6,
                      max_queued_tokens=10**9, priority=1, engines=frozenset({"a"}))
    s = Scheduler([*tops, low], {"a": 1},
                  SchedulerSettings(promotion_age_s=promotion_age_s,
                                    controller=ControllerSettings(enabled=False)))
    ids = itertools.count()

    def arrive(cls: str, now: float) -> None:
        t = Ticket(id=str(next(ids)), sla_class=cls, tenant="t", prompt_tokens=1, max_tokens=1,
                   arrival=now, deadline=now + 1e9)
        assert s.submit(t, now) is None

    # Stride bounds once the lower class competes at the current virtual time (ties go
    # to the higher rank): each top class j wins at most floor(w_j / w_low) + 1 turns
    # before it, and it wins at most ceil(w_low / max w_j) turns in a row. (+1: sums of
    # 1/w in floating point can turn an exact tie either way.)
    turn = sum(math.floor(w / low_weight) + 1 for w in top_weights) + 1
    longest_run = math.ceil(low_weight / max(top_weights)) + 1
    running: Ticket | None = None
    grants_while_overdue = run = 0
    for step in range(200):
        now = step * 0.1
        for cls in (p.name for p in tops):
            if len(s.queues[cls]) < 2:
                arrive(cls, now)  # the higher classes never run dry
        for _ in range(low_arrivals.count(step)):
            arrive("low", now)
        if running is not None:
            s.release(running, now)
        oldest = s.queues["low"].oldest()
        overdue = oldest is not None and now - oldest.arrival >= promotion_age_s
        (running,) = s.dispatch(now)
        if running.sla_class == "low":
            grants_while_overdue, run = 0, run + 1
            assert run <= longest_run, "promotion let the lower class take over the engine"
        else:
            run = 0
            if overdue:
                grants_while_overdue += 1
                assert grants_while_overdue <= turn, "lower class starved past promotion"
