"""The config's classes and engines -> the scheduler's policies; the ``/v1/sla`` view.

The scheduler package knows nothing of the config file; this is the one place
that translates, so a reload (or a test) can build a scheduler from any
``GatewayConfig``.
"""

from __future__ import annotations

from typing import Any

from gateway.config import GatewayConfig
from scheduler.core import Scheduler, SchedulerSnapshot
from scheduler.policy import ClassPolicy, ControllerSettings, SchedulerSettings

# vLLM's default max_num_seqs when the engine args set none.
_VLLM_DEFAULT_MAX_NUM_SEQS = 256


def class_policies(config: GatewayConfig) -> list[ClassPolicy]:
    return [
        ClassPolicy(
            name=c.name, rank=c.rank, weight=c.weight, ttft_target_s=c.ttft_target_s,
            tpot_target_s=c.tpot_target_s, queue_timeout_s=c.queue_timeout_s,
            max_queue=c.max_queue, max_queued_tokens=c.max_queued_tokens, priority=c.priority,
            engines=frozenset(e.name for e in config.engines_serving(c.name)),
        )
        for c in config.classes
    ]


def scheduler_settings(config: GatewayConfig) -> SchedulerSettings:
    s, c = config.scheduler, config.scheduler.controller
    return SchedulerSettings(
        promotion_age_s=s.promotion_age_s,
        reserved_slots=s.reserved_slots,
        top_class_headroom=s.top_class_headroom,
        prefill_budget_tokens=s.prefill_budget_tokens,
        prefix_tokens=s.prefix_tokens,
        rate_window_s=s.rate_window_s,
        controller=ControllerSettings(
            enabled=c.enabled, initial_limit=c.initial_limit, min_limit=c.min_limit,
            increase=c.increase, decrease=c.decrease, window_s=c.window_s,
            interval_s=c.interval_s, min_samples=c.min_samples, quantile=c.quantile,
            target_fraction=c.target_fraction, min_gain=c.min_gain,
            futile_hold_s=c.futile_hold_s,
        ),
    )


def build_scheduler(config: GatewayConfig) -> Scheduler:
    engine_max = {e.name: int(e.args.get("max_num_seqs", _VLLM_DEFAULT_MAX_NUM_SEQS))
                  for e in config.engines}
    return Scheduler(class_policies(config), engine_max, scheduler_settings(config))


def sla_view(snapshot: SchedulerSnapshot, default_class: str) -> dict[str, Any]:
    """The ``GET /v1/sla`` body: classes with targets and live state, engines with limits."""

    def ms(seconds: float | None) -> float | None:
        return None if seconds is None else round(seconds * 1000, 3)

    return {
        "default_class": default_class,
        "classes": [
            {
                "name": c.policy.name, "rank": c.policy.rank, "weight": c.policy.weight,
                "ttft_target_ms": ms(c.policy.ttft_target_s),
                "tpot_target_ms": ms(c.policy.tpot_target_s),
                "queue_timeout_ms": ms(c.policy.queue_timeout_s),
                "max_queue": c.policy.max_queue, "max_queued_tokens": c.policy.max_queued_tokens,
                "priority": c.policy.priority, "engines": sorted(c.policy.engines),
                "queue_depth": c.queued, "queued_tokens": c.queued_tokens,
                "ttft_p99_ms": ms(c.ttft_p99_s), "counters": dict(sorted(c.counters.items())),
            }
            for c in snapshot.classes
        ],
        "engines": [
            {
                "name": e.name, "healthy": e.healthy, "inflight": e.inflight,
                "prefill_tokens": e.prefill_tokens,
                "concurrency_limit": e.controller.limit,
                "ttft_target_ms": ms(e.controller.target_s),
                "observed_ttft_ms": ms(e.controller.observed_s),
                "observed_ttft_ms_by_class": {c: ms(q) for c, q in
                                              e.controller.observed_by_class},
                "samples": e.controller.samples, "last_action": e.controller.last_action,
            }
            for e in snapshot.engines
        ],
    }
