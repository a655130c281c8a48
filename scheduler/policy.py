"""The scheduler's view of its configuration: classes and controller settings.

Built once from the gateway config at the edge; the scheduler never reads the
config file's types, so it can be driven by tests and other front ends alike.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ClassPolicy:
    """One SLA class: its order, share, targets, bounds and engines."""

    name: str
    rank: int  # strict order between classes, lower first
    weight: float  # share among backlogged classes of the same rank
    ttft_target_s: float  # p99 target for time to first token
    tpot_target_s: float
    queue_timeout_s: float  # longest wait in the queue before a 503
    max_queue: int  # queued tickets; more are shed with 429
    max_queued_tokens: int  # queued prompt+output tokens; more are shed with 429
    priority: int  # vLLM request priority, lower first
    engines: frozenset[str]  # engines that may serve it


@dataclass(frozen=True, slots=True)
class ControllerSettings:
    """The adaptive concurrency controller (AIMD on engine-side TTFT).

    Every ``interval_s`` the controller compares the ``quantile`` of the TTFT
    samples of the last ``window_s`` with ``target_fraction`` times the tightest
    TTFT target among the engine's classes: over it, the limit is multiplied
    by ``decrease``; under it while the limit was binding, it grows by
    ``increase``. The fraction leaves the rest of the target for queueing.
    """

    enabled: bool = True
    initial_limit: int | None = None  # None: the engine's max_num_seqs
    min_limit: int = 2
    increase: int = 1
    decrease: float = 0.75
    window_s: float = 5.0
    interval_s: float = 1.0
    min_samples: int = 5
    quantile: float = 0.95
    target_fraction: float = 0.5
    min_gain: float = 0.05
    futile_hold_s: float = 30.0


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    """Dispatch and admission knobs that are not per class."""

    promotion_age_s: float = 10.0  # a ticket queued this long joins the top rank
    reserved_slots: int = 0  # per engine, below its limit, only for its most urgent class
    top_class_headroom: int = 0  # per engine, past its limit, only for its most urgent class
    # Per engine shared by several ranks: prompt tokens of lower-class tickets granted
    # and still in prefill (no first token yet) past which no more of them start, so an
    # urgent prefill finds room in the engine's next steps. 0: off.
    prefill_budget_tokens: int = 0
    prefix_tokens: int = 32  # leading prompt tokens hashed for affinity
    affinity_entries: int = 65_536  # bound on remembered prefixes
    rate_window_s: float = 10.0  # drain-rate window for predicted waits
    controller: ControllerSettings = ControllerSettings()
