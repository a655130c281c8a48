"""Builders for scheduler tests: classes, tickets and schedulers with few words."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping

from scheduler.core import Scheduler
from scheduler.policy import ClassPolicy, ControllerSettings, SchedulerSettings
from scheduler.ticket import Ticket

_ids = itertools.count()

# A controller that never moves unless a test ticks it on purpose.
FIXED = ControllerSettings(enabled=False, min_limit=1)


def policy(name: str, *, rank: int = 0, weight: float = 1.0, engines: Iterable[str] = ("a",),
           ttft_target_s: float = 0.5, queue_timeout_s: float = 30.0, max_queue: int = 1_000,
           max_queued_tokens: int = 10**9, priority: int = 0) -> ClassPolicy:
    return ClassPolicy(name=name, rank=rank, weight=weight, ttft_target_s=ttft_target_s,
                       tpot_target_s=0.1, queue_timeout_s=queue_timeout_s, max_queue=max_queue,
                       max_queued_tokens=max_queued_tokens, priority=priority,
                       engines=frozenset(engines))


def ticket(sla_class: str = "interactive", *, tenant: str = "t", prompt_tokens: int = 10,
           max_tokens: int = 10, arrival: float = 0.0, deadline: float | None = None,
           timeout_s: float = 30.0, prefix_key: int | None = None,
           id: str | None = None) -> Ticket:
    return Ticket(id=id if id is not None else f"r{next(_ids)}", sla_class=sla_class,
                  tenant=tenant, prompt_tokens=prompt_tokens, max_tokens=max_tokens,
                  arrival=arrival,
                  deadline=deadline if deadline is not None else arrival + timeout_s,
                  prefix_key=prefix_key)


def scheduler(classes: Iterable[ClassPolicy], engines: Mapping[str, int] | None = None, *,
              promotion_age_s: float = 10.0, rate_window_s: float = 10.0,
              reserved_slots: int = 0, top_class_headroom: int = 0,
              prefill_budget_tokens: int = 0,
              controller: ControllerSettings = FIXED) -> Scheduler:
    return Scheduler(list(classes), dict(engines or {"a": 4}),
                     SchedulerSettings(promotion_age_s=promotion_age_s,
                                       reserved_slots=reserved_slots,
                                       top_class_headroom=top_class_headroom,
                                       prefill_budget_tokens=prefill_budget_tokens,
                                       rate_window_s=rate_window_s, controller=controller))


def reconciles(s: Scheduler) -> None:
    """submitted = rejected:* + admitted; admitted = granted + expired + cancelled + queued."""
    for name, c in s.counters.items():
        rejected = sum(v for k, v in c.items() if k.startswith("rejected:"))
        assert c["submitted"] == rejected + c["admitted"], (name, dict(c))
        assert c["admitted"] == (c["granted"] + c["expired"] + c["cancelled"]
                                 + len(s.queues[name])), (name, dict(c))
