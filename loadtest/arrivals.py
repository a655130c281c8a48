"""Open-loop arrival times: when each request is due, independent of any response.

Inter-arrival gaps are gamma-distributed with shape = burstiness and mean 1/rate, exactly
as vLLM's ``benchmarks/serve.py`` draws them: burstiness 1 is a Poisson process, below 1
burstier (coefficient of variation 1/sqrt(burstiness) > 1), above 1 more regular. With a
request count, the offsets are rescaled so the last one lands at ``count / rate`` (vLLM does
the same, so runs of one seed and different lengths hit the nominal rate exactly); with a
horizon, arrivals are simply those that fall before it.
"""

from __future__ import annotations

import asyncio
import math
import time

import numpy as np


def gaps(rng: np.random.Generator, rate: float, burstiness: float, size: int) -> np.ndarray:
    """``size`` inter-arrival gaps in seconds."""
    if math.isinf(rate):
        return np.zeros(size)
    if math.isinf(burstiness):
        return np.full(size, 1.0 / rate)
    return rng.gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=size)


def offsets_for_count(
    rng: np.random.Generator, rate: float, burstiness: float, count: int
) -> np.ndarray:
    """Due times (seconds from start) of ``count`` requests; the last one at ``count/rate``."""
    due = np.cumsum(gaps(rng, rate, burstiness, count))
    if count and due[-1] > 0 and math.isfinite(rate):
        due *= (count / rate) / due[-1]
    return due


def offsets_for_horizon(
    rng: np.random.Generator, rate: float, burstiness: float, horizon_s: float
) -> np.ndarray:
    """Due times of every arrival in ``[0, horizon_s)``."""
    if math.isinf(rate):
        raise ValueError("a horizon needs a finite rate")
    chunks: list[np.ndarray] = []
    last = 0.0
    block = max(16, int(rate * horizon_s * 1.2) + 16)
    while last < horizon_s:
        due = last + np.cumsum(gaps(rng, rate, burstiness, block))
        chunks.append(due)
        last = float(due[-1])
    due = np.concatenate(chunks)
    return due[due < horizon_s]


async def wait_until(deadline: float) -> None:
    """Return once ``time.perf_counter() >= deadline``.

    Event-loop timers have millisecond granularity, so sends land up to ~1 ms late. That
    jitters the arrival process slightly but biases no latency: every latency is measured
    from the actual send. (Spinning for sub-millisecond sends was tried: at 500 req/s it
    cost more CPU than everything else together and made the reading of responses, which
    is what the latencies depend on, later.)
    """
    while (delay := deadline - time.perf_counter()) > 0:
        await asyncio.sleep(delay)
