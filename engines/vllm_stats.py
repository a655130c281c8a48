"""Engine statistics from vLLM's stat-logger hook.

vLLM pushes ``SchedulerStats`` (running, waiting, KV-cache usage) and
``IterationStats`` (preemptions) to every registered stat logger after each
engine step. We keep only the latest values: ``VLLMEngine.stats()`` reads them
without touching the engine. The stat-logger interface is marked unstable by
vLLM, so every field is read defensively with ``getattr``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class SchedulerSample:
    """Latest values seen from one engine's scheduler (mutated in place)."""

    running: int = 0
    waiting: int = 0
    kv_cache_usage: float = 0.0
    preemptions: int = 0


def make_stat_logger_factory(sample: SchedulerSample) -> Any:
    """A vLLM ``StatLoggerFactory`` whose loggers write into ``sample``."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class _SampleLogger(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            self._sample = sample

        def record(
            self,
            scheduler_stats: Any,
            iteration_stats: Any,
            mm_cache_stats: Any = None,
            engine_idx: int = 0,
        ) -> None:
            if scheduler_stats is not None:
                self._sample.running = int(getattr(scheduler_stats, "num_running_reqs", 0))
                self._sample.waiting = int(getattr(scheduler_stats, "num_waiting_reqs", 0))
                self._sample.kv_cache_usage = float(
                    getattr(scheduler_stats, "kv_cache_usage", 0.0)
                )
            if iteration_stats is not None:
                self._sample.preemptions += int(getattr(iteration_stats, "num_preempted_reqs", 0))

        def log_engine_initialized(self) -> None:
            pass

    return _SampleLogger
