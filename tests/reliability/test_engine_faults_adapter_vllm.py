"""``VLLMEngine`` under faults, in process, on the demo model.

``stop()`` with requests in flight (the supervisor retiring a stalled engine)
fails them with ``EngineDeadError`` instead of letting them end as if
answered; and ``FaultyEngine`` wraps the real engine: a stall holds deltas
back while closing the stream still aborts the request inside vLLM.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

import pytest

from engines.demo_model import ensure_demo_model
from engines.faulty import FaultyEngine
from engines.protocol import EngineDeadError, GenerationRequest, SamplingSpec
from engines.vllm_engine import VLLMEngine

pytestmark = pytest.mark.vllm

ARGS = {"max_model_len": 2048, "max_num_seqs": 8, "enforce_eager": True}


def long_request(rid: str) -> GenerationRequest:
    return GenerationRequest(rid, tuple(range(5, 60)),
                             SamplingSpec(max_tokens=1500, temperature=0.0, ignore_eos=True))


async def first_tokens(stream: AsyncIterator[object], n: int) -> None:
    for _ in range(n):
        await anext(stream)


@pytest.fixture(scope="module")
async def engine() -> AsyncIterator[VLLMEngine]:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    eng = VLLMEngine("adapter", str(ensure_demo_model()), "slagate-demo", ARGS)
    await eng.start()
    yield eng
    await eng.stop()


async def test_faulty_stall_then_close_aborts_inside_vllm(engine: VLLMEngine) -> None:
    faulty = FaultyEngine(engine)
    stream = faulty.generate(long_request("stalled"))
    await first_tokens(stream, 2)
    faulty.stall(30)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await anext(stream)  # held back although vLLM keeps generating
    await stream.aclose()
    assert faulty.aborted == ["stalled"]
    assert engine.stats().inflight == 0
    assert engine._llm.get_num_unfinished_requests() == 0


async def test_stop_fails_requests_in_flight(engine: VLLMEngine) -> None:
    streams = [engine.generate(long_request(f"stopped-{i}")) for i in range(3)]
    for s in streams:
        await first_tokens(s, 1)

    async def drain(stream: AsyncIterator[object]) -> None:
        async for _ in stream:
            pass

    tasks = [asyncio.create_task(drain(s)) for s in streams]
    ticks = 0

    async def tick() -> None:  # the loop keeps running while vLLM shuts down
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    ticker = asyncio.create_task(tick())
    stopped_at = time.monotonic()
    stopping = asyncio.create_task(engine.stop())
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, EngineDeadError) for r in results), results
    assert time.monotonic() - stopped_at < 1.0
    await stopping
    stop_s = time.monotonic() - stopped_at
    ticker.cancel()
    print(f"stop() took {stop_s:.1f} s; the loop ticked {ticks} times meanwhile")
    assert ticks >= stop_s / 0.05 * 0.5  # never blocked for long
    assert not engine.healthy
