"""``EngineSupervisor`` on simulated engines: restart after death, growing
backoff, failed restarts retried, stall-triggered restarts, clean cancellation."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import AsyncIterator, Callable

import pytest

from engines.faulty import FaultyEngine
from engines.pool import EnginePool, PoolMember
from engines.protocol import Engine, EngineInfo, GenerationRequest, SamplingSpec
from engines.sim_profile import DEFAULT_PROFILE
from engines.simulated import SimulatedEngine
from engines.supervisor import EngineState, EngineSupervisor, RestartPolicy

FAST = dataclasses.replace(DEFAULT_PROFILE, time_scale=0.01)
QUICK = RestartPolicy(backoff_s=0.02, backoff_max_s=0.2, jitter=0.0, stable_after_s=60,
                      poll_s=0.005)


WARMUP = GenerationRequest("warmup", (1, 2, 3), SamplingSpec(max_tokens=2))


def make(name: str) -> FaultyEngine:
    return FaultyEngine(SimulatedEngine(name, "m", FAST))


class Harness:
    def __init__(self, policy: RestartPolicy = QUICK,
                 factory: Callable[[str], Engine] = make) -> None:
        self.made: list[Engine] = []
        self.prepared: list[Engine] = []
        self.pool = EnginePool([PoolMember(make("a"), frozenset({"c"})),
                                PoolMember(make("b"), frozenset({"c"}))])
        self.changes = 0

        def counting_factory(name: str) -> Engine:
            engine = factory(name)
            self.made.append(engine)
            return engine

        async def prepare(engine: Engine, info: EngineInfo) -> None:
            # Like warmup: one short generation, which fails on a dead engine.
            async for _ in engine.generate(WARMUP):
                pass
            self.prepared.append(engine)

        def changed() -> None:
            self.changes += 1

        self.supervisor = EngineSupervisor(self.pool, counting_factory, prepare, policy,
                                           on_change=changed, rng=random.Random(1))

    def engine(self, name: str = "a") -> FaultyEngine:
        engine = self.pool.engine(name)
        assert isinstance(engine, FaultyEngine)
        return engine

    async def wait_restarts(self, n: int, name: str = "a", timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while self.health(name).restarts < n or not self.pool.serving(name):
                await asyncio.sleep(0.005)

    def health(self, name: str = "a"):  # type: ignore[no-untyped-def]
        return next(h for h in self.supervisor.health() if h.name == name)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    await h.pool.start()
    task = asyncio.create_task(h.supervisor.run())
    yield h
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await h.pool.stop()


def test_delay_doubles_up_to_the_cap_with_bounded_jitter() -> None:
    policy = RestartPolicy(backoff_s=1.0, backoff_max_s=10.0, jitter=0.2)
    assert [policy.delay(n, 0.5) for n in range(6)] == [1, 2, 4, 8, 10, 10]
    assert policy.delay(1, 0.0) == pytest.approx(1.6)
    assert policy.delay(1, 0.999999) == pytest.approx(2.4, abs=1e-5)
    assert policy.delay(10, 0.999999) == 10.0  # jitter never passes the cap
    assert policy.delay(10_000, 0.5) == 10.0


async def test_a_killed_engine_is_replaced_and_serves_again(harness: Harness) -> None:
    old = harness.engine()
    old.kill()
    await harness.wait_restarts(1)
    new = harness.engine()
    assert new is not old and new.healthy and harness.pool.serving("a")
    assert harness.prepared == [new]
    assert not old.inner.healthy  # the dead instance was stopped
    assert harness.health().state is EngineState.SERVING
    assert harness.changes >= 2  # out of service, then back
    assert harness.pool.serving_names() == ["a", "b"]


async def test_backoff_grows_while_restarted_engines_keep_dying(harness: Harness) -> None:
    delays = []
    for n in range(1, 4):
        harness.engine().kill()
        await harness.wait_restarts(n)
        delays.append(harness.health().last_backoff_s)
    assert delays == [0.02, 0.04, 0.08]


async def test_backoff_resets_once_an_engine_stayed_up() -> None:
    h = Harness(dataclasses.replace(QUICK, stable_after_s=0.05))
    await h.pool.start()
    task = asyncio.create_task(h.supervisor.run())
    try:
        for n in (1, 2):
            h.engine().kill()
            await h.wait_restarts(n)
            assert h.health().last_backoff_s == 0.02
            await asyncio.sleep(0.1)  # longer than stable_after_s
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await h.pool.stop()


async def test_a_failed_restart_is_retried_with_a_longer_backoff() -> None:
    attempts: list[str] = []

    def flaky(name: str) -> Engine:
        attempts.append(name)
        engine = make(name)
        if len(attempts) == 1:
            engine.kill()  # starts, then dies in warmup
        return engine

    h = Harness(factory=flaky)
    await h.pool.start()
    task = asyncio.create_task(h.supervisor.run())
    try:
        h.engine().kill()
        await h.wait_restarts(1)
        health = h.health()
        assert attempts == ["a", "a"] and health.restart_failures == 1
        assert health.last_backoff_s == 0.04
        assert h.engine() is h.made[1] and h.engine().healthy
        assert not h.made[0].healthy
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await h.pool.stop()


async def test_stalls_in_a_row_retire_and_restart_the_engine(harness: Harness) -> None:
    policy_limit = harness.supervisor.policy.stalls_before_restart
    old = harness.engine()
    harness.supervisor.note_stall(old)
    harness.supervisor.note_completed("a")  # a completion in between: not in a row
    for _ in range(policy_limit - 1):
        harness.supervisor.note_stall(old)
    assert harness.health().state is EngineState.SUSPECT and harness.pool.serving("a")
    harness.supervisor.note_stall(old)
    assert not harness.pool.serving("a")  # at once, before the restart
    await harness.wait_restarts(1)
    assert harness.engine() is not old and harness.health().stalls == policy_limit + 1
    assert harness.health().state is EngineState.SERVING


async def test_reports_about_a_replaced_instance_are_ignored(harness: Harness) -> None:
    old = harness.engine()
    old.kill()
    await harness.wait_restarts(1)
    for _ in range(5):
        harness.supervisor.note_stall(old)
    harness.supervisor.note_dead(old)
    assert harness.pool.serving("a") and harness.health().stalls == 0


async def test_cancelling_the_supervisor_stops_a_half_started_replacement() -> None:
    entered = asyncio.Event()
    h = Harness()

    async def hang(engine: Engine, info: EngineInfo) -> None:
        entered.set()
        await asyncio.Event().wait()

    def factory(name: str) -> Engine:
        h.made.append(make(name))
        return h.made[-1]

    h.supervisor = EngineSupervisor(h.pool, factory, hang, QUICK)
    await h.pool.start()
    task = asyncio.create_task(h.supervisor.run())
    h.engine().kill()
    await asyncio.wait_for(entered.wait(), 5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert len(h.made) == 1 and not h.made[0].healthy  # stopped, not leaked
    await h.pool.stop()
