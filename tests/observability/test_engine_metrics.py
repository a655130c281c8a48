"""Engine gauges and counters follow the engines' ``EngineStats`` snapshots."""

from __future__ import annotations

import asyncio

from engines.pool import EnginePool
from engines.protocol import GenerationRequest, SamplingSpec
from gateway.metrics import GatewayMetrics
from tests.observability.support import value


def _request(rid: str) -> GenerationRequest:
    # 16 prompt tokens growing to 56: four KV blocks each, where the engine has four.
    return GenerationRequest(rid, tuple(range(16)), SamplingSpec(max_tokens=40, ignore_eos=True))


async def _drain(pool: EnginePool, request: GenerationRequest) -> None:
    async for _ in pool.engine("fast").generate(request):
        pass


async def test_engine_series_match_the_snapshot_mid_run(pool: EnginePool,
                                                        metrics: GatewayMetrics) -> None:
    engine = pool.engine("fast")
    runs = [asyncio.create_task(_drain(pool, _request(f"r{i}"))) for i in range(5)]
    try:
        while not (engine.stats().running and engine.stats().waiting):
            await asyncio.sleep(0.001)
        # No await between the snapshot and the scrape: the engine cannot move.
        snap = engine.stats()
        r = metrics.registry
        assert value(r, "gateway_engine_running", engine="fast") == snap.running == 2
        assert value(r, "gateway_engine_waiting", engine="fast") == snap.waiting > 0
        assert value(r, "gateway_engine_inflight", engine="fast") == snap.inflight == 5
        assert value(r, "gateway_engine_kv_cache_usage", engine="fast") == snap.kv_cache_usage
        assert 0 < snap.kv_cache_usage <= 1
        assert value(r, "gateway_engine_healthy", engine="fast") == 1.0
        assert value(r, "gateway_engine_running", engine="bulk") == 0
    finally:
        await asyncio.gather(*runs)


async def test_preemptions_are_counted_per_engine(pool: EnginePool,
                                                  metrics: GatewayMetrics) -> None:
    await asyncio.gather(*(_drain(pool, _request(f"p{i}")) for i in range(4)))
    preempted = pool.engine("fast").stats().preemptions
    assert preempted > 0
    assert value(metrics.registry, "gateway_engine_preemptions_total", engine="fast") == preempted
    assert value(metrics.registry, "gateway_engine_preemptions_total", engine="bulk") == 0


async def test_a_dead_engine_reads_unhealthy(pool: EnginePool, metrics: GatewayMetrics) -> None:
    pool.engine("bulk").kill()  # type: ignore[attr-defined]
    assert value(metrics.registry, "gateway_engine_healthy", engine="bulk") == 0.0
    assert value(metrics.registry, "gateway_engine_healthy", engine="fast") == 1.0
