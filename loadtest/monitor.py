"""Resource samples taken during a run, on the same clock as the requests.

Every ``interval_s``: the client's own counts (sent, done, in flight), this process's CPU
(so an overloaded instrument shows itself), system CPU and memory (psutil), the CPU and
memory of watched server processes (the tuner's gateway), GPU utilisation and memory
(nvidia-ml-py, when it and a GPU are present), and the gauges of the target's
``/metrics`` -- the gateway's queue depths and engine limits, or plain vLLM's running and
waiting counts. The samples become ``timeline.csv`` and ``resources.png``; the guide's
PerformanceMonitor thread and its private CSV are not needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psutil

from loadtest.records import Tally

log = logging.getLogger(__name__)

WATCHED_GAUGES = (
    "gateway_queue_depth",
    "gateway_engine_inflight",
    "gateway_engine_concurrency_limit",
    "gateway_engine_kv_cache_usage",
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
)

FetchText = Callable[[str], Awaitable[tuple[int, str] | None]]


@dataclass(frozen=True, slots=True)
class ResourceSample:
    t_s: float
    values: dict[str, float]


def parse_gauges(text: str, names: Sequence[str] = WATCHED_GAUGES) -> dict[str, float]:
    """``{"name{labels}": value}`` for the watched metric names in Prometheus text."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(tuple(names)):
            continue
        if "}" in line:
            end = line.rindex("}") + 1
            key, rest = line[:end], line[end:].split()
        else:
            key, *rest = line.split()
        with contextlib.suppress(ValueError, IndexError):
            found[key] = float(rest[0])
    return found


class _Gpus:
    """nvidia-ml-py, if installed and a GPU answers; otherwise nothing."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self._handles: list[Any] = []
        try:
            import pynvml
        except ImportError:
            return
        try:
            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self._nvml = pynvml
        except pynvml.NVMLError as exc:
            log.debug("no GPU telemetry: %s", exc)

    def sample(self) -> dict[str, float]:
        values: dict[str, float] = {}
        for i, handle in enumerate(self._handles):
            util = self._nvml.nvmlDeviceGetUtilizationRates(handle)
            memory = self._nvml.nvmlDeviceGetMemoryInfo(handle)
            values[f"gpu{i}_util_percent"] = float(util.gpu)
            values[f"gpu{i}_memory_used_mib"] = memory.used / 2**20
        return values


class Monitor:
    """Samples resources until stopped; owned and awaited by the run."""

    def __init__(
        self,
        fetch_text: FetchText,
        tally: Tally,
        t0: float,
        interval_s: float,
        watch_pids: Sequence[int] = (),
    ) -> None:
        self.samples: list[ResourceSample] = []
        self._fetch = fetch_text
        self._tally = tally
        self._t0 = t0
        self._interval = interval_s
        self._self = psutil.Process()
        self._watched = [psutil.Process(pid) for pid in watch_pids if psutil.pid_exists(pid)]
        self._gpus = _Gpus()
        self._metrics_route = True

    async def run(self, stop: asyncio.Event) -> None:
        psutil.cpu_percent(None)  # the first reading only starts the interval
        self._self.cpu_percent(None)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)
            self.samples.append(await self._sample())

    async def _sample(self) -> ResourceSample:
        t = time.perf_counter() - self._t0
        values: dict[str, float] = {
            "sent": self._tally.sent,
            "done": self._tally.done,
            "in_flight": self._tally.in_flight,
            "loadtest_cpu_percent": self._self.cpu_percent(None),
            "system_cpu_percent": psutil.cpu_percent(None),
            "system_memory_percent": psutil.virtual_memory().percent,
        }
        values.update(self._server_processes())
        values.update(self._gpus.sample())
        if self._metrics_route:
            answer = await self._fetch("/metrics")
            if answer is None or answer[0] != 200:
                self._metrics_route = False  # no /metrics: stop asking
            else:
                values.update(parse_gauges(answer[1]))
        return ResourceSample(t, values)

    def _server_processes(self) -> dict[str, float]:
        cpu = rss = 0.0
        for proc in self._watched:
            try:
                family = [proc, *proc.children(recursive=True)]
                for p in family:
                    cpu += p.cpu_percent(None)
                    rss += p.memory_info().rss
            except psutil.Error:
                continue
        if not self._watched:
            return {}
        return {"server_cpu_percent": cpu, "server_rss_mib": rss / 2**20}
