"""The collector policy: young collections observed, full collections only when due."""

from __future__ import annotations

import asyncio
import gc

from gateway.gc_policy import GEN1_EVERY, CollectorPolicy, FullCollectionClock


def test_full_collection_due_when_idle_or_overdue() -> None:
    clock = FullCollectionClock(idle_every_s=10.0, max_every_s=300.0, last=0.0)
    assert not clock.due(5.0, idle=True)  # too soon even when idle
    assert clock.due(10.0, idle=True)
    assert not clock.due(299.0, idle=False)  # busy: wait for idle...
    assert clock.due(300.0, idle=False)  # ...but never longer than max_every_s


def test_install_takes_the_thresholds_and_observes_pauses() -> None:
    seen: list[tuple[int, float]] = []
    policy = CollectorPolicy(lambda gen, s: seen.append((gen, s)))
    old = policy.install()
    try:
        _gen0, gen1, gen2 = gc.get_threshold()
        assert gen1 == GEN1_EVERY and gen2 > 1_000_000  # no automatic full collection
        gc.collect(0)
        gc.collect(1)
        assert [g for g, _ in seen] == [0, 1]
        assert all(s >= 0 for _, s in seen)
    finally:
        policy.uninstall(old)
    assert gc.get_threshold() == old
    gc.collect(0)
    assert len(seen) == 2  # no longer observed


def test_maybe_collect_runs_a_full_collection_only_when_due() -> None:
    now = [100.0]
    seen: list[int] = []
    policy = CollectorPolicy(lambda gen, s: seen.append(gen),
                             FullCollectionClock(idle_every_s=10.0, max_every_s=60.0),
                             now=lambda: now[0])
    old = policy.install()
    try:
        now[0] = 105.0
        assert not policy.maybe_collect(idle=True)
        now[0] = 110.0
        assert not policy.maybe_collect(idle=False)
        assert policy.maybe_collect(idle=True)
        assert 2 in seen and policy.full_collections == 1
        now[0] = 169.0
        assert not policy.maybe_collect(idle=False)
        now[0] = 170.0
        assert policy.maybe_collect(idle=False)  # overdue: collected though busy
        assert policy.full_collections == 2
    finally:
        policy.uninstall(old)


def test_run_collects_and_restores_the_thresholds_when_cancelled() -> None:
    before = gc.get_threshold()
    policy = CollectorPolicy(lambda gen, s: None,
                             FullCollectionClock(idle_every_s=0.0, max_every_s=60.0))

    async def main() -> None:
        task = asyncio.create_task(policy.run(lambda: True, period_s=0.01))
        await asyncio.sleep(0.1)
        assert gc.get_threshold() != before
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert policy.full_collections >= 1
    assert gc.get_threshold() == before
