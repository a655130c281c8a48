"""Prometheus metrics (names and labels are a contract: DESIGN.md §3).

Request-path metrics are plain prometheus-client instruments in a registry of
their own (so tests and several apps in one process don't collide). Engine
gauges are read from ``EnginePool.stats()`` snapshots at scrape time by a
collector, never pushed from the hot path. Process and child-process figures
(``process_metrics``), event-loop lag (``loop_lag``) and GPU gauges
(``gpu_metrics``) come from modules of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from engines.protocol import EngineStats
from gateway.process_metrics import register_process_metrics
from scheduler.core import SchedulerSnapshot

# The *_created series only add noise to every scrape.
disable_created_metrics()  # type: ignore[no-untyped-call]

# vLLM's latency buckets start at 300 ms: too coarse for interactive SLOs.
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
                   1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075,
                0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5)
# A healthy loop wakes within a millisecond; tens of ms already stretch every stream.
LOOP_LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0)


class GatewayMetrics:
    """The gateway's instruments, in one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("gateway_requests_total", "Requests by terminal outcome",
                                ["class", "outcome"], registry=r)
        # Accounting: every received request is refused (answered without ever
        # entering a queue) or admitted (the scheduler's counter); every admitted
        # one ends in one outcome: requests_total minus refused.
        self.received = Counter("gateway_requests_received_total",
                                "Requests that reached a generation route", registry=r)
        self.refused = Counter("gateway_requests_refused_total",
                               "Requests answered without entering a queue, by outcome",
                               ["class", "outcome"], registry=r)
        self.rejections = Counter("gateway_rejections_total",
                                  "Requests shed (429) or timed out in the queue (503), by reason",
                                  ["class", "reason"], registry=r)
        self.queue_wait = Histogram("gateway_queue_wait_seconds", "Time from arrival to grant",
                                    ["class"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("gateway_ttft_seconds", "Arrival to first token", ["class"],
                              buckets=LATENCY_BUCKETS, registry=r)
        self.tpot = Histogram("gateway_tpot_seconds", "Time per output token after the first",
                              ["class"], buckets=TPOT_BUCKETS, registry=r)
        self.e2e = Histogram("gateway_e2e_seconds", "Arrival to last token", ["class"],
                             buckets=LATENCY_BUCKETS, registry=r)
        self.slo_met = Counter("gateway_slo_met_total", "Requests meeting their class SLOs",
                               ["class"], registry=r)
        self.slo_missed = Counter("gateway_slo_missed_total", "Requests missing an SLO",
                                  ["class"], registry=r)
        self.tokens = Counter("gateway_tokens_total", "Tokens by kind (prompt, completion)",
                              ["class", "kind"], registry=r)
        self.engine_ttft = Histogram("gateway_engine_ttft_seconds",
                                     "Dispatch to first token, per engine", ["engine"],
                                     buckets=LATENCY_BUCKETS, registry=r)
        self.ready = Gauge("gateway_ready", "1 when ready to serve", registry=r)
        # Process health: CPU, memory, and how late the event loop runs its tasks.
        self.loop_lag = Histogram("gateway_event_loop_lag_seconds",
                                  "How late the event loop woke a sleeping task",
                                  buckets=LOOP_LAG_BUCKETS, registry=r)
        # Collector pauses by generation (gateway/gc_policy.py): each stops the loop.
        self.gc_pause = Histogram("gateway_gc_pause_seconds",
                                  "Cyclic garbage collector pauses, by generation",
                                  ["generation"], buckets=LOOP_LAG_BUCKETS, registry=r)
        self.gc_pause_children = [self.gc_pause.labels(str(g)) for g in range(3)]
        register_process_metrics(r)
        self.config_reloads = Counter("gateway_config_reloads", "Config reloads by result",
                                      ["result"], registry=r)
        for result in ("ok", "error"):
            self.config_reloads.labels(result)  # both series exist from the start
        self.config_info = Gauge("gateway_config_info",
                                 "1 for the config being served: its reload generation and "
                                 "the sha256 of its file", ["generation", "sha256"], registry=r)

    def observe_gc_pause(self, generation: int, seconds: float) -> None:
        self.gc_pause_children[generation].observe(seconds)

    def config_loaded(self, generation: int, digest: str) -> None:
        """Point ``gateway_config_info`` at the config now served."""
        self.config_info.clear()
        self.config_info.labels(str(generation), digest).set(1)

    def watch_engines(self, source: Callable[[], Iterable[EngineStats]]) -> None:
        self.registry.register(_EngineCollector(source))

    def watch_scheduler(self, source: Callable[[], SchedulerSnapshot]) -> None:
        self.registry.register(_SchedulerCollector(source))


class _SchedulerCollector(Collector):
    """Queue depths and controller state, read from a snapshot at scrape time."""

    def __init__(self, source: Callable[[], SchedulerSnapshot]) -> None:
        self._source = source

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        snap = self._source()
        depth = GaugeMetricFamily("gateway_queue_depth", "Tickets waiting", labels=["class"])
        tokens = GaugeMetricFamily("gateway_queue_tokens", "Tokens (prompt+max) waiting",
                                   labels=["class"])
        admitted = CounterMetricFamily("gateway_requests_admitted",
                                       "Requests admitted into a class queue", labels=["class"])
        # The targets as series, so dashboards draw them against the observed quantiles.
        ttft_target = GaugeMetricFamily("gateway_ttft_target_seconds",
                                        "The class's p99 TTFT target", labels=["class"])
        tpot_target = GaugeMetricFamily("gateway_tpot_target_seconds",
                                        "The class's p99 TPOT target", labels=["class"])
        for c in snap.classes:
            depth.add_metric([c.policy.name], c.queued)
            tokens.add_metric([c.policy.name], c.queued_tokens)
            ttft_target.add_metric([c.policy.name], c.policy.ttft_target_s)
            tpot_target.add_metric([c.policy.name], c.policy.tpot_target_s)
            admitted.add_metric([c.policy.name], c.counters.get("admitted", 0))
        limit = GaugeMetricFamily("gateway_engine_concurrency_limit",
                                  "Sequences the controller lets into the engine",
                                  labels=["engine"])
        granted = GaugeMetricFamily("gateway_engine_granted", "Slots held by granted tickets",
                                    labels=["engine"])
        observed = GaugeMetricFamily("gateway_engine_controller_ttft_seconds",
                                     "The controller's windowed engine-side TTFT quantile",
                                     labels=["engine"])
        for e in snap.engines:
            limit.add_metric([e.name], e.controller.limit)
            granted.add_metric([e.name], e.inflight)
            if e.controller.observed_s is not None:
                observed.add_metric([e.name], e.controller.observed_s)
        yield from (depth, tokens, admitted, ttft_target, tpot_target, limit, granted, observed)


class _EngineCollector(Collector):
    """Engine-side state from ``EngineStats`` snapshots at scrape time."""

    def __init__(self, source: Callable[[], Iterable[EngineStats]]) -> None:
        self._source = source

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        inflight = GaugeMetricFamily("gateway_engine_inflight", "Requests on the engine",
                                     labels=["engine"])
        kv = GaugeMetricFamily("gateway_engine_kv_cache_usage", "KV-cache usage 0..1",
                               labels=["engine"])
        healthy = GaugeMetricFamily("gateway_engine_healthy", "1 when healthy",
                                    labels=["engine"])
        running = GaugeMetricFamily("gateway_engine_running", "Sequences in the batch",
                                    labels=["engine"])
        waiting = GaugeMetricFamily("gateway_engine_waiting", "Sequences queued in the engine",
                                    labels=["engine"])
        preemptions = CounterMetricFamily("gateway_engine_preemptions",
                                          "Sequences the engine preempted (KV cache full)",
                                          labels=["engine"])
        for s in self._source():
            inflight.add_metric([s.name], s.inflight)
            kv.add_metric([s.name], s.kv_cache_usage)
            healthy.add_metric([s.name], 1.0 if s.healthy else 0.0)
            running.add_metric([s.name], s.running)
            waiting.add_metric([s.name], s.waiting)
            preemptions.add_metric([s.name], s.preemptions)
        yield from (inflight, kv, healthy, running, waiting, preemptions)
