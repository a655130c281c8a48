"""Supervision metrics: engine restarts, failed restarts, stalls, suspects.

Read from ``EngineSupervisor.health()`` snapshots at scrape time, like the
other engine gauges; nothing is pushed from the request path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from engines.supervisor import EngineHealth, EngineState


class EngineHealthCollector(Collector):
    def __init__(self, source: Callable[[], Iterable[EngineHealth]]) -> None:
        self._source = source

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        restarts = CounterMetricFamily("gateway_engine_restarts", "Engines restarted after "
                                       "dying or stalling", labels=["engine"])
        failed = CounterMetricFamily("gateway_engine_restart_failures",
                                     "Restart attempts that failed to start or warm",
                                     labels=["engine"])
        stalls = CounterMetricFamily("gateway_engine_stalls", "Requests aborted for no token "
                                     "within server.stall_timeout_s", labels=["engine"])
        suspect = GaugeMetricFamily("gateway_engine_suspect", "1 when the engine stalled since "
                                    "its last completed request", labels=["engine"])
        for h in self._source():
            restarts.add_metric([h.name], h.restarts)
            failed.add_metric([h.name], h.restart_failures)
            stalls.add_metric([h.name], h.stalls)
            suspect.add_metric([h.name], 1.0 if h.state is EngineState.SUSPECT else 0.0)
        yield from (restarts, failed, stalls, suspect)
