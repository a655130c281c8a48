"""Shared fixtures: a GatewayMetrics registry watching simulated engines and a scheduler."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest

from engines.pool import EnginePool, PoolMember
from engines.sim_profile import DEFAULT_PROFILE
from engines.simulated import SimulatedEngine
from gateway.config import GatewayConfig, default_config
from gateway.metrics import GatewayMetrics
from gateway.scheduling import build_scheduler

# Two sequences at most, four 16-token KV blocks: two 16-token prompts that each
# grow past 32 tokens cannot both stay, so the engine preempts. Steps of ~1 ms.
TIGHT = dataclasses.replace(DEFAULT_PROFILE, max_num_seqs=2, kv_capacity_tokens=64,
                            max_model_len=64, block_size=16, base_step_ms=10.0,
                            per_seq_ms=0.0, prefill_per_token_ms=0.0, time_scale=0.1)


@pytest.fixture
def config() -> GatewayConfig:
    return default_config()


@pytest.fixture
async def pool(config: GatewayConfig) -> AsyncIterator[EnginePool]:
    """The default config's engines, simulated: ``fast`` with a tight KV cache."""
    members = [PoolMember(SimulatedEngine(spec.name, profile=TIGHT if i == 0 else
                                          DEFAULT_PROFILE), frozenset(spec.classes))
               for i, spec in enumerate(config.engines)]
    engine_pool = EnginePool(members)
    await engine_pool.start()
    yield engine_pool
    await engine_pool.stop()


@pytest.fixture
def metrics(config: GatewayConfig, pool: EnginePool) -> GatewayMetrics:
    live = GatewayMetrics()
    live.watch_engines(pool.stats)
    live.watch_scheduler(build_scheduler(config).snapshot)
    return live
