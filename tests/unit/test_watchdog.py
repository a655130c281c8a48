"""``Watchdog``: an overrun wait becomes ``Overrun(what)``; waits that keep
within their limits, and cancellations from elsewhere, are left alone."""

from __future__ import annotations

import asyncio

import pytest

from gateway.watchdog import Overrun, Watchdog


async def test_an_overrun_wait_is_cancelled_and_named() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(Overrun) as caught, Watchdog(0.01) as watch:
        watch.expect("engine", 0.05)
        await asyncio.sleep(0.01)
        watch.expect("client", 0.05)
        await asyncio.sleep(10)
    assert caught.value.what == "client" and caught.value.limit_s == 0.05
    assert 0.05 <= loop.time() - started < 0.5
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_progress_within_the_limit_never_fires() -> None:
    with Watchdog(0.005) as watch:
        for _ in range(20):  # 0.2 s in all, each wait 0.01 s of a 0.03 s limit
            watch.expect("engine", 0.03)
            await asyncio.sleep(0.01)
        watch.relax()
        await asyncio.sleep(0.05)
    assert watch.fired is None


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    async def guarded() -> None:
        with Watchdog(0.01) as watch:
            watch.expect("engine", 10)
            await asyncio.sleep(10)

    task = asyncio.create_task(guarded())
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
