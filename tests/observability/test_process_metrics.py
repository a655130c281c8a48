"""Process CPU/memory of the gateway and of its children (vLLM engine cores)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest

from gateway.metrics import GatewayMetrics
from tests.observability.support import value

# Burns 0.3 s of CPU, says so, then idles until killed.
_BUSY_CHILD = """
import sys, time
start = time.process_time()
while time.process_time() - start < 0.3:
    pass
print("burnt", flush=True)
time.sleep(120)
"""


@pytest.fixture
def busy_child() -> Iterator[subprocess.Popen[str]]:
    child = subprocess.Popen([sys.executable, "-c", _BUSY_CHILD], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "burnt\n"
        yield child
    finally:
        child.kill()
        child.wait()


def test_own_process_memory_and_cpu() -> None:
    r = GatewayMetrics().registry
    rss = psutil.Process().memory_info().rss
    # Same process, a moment apart: within 10% of what psutil reads.
    assert abs(value(r, "gateway_process_resident_memory_bytes") - rss) < rss * 0.1
    assert value(r, "gateway_process_cpu_seconds_total") > 0


def test_children_cpu_and_memory_are_summed(busy_child: subprocess.Popen[str]) -> None:
    r = GatewayMetrics().registry
    child = psutil.Process(busy_child.pid)
    assert value(r, "gateway_child_processes") >= 1
    assert value(r, "gateway_child_process_cpu_seconds_total") >= 0.3
    assert value(r, "gateway_child_process_resident_memory_bytes") >= child.memory_info().rss
    before = value(r, "gateway_child_processes")
    busy_child.kill()
    busy_child.wait()
    assert value(r, "gateway_child_processes") == before - 1
