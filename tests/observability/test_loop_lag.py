"""The loop-lag watcher, and the telemetry context that owns it and the GPU gauges."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web

from gateway.loop_lag import watch_loop_lag
from gateway.metrics import GatewayMetrics
from gateway.telemetry import telemetry_context
from tests.observability.fake_nvml import two_gpus
from tests.observability.support import series, value


async def test_a_blocked_loop_shows_as_lag() -> None:
    lags: list[float] = []
    watcher = asyncio.create_task(watch_loop_lag(lags.append, interval_s=0.01))
    try:
        while len(lags) < 2:  # running, with unblocked wake-ups first
            await asyncio.sleep(0.01)
        time.sleep(0.2)  # a synchronous stretch: every task on the loop waits it out
        seen = len(lags)
        while len(lags) == seen:
            await asyncio.sleep(0.01)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    assert max(lags) >= 0.15
    assert min(lags) >= 0.0


async def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        await watch_loop_lag(lambda _: None, interval_s=0)


async def test_telemetry_context_owns_the_watcher_and_the_gpu_session() -> None:
    metrics, nvml = GatewayMetrics(), two_gpus()
    app = web.Application()
    app.cleanup_ctx.append(telemetry_context(metrics, lambda: nvml, loop_lag_interval_s=0.01))
    runner = web.AppRunner(app)
    await runner.setup()  # runs the cleanup contexts' start-up halves
    try:
        assert len(series(metrics.registry, "gateway_gpu_memory_total_bytes")) == 2
        while value(metrics.registry, "gateway_event_loop_lag_seconds_count") < 3:
            await asyncio.sleep(0.01)
        lag_tasks = [t for t in asyncio.all_tasks() if t.get_name() == "loop-lag"]
        assert len(lag_tasks) == 1
        before = value(metrics.registry, "gateway_asyncio_tasks")
        assert before == len(asyncio.all_tasks()) >= 2  # this test's task and the watcher
        extra = [asyncio.create_task(asyncio.sleep(10)) for _ in range(5)]
        assert value(metrics.registry, "gateway_asyncio_tasks") == before + 5
        for t in extra:
            t.cancel()
        await asyncio.gather(*extra, return_exceptions=True)
        assert value(metrics.registry, "gateway_asyncio_tasks") == before
    finally:
        await runner.cleanup()
    assert lag_tasks[0].done()
    assert nvml.shutdowns == 1
    assert series(metrics.registry, "gateway_gpu_memory_total_bytes") == []
    assert series(metrics.registry, "gateway_asyncio_tasks") == []
