"""Process CPU and memory: the gateway process itself and its child processes.

The gateway's own figures come from prometheus-client's ``ProcessCollector``
(as ``gateway_process_*``, keeping DESIGN.md's prefix) and ``PlatformCollector``
(``python_info``). vLLM runs each engine core in a child process, where most of
the CPU and memory goes, so ``ChildProcessCollector`` adds the children's totals.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

import psutil
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)


def register_process_metrics(registry: CollectorRegistry) -> None:
    """Put the gateway's process, platform and child-process collectors on ``registry``."""
    ProcessCollector(namespace="gateway", registry=registry)
    PlatformCollector(registry=registry)
    registry.register(ChildProcessCollector(psutil.Process()))


class ChildProcessCollector(Collector):
    """CPU seconds and resident memory summed over the live descendants of a process.

    The CPU total covers the children alive at scrape time: a child that exits
    takes its seconds with it, which Prometheus's ``rate()`` reads as a counter reset.

    Listing descendants reads every process's ``/proc/<pid>/stat`` (a third of a
    scrape's CPU, on the serving loop), so the list is kept for ``refresh_s`` and
    read again early only when one of its processes has gone. Engine cores are
    long-lived: a restarted one is picked up within ``refresh_s``.
    """

    def __init__(self, parent: psutil.Process, refresh_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._parent = parent
        self._refresh_s = refresh_s
        self._clock = clock
        self._children: list[psutil.Process] = []
        self._listed_at = -float("inf")

    def _descendants(self) -> list[psutil.Process]:
        now = self._clock()
        if now - self._listed_at >= self._refresh_s:
            self._children = self._parent.children(recursive=True)
            self._listed_at = now
        return self._children

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        count = cpu = rss = 0.0
        for child in self._descendants():
            try:
                with child.oneshot():
                    times = child.cpu_times()
                    memory = child.memory_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                self._listed_at = -float("inf")  # list again at the next scrape
                continue  # exited (or turned unreadable) since it was listed
            count += 1
            cpu += times.user + times.system
            rss += memory.rss
        yield GaugeMetricFamily("gateway_child_processes",
                                "Live descendant processes (vLLM engine cores)", value=count)
        yield CounterMetricFamily("gateway_child_process_cpu_seconds",
                                  "User and system CPU seconds of live descendant processes",
                                  value=cpu)
        yield GaugeMetricFamily("gateway_child_process_resident_memory_bytes",
                                "Resident memory of live descendant processes", value=rss)
