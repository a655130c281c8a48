"""GPU utilization and memory through NVML (``nvidia-ml-py``), when a GPU is present.

``start_gpu_metrics`` loads NVML through an injectable loader; without the
library, the driver or any device it registers nothing and returns ``None``,
so the same gateway runs unchanged on a CPU-only machine. Samples are read at
scrape time; an NVML error on one device (a GPU fallen off the bus) drops that
device from the scrape and is logged, never turned into a failed ``/metrics``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)


class Nvml(Protocol):
    """The slice of the ``pynvml`` module we use, in NVML's own names (a fake in tests)."""

    @property
    def NVMLError(self) -> type[Exception]: ...  # read-only: a subclass will do

    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...
    def nvmlDeviceGetName(self, handle: Any) -> str | bytes: ...
    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any: ...
    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any: ...
    def nvmlShutdown(self) -> None: ...


def load_nvml() -> Nvml | None:
    """The initialised ``pynvml`` module, or ``None`` without the library or a driver."""
    try:
        import pynvml
    except ImportError:
        logger.info("GPU metrics off: nvidia-ml-py is not installed")
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        logger.info("GPU metrics off: NVML unavailable (%s)", error)
        return None
    nvml: Nvml = pynvml
    return nvml


class GpuCollector(Collector):
    """Per-device utilization and memory, labelled by index and model name."""

    def __init__(self, nvml: Nvml) -> None:
        self._nvml = nvml
        self._devices: list[tuple[str, str, Any]] = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = nvml.nvmlDeviceGetName(handle)
            self._devices.append((str(index), _text(name), handle))

    @property
    def device_count(self) -> int:
        return len(self._devices)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        labels = ["gpu", "name"]
        busy = GaugeMetricFamily("gateway_gpu_utilization_ratio",
                                 "Fraction of the last sample period a kernel ran (0..1)",
                                 labels=labels)
        used = GaugeMetricFamily("gateway_gpu_memory_used_bytes", "Device memory in use",
                                 labels=labels)
        total = GaugeMetricFamily("gateway_gpu_memory_total_bytes", "Device memory installed",
                                  labels=labels)
        for index, name, handle in self._devices:
            try:
                rates = self._nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = self._nvml.nvmlDeviceGetMemoryInfo(handle)
            except self._nvml.NVMLError as error:
                logger.warning("GPU %s left out of this scrape: %s", index, error)
                continue
            busy.add_metric([index, name], float(rates.gpu) / 100.0)
            used.add_metric([index, name], float(memory.used))
            total.add_metric([index, name], float(memory.total))
        yield from (busy, used, total)


class GpuMetrics:
    """A registered ``GpuCollector`` and the NVML session it holds; ``close`` ends both."""

    def __init__(self, registry: CollectorRegistry, nvml: Nvml, collector: GpuCollector) -> None:
        self._registry = registry
        self._nvml = nvml
        self.collector = collector

    def close(self) -> None:
        self._registry.unregister(self.collector)
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError as error:
            logger.warning("NVML shutdown failed: %s", error)


def start_gpu_metrics(registry: CollectorRegistry,
                      load: Callable[[], Nvml | None] = load_nvml) -> GpuMetrics | None:
    """Register GPU gauges on ``registry`` if NVML sees a device; else do nothing."""
    nvml = load()
    if nvml is None:
        return None
    try:
        collector = GpuCollector(nvml)
    except nvml.NVMLError as error:
        logger.info("GPU metrics off: cannot list devices (%s)", error)
        nvml.nvmlShutdown()
        return None
    if collector.device_count == 0:
        logger.info("GPU metrics off: NVML reports no device")
        nvml.nvmlShutdown()
        return None
    registry.register(collector)
    logger.info("GPU metrics on for %d device(s)", collector.device_count)
    return GpuMetrics(registry, nvml, collector)


def _text(value: str | bytes) -> str:
    # Older nvidia-ml-py releases return bytes for names.
    return value.decode(errors="replace") if isinstance(value, bytes) else value
