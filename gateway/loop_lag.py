"""Event-loop lag: how late the loop wakes a task that asked to sleep.

Everything the gateway does shares one loop; a long synchronous stretch (a big
tokenization, a GC pause, a blocking call) delays every stream at once. The
watcher sleeps a fixed interval and records the overshoot, so such stalls show
up in ``gateway_event_loop_lag_seconds`` rather than only in tail latencies.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

DEFAULT_INTERVAL_S = 0.25


async def watch_loop_lag(observe: Callable[[float], None],
                         interval_s: float = DEFAULT_INTERVAL_S,
                         clock: Callable[[], float] = time.perf_counter) -> None:
    """Forever: sleep ``interval_s``, then ``observe`` the seconds the wake-up came late."""
    if interval_s <= 0:
        raise ValueError("interval_s must be > 0")
    while True:
        asked_at = clock()
        await asyncio.sleep(interval_s)
        observe(max(0.0, clock() - asked_at - interval_s))
