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


def test_child_list_is_cached_and_refreshed(busy_child: subprocess.Popen[str]) -> None:
    """The descendant list is read once per ``refresh_s`` (it scans /proc), and again
    at once when a listed child has gone."""
    from prometheus_client import CollectorRegistry

    from gateway.process_metrics import ChildProcessCollector

    now = [0.0]
    registry = CollectorRegistry()
    registry.register(ChildProcessCollector(psutil.Process(), refresh_s=10.0,
                                            clock=lambda: now[0]))
    listed = value(registry, "gateway_child_processes")
    assert listed >= 1
    late = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        now[0] = 5.0  # inside the refresh period: the new child is not listed yet
        assert value(registry, "gateway_child_processes") == listed
        now[0] = 10.0
        assert value(registry, "gateway_child_processes") == listed + 1
        busy_child.kill()
        busy_child.wait()
        now[0] = 11.0  # a listed child is gone: skipped now, the list is read again next
        assert value(registry, "gateway_child_processes") == listed
        assert value(registry, "gateway_child_processes") == listed
    finally:
        late.kill()
        late.wait()
