"""An in-memory stand-in for the ``pynvml`` module, injected through the loader.

Method names are NVML's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class FakeNVMLError(Exception):
    """Plays ``pynvml.NVMLError``."""


@dataclass
class Utilization:
    gpu: int  # percent, as NVML reports it
    memory: int


@dataclass
class Memory:
    used: int
    total: int
    free: int = 0


@dataclass
class FakeDevice:
    name: str | bytes
    gpu_percent: int
    used: int
    total: int
    broken: bool = False  # reading it raises, like a GPU fallen off the bus


@dataclass
class FakeNvml:
    devices: list[FakeDevice] = field(default_factory=list)
    count_error: bool = False
    shutdowns: int = 0

    NVMLError = FakeNVMLError

    def nvmlDeviceGetCount(self) -> int:
        if self.count_error:
            raise FakeNVMLError("driver/library version mismatch")
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeDevice:
        return self.devices[index]

    def nvmlDeviceGetName(self, handle: FakeDevice) -> str | bytes:
        return handle.name

    def nvmlDeviceGetUtilizationRates(self, handle: FakeDevice) -> Utilization:
        if handle.broken:
            raise FakeNVMLError("GPU is lost")
        return Utilization(gpu=handle.gpu_percent, memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle: FakeDevice) -> Memory:
        if handle.broken:
            raise FakeNVMLError("GPU is lost")
        return Memory(used=handle.used, total=handle.total)

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1


def two_gpus() -> FakeNvml:
    return FakeNvml([FakeDevice(b"NVIDIA H100 80GB HBM3", 37, 41 << 30, 80 << 30),
                     FakeDevice("NVIDIA H100 80GB HBM3", 100, 1 << 30, 80 << 30)])
