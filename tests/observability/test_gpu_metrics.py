"""GPU gauges: NVML readings mapped to series; a silent no-op without a GPU."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gateway.gpu_metrics import load_nvml, start_gpu_metrics
from tests.observability.fake_nvml import FakeNvml, two_gpus
from tests.observability.support import series, value

GPU_SERIES = ("gateway_gpu_utilization_ratio", "gateway_gpu_memory_used_bytes",
              "gateway_gpu_memory_total_bytes")


def test_readings_map_to_ratio_and_bytes_per_device() -> None:
    registry, nvml = CollectorRegistry(), two_gpus()
    gpus = start_gpu_metrics(registry, lambda: nvml)
    assert gpus is not None
    h100 = {"name": "NVIDIA H100 80GB HBM3"}  # bytes from older NVML bindings, decoded
    assert value(registry, "gateway_gpu_utilization_ratio", gpu="0", **h100) == 0.37
    assert value(registry, "gateway_gpu_utilization_ratio", gpu="1", **h100) == 1.0
    assert value(registry, "gateway_gpu_memory_used_bytes", gpu="0", **h100) == 41 << 30
    assert value(registry, "gateway_gpu_memory_total_bytes", gpu="1", **h100) == 80 << 30
    nvml.devices[0].gpu_percent = 5  # read at scrape time, not at start
    assert value(registry, "gateway_gpu_utilization_ratio", gpu="0", **h100) == 0.05
    gpus.close()
    assert nvml.shutdowns == 1
    assert series(registry, "gateway_gpu_utilization_ratio") == []


def test_a_lost_device_is_left_out_of_the_scrape(caplog: pytest.LogCaptureFixture) -> None:
    registry, nvml = CollectorRegistry(), two_gpus()
    assert start_gpu_metrics(registry, lambda: nvml) is not None
    nvml.devices[0].broken = True
    with caplog.at_level(logging.WARNING, logger="gateway.gpu_metrics"):
        generate_latest(registry)
    for name in GPU_SERIES:
        assert [s["gpu"] for s in series(registry, name)] == ["1"]
    assert "GPU 0 left out" in caplog.text


@pytest.mark.parametrize("nvml", [None, FakeNvml([]), FakeNvml(count_error=True)],
                         ids=["no-library-or-driver", "no-device", "nvml-error"])
def test_without_a_gpu_nothing_is_registered(nvml: FakeNvml | None) -> None:
    registry = CollectorRegistry()
    assert start_gpu_metrics(registry, lambda: nvml) is None
    assert list(registry.collect()) == []
    if nvml is not None:
        assert nvml.shutdowns == 1  # the NVML session opened by the loader is closed


def test_the_real_loader_matches_the_machine() -> None:
    """With real nvidia-ml-py: one series per GPU the driver lists, none and no error
    on a machine without the NVIDIA driver (this CPU machine)."""
    gpus_dir = Path("/proc/driver/nvidia/gpus")
    expected = len(list(gpus_dir.iterdir())) if gpus_dir.is_dir() else 0
    registry = CollectorRegistry()
    gpus = start_gpu_metrics(registry, load_nvml)
    try:
        assert len(series(registry, "gateway_gpu_memory_total_bytes")) == expected
        assert (gpus is None) == (expected == 0)
    finally:
        if gpus is not None:
            gpus.close()

