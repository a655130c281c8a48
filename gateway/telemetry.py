"""The observability side of the app's lifetime: GPU gauges and the loop-lag watcher.

``telemetry_context(metrics)`` is an aiohttp cleanup context: at start-up it
registers the GPU collector (a no-op without a GPU), the asyncio task gauge
(``gateway_asyncio_tasks``: a soak shows a task leak as a count that does not
come back down) and starts the loop-lag task; at cleanup it cancels and awaits
the task, unregisters the gauge and releases NVML.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.gpu_metrics import Nvml, load_nvml, start_gpu_metrics
from gateway.loop_lag import DEFAULT_INTERVAL_S, watch_loop_lag
from gateway.metrics import GatewayMetrics

CleanupContext = Callable[[web.Application], AsyncIterator[None]]


class _TaskCollector(Collector):
    """Tasks alive on the serving loop, counted at scrape time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def collect(self) -> list[GaugeMetricFamily]:
        return [GaugeMetricFamily("gateway_asyncio_tasks", "Tasks alive on the event loop",
                                  value=len(asyncio.all_tasks(self._loop)))]


def telemetry_context(metrics: GatewayMetrics,
                      load_gpu: Callable[[], Nvml | None] = load_nvml,
                      loop_lag_interval_s: float = DEFAULT_INTERVAL_S) -> CleanupContext:
    """A cleanup context owning the GPU collector and the loop-lag task of ``metrics``."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        gpus = start_gpu_metrics(metrics.registry, load_gpu)
        tasks = _TaskCollector(asyncio.get_running_loop())
        metrics.registry.register(tasks)
        lag = asyncio.create_task(watch_loop_lag(metrics.loop_lag.observe, loop_lag_interval_s),
                                  name="loop-lag")
        try:
            yield
        finally:
            lag.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lag
            metrics.registry.unregister(tasks)
            if gpus is not None:
                gpus.close()

    return context
