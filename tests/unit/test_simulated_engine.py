"""The simulated engine: the Engine protocol, its cost model, batching rules and fault hooks.

Timing tests run on the event loop's clock with a scaled profile (``time_scale``),
so simulated steps of tens of milliseconds take fractions of one here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from engines.protocol import (
    Engine,
    EngineDeadError,
    EngineError,
    FinishReason,
    GenerationRequest,
    SamplingSpec,
    TokenDelta,
)
from engines.sim_batch import SimBatch
from engines.sim_profile import DEFAULT_PROFILE, SimulatedProfile
from engines.simulated import SimulatedEngine

# Steps of 10 ms + 2 ms per sequence, at 1/20 of real time: big enough to see
# on the loop clock, small enough to keep the file fast.
TIMED = dataclasses.replace(
    DEFAULT_PROFILE, base_step_ms=10.0, per_seq_ms=2.0, prefill_per_token_ms=0.1,
    time_scale=0.05,
)
FAST = dataclasses.replace(DEFAULT_PROFILE, zero_cost=True)
# For TTFT comparisons on a loop clock that other processes may delay: wider gaps.
TIMED_TTFT = dataclasses.replace(TIMED, time_scale=0.2)

MakeEngine = Callable[..., Awaitable[SimulatedEngine]]


def req(
    rid: str,
    prompt_len: int = 8,
    max_tokens: int = 8,
    *,
    n: int = 1,
    ignore_eos: bool = True,
    priority: int = 0,
    seed: int | None = None,
    logprobs: int | None = None,
) -> GenerationRequest:
    spec = SamplingSpec(max_tokens=max_tokens, n=n, ignore_eos=ignore_eos, seed=seed,
                        logprobs=logprobs)
    return GenerationRequest(rid, tuple(range(prompt_len)), spec, priority)


async def collect(engine: SimulatedEngine, request: GenerationRequest) -> list[TokenDelta]:
    return [d async for d in engine.generate(request)]


async def ttft(engine: SimulatedEngine, request: GenerationRequest) -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    stream = engine.generate(request)
    await anext(stream)
    elapsed = loop.time() - started
    await stream.aclose()
    return elapsed


async def best_ttft(engine: SimulatedEngine, prompt_len: int, probes: int = 5) -> float:
    """The least TTFT of a few probes: a busy machine only ever adds delay."""
    return min([await ttft(engine, req(f"probe{i}", prompt_len)) for i in range(probes)])


def tokens(deltas: list[TokenDelta], index: int = 0) -> list[int]:
    return [t for d in deltas if d.index == index for t in d.token_ids]


@pytest.fixture
async def make_engine() -> AsyncIterator[MakeEngine]:
    engines: list[SimulatedEngine] = []

    async def make(profile: SimulatedProfile = FAST, **changes: Any) -> SimulatedEngine:
        engine = SimulatedEngine(f"sim{len(engines)}", "sim-model",
                                 dataclasses.replace(profile, **changes))
        engines.append(engine)
        await engine.start()
        return engine

    yield make
    for engine in engines:
        await engine.stop()


# -- the protocol ------------------------------------------------------------


async def test_satisfies_the_engine_protocol_and_says_it_is_simulated() -> None:
    engine = SimulatedEngine("sim", "sim-model")
    assert isinstance(engine, Engine)
    assert not engine.healthy
    with pytest.raises(EngineDeadError):
        await anext(engine.generate(req("early")))
    info = await engine.start()
    assert await engine.start() is info  # idempotent
    assert info.extra == {"simulated": "true"}
    assert (info.served_model_name, info.max_model_len) == ("sim-model", 2048)
    assert engine.healthy and engine.stats().healthy
    await engine.stop()


async def test_ignore_eos_streams_exactly_max_tokens(make_engine: MakeEngine) -> None:
    engine = await make_engine(eos_prob=0.5)
    deltas = await collect(engine, req("a", max_tokens=50))
    assert [len(d.token_ids) for d in deltas] == [1] * 50
    assert [d.finish_reason for d in deltas] == [None] * 49 + [FinishReason.LENGTH]
    assert all(d.text == f" t{d.token_ids[0]}" for d in deltas)
    assert engine.profile.eos_token_id not in tokens(deltas)


async def test_eos_stops_a_choice_early(make_engine: MakeEngine) -> None:
    engine = await make_engine(eos_prob=0.5)
    deltas = await collect(engine, req("a", max_tokens=50, ignore_eos=False))
    last = deltas[-1]
    assert len(deltas) < 50
    assert last.finish_reason is FinishReason.STOP
    assert (last.token_ids, last.text) == ((engine.profile.eos_token_id,), "")


async def test_n_choices_each_stream_and_finish(make_engine: MakeEngine) -> None:
    engine = await make_engine()
    deltas = await collect(engine, req("a", max_tokens=5, n=3))
    for index in range(3):
        mine = [d for d in deltas if d.index == index]
        assert len(mine) == 5 and mine[-1].finish_reason is FinishReason.LENGTH
    assert len({tuple(tokens(deltas, i)) for i in range(3)}) == 3


async def test_context_length_ends_a_choice(make_engine: MakeEngine) -> None:
    engine = await make_engine(max_model_len=128)
    deltas = await collect(engine, req("a", prompt_len=120, max_tokens=100))
    assert len(deltas) == 8 and deltas[-1].finish_reason is FinishReason.LENGTH


async def test_tokens_repeat_for_a_seed_or_request_id(make_engine: MakeEngine) -> None:
    one, two = await make_engine(), await make_engine()
    seeded = [tokens(await collect(one, req(rid, max_tokens=20, seed=7))) for rid in "xy"]
    assert seeded[0] == seeded[1]
    assert tokens(await collect(one, req("x", max_tokens=20))) == tokens(
        await collect(two, req("x", max_tokens=20))
    )
    assert tokens(await collect(one, req("x", max_tokens=20))) != tokens(
        await collect(one, req("y", max_tokens=20))
    )


async def test_logprobs_never_change_the_tokens(make_engine: MakeEngine) -> None:
    engine = await make_engine()
    plain = await collect(engine, req("a", max_tokens=10))
    with_lp = await collect(engine, req("a", max_tokens=10, logprobs=2))
    assert tokens(plain) == tokens(with_lp)
    assert all(d.logprobs is not None and len(d.logprobs[0].top) == 3 for d in with_lp)
    assert all(d.logprobs is None for d in plain)


async def test_same_arrivals_give_the_same_interleaving(make_engine: MakeEngine) -> None:
    async def run(engine: SimulatedEngine) -> list[tuple[str, TokenDelta]]:
        seen: list[tuple[str, TokenDelta]] = []

        async def one(rid: str, prompt_len: int) -> None:
            async for d in engine.generate(req(rid, prompt_len, 12, ignore_eos=False)):
                seen.append((rid, d))

        await asyncio.gather(*(one(f"r{i}", 50 * i + 1) for i in range(12)))
        return seen

    kw = {"max_num_seqs": 4, "max_num_batched_tokens": 64, "eos_prob": 0.1}
    assert await run(await make_engine(**kw)) == await run(await make_engine(**kw))


async def test_warmup_reports_what_it_ran(make_engine: MakeEngine) -> None:
    engine = await make_engine()
    report = await engine.warmup([req("w0", 32, 4), req("w1", 64, 6, n=2)])
    assert (report.engine, report.requests) == (engine.name, 2)
    assert (report.prompt_tokens, report.output_tokens) == (96, 16)


async def test_refuses_requests_it_cannot_serve(make_engine: MakeEngine) -> None:
    engine = await make_engine(max_model_len=128)
    for bad in (req("long", prompt_len=128), req("empty", prompt_len=0)):
        with pytest.raises(EngineError, match="refused"):
            await anext(engine.generate(bad))
    first = engine.generate(req("dup", max_tokens=100))
    await anext(first)
    with pytest.raises(EngineError, match="already running"):
        await anext(engine.generate(req("dup")))
    await first.aclose()
    assert engine.healthy and engine.stats().inflight == 0


# -- the cost model ----------------------------------------------------------


def test_default_profile_step_costs() -> None:
    p = DEFAULT_PROFILE
    assert p.step_seconds(1, 0) == pytest.approx(0.015, abs=0.001)
    assert p.step_seconds(64, 0) == pytest.approx(0.030, abs=0.001)
    assert dataclasses.replace(p, zero_cost=True).step_seconds(64, 2048) == 0.0


async def test_default_profile_serves_about_15_requests_per_second(
    make_engine: MakeEngine,
) -> None:
    # time_scale 0: no sleeping, but the simulated busy time still adds up.
    engine = await make_engine(DEFAULT_PROFILE, time_scale=0.0)
    await asyncio.gather(*(collect(engine, req(f"r{i}", 256, 64)) for i in range(300)))
    assert 13.0 < 300 / engine.simulated_seconds < 17.0


async def test_ttft_grows_with_batch_size(make_engine: MakeEngine) -> None:
    engine = await make_engine(TIMED_TTFT)
    alone = await best_ttft(engine, prompt_len=8)
    background = [engine.generate(req(f"bg{i}", max_tokens=10_000)) for i in range(32)]
    await asyncio.gather(*(anext(s) for s in background))  # all 32 are decoding
    loaded = await best_ttft(engine, prompt_len=8)
    for stream in background:
        await stream.aclose()
    # alone: one step of 10+2+0.8 ms; loaded: the step of 33 sequences, 10+66+0.8 ms
    assert loaded >= 76.8e-3 * TIMED_TTFT.time_scale
    assert loaded > 3 * alone


async def test_ttft_grows_with_prompt_length(make_engine: MakeEngine) -> None:
    engine = await make_engine(TIMED_TTFT)
    short = await best_ttft(engine, prompt_len=16)
    long = await best_ttft(engine, prompt_len=1024)
    # 10+2+1.6 ms vs 10+2+102.4 ms of simulated time
    assert long >= 114.4e-3 * TIMED_TTFT.time_scale
    assert long > 4 * short


def test_long_prefill_is_chunked_over_steps() -> None:
    batch = SimBatch(dataclasses.replace(DEFAULT_PROFILE, max_num_batched_tokens=256))
    batch.add(req("a", prompt_len=1000), seed=0)
    chunks, emitted = [], []
    for _ in range(5):
        plan = batch.schedule()
        chunks.append(plan.prefill_tokens)
        emitted.append(len(batch.complete(plan)))
    # the step that finishes the prefill samples the first token; then one per step
    assert chunks == [256, 256, 256, 232, 0]
    assert emitted == [0, 0, 0, 1, 1]


# -- batching rules ----------------------------------------------------------


async def test_running_batch_never_exceeds_max_num_seqs(make_engine: MakeEngine) -> None:
    engine = await make_engine(max_num_seqs=4)
    most_running = most_waiting = 0

    async def one(i: int) -> int:
        nonlocal most_running, most_waiting
        count = 0
        async for d in engine.generate(req(f"r{i}", max_tokens=10, n=1 + i % 2)):
            stats = engine.stats()
            most_running = max(most_running, stats.running)
            most_waiting = max(most_waiting, stats.waiting)
            count += len(d.token_ids)
        return count

    counts = await asyncio.gather(*(one(i) for i in range(20)))
    assert counts == [10 * (1 + i % 2) for i in range(20)]
    assert most_running == 4 and most_waiting > 0


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("fcfs", ["p4", "p2", "p3a", "p1", "p3b"]), ("priority", ["p1", "p2", "p3a", "p3b", "p4"])],
)
async def test_waiting_requests_run_in_policy_order(
    make_engine: MakeEngine, policy: str, expected: list[str]
) -> None:
    engine = await make_engine(max_num_seqs=1, scheduling_policy=policy)
    started: list[str] = []

    async def one(rid: str, priority: int, max_tokens: int = 3) -> None:
        async for _ in engine.generate(req(rid, max_tokens=max_tokens, priority=priority)):
            if rid not in started:
                started.append(rid)

    blocker = asyncio.create_task(one("blocker", 0, max_tokens=50))
    while not started:
        await asyncio.sleep(0)
    assert engine.stats().running == 1
    await asyncio.gather(
        one("p4", 4), one("p2", 2), one("p3a", 3), one("p1", 1), one("p3b", 3), blocker
    )
    assert started == ["blocker", *expected]


async def test_closing_a_stream_early_aborts_it(make_engine: MakeEngine) -> None:
    engine = await make_engine(TIMED, max_num_seqs=1)
    running = engine.generate(req("running", max_tokens=10_000))
    await anext(running)
    waiting = asyncio.create_task(anext(engine.generate(req("waiting"))))
    while engine.stats().waiting == 0:
        await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert engine.stats().waiting == 0
    await running.aclose()
    stats = engine.stats()
    assert (stats.running, stats.waiting, stats.inflight, stats.kv_cache_usage) == (0, 0, 0, 0)


async def test_abort_ends_every_choice_with_abort(make_engine: MakeEngine) -> None:
    engine = await make_engine(TIMED)
    stream = engine.generate(req("a", max_tokens=10_000, n=2))
    await anext(stream)
    await engine.abort("a")
    await engine.abort("unknown")  # a no-op
    rest = [d async for d in stream]
    ends = [d for d in rest if d.finish_reason is not None]
    assert sorted(d.index for d in ends) == [0, 1]
    assert all(d.finish_reason is FinishReason.ABORT and d.token_ids == () for d in ends)
    assert engine.stats().inflight == 0


async def test_small_kv_cache_preempts_and_still_finishes(make_engine: MakeEngine) -> None:
    # 16 blocks of 16 tokens; each request grows to 32 + 64 tokens = 6 blocks.
    engine = await make_engine(max_model_len=128, kv_capacity_tokens=256)
    highest = 0.0

    async def one(i: int) -> list[TokenDelta]:
        nonlocal highest
        out = []
        async for d in engine.generate(req(f"r{i}", prompt_len=32, max_tokens=64)):
            highest = max(highest, engine.stats().kv_cache_usage)
            out.append(d)
        return out

    results = await asyncio.gather(*(one(i) for i in range(4)))
    assert [len(tokens(r)) for r in results] == [64] * 4
    assert engine.stats().preemptions > 0
    assert highest <= 1.0 and engine.stats().kv_cache_usage == 0.0


def test_preemption_takes_the_newest_running_sequence() -> None:
    profile = dataclasses.replace(DEFAULT_PROFILE, max_model_len=64, kv_capacity_tokens=64)
    batch = SimBatch(profile)
    batch.add(req("old", prompt_len=16, max_tokens=40), seed=0)
    batch.add(req("new", prompt_len=16, max_tokens=40), seed=0)
    while batch.preemptions == 0:
        batch.complete(batch.schedule())
    assert [s.request_id for s in batch.running] == ["old"]
    assert [s.request_id for s in batch.waiting] == ["new"]


# -- zero-cost mode ----------------------------------------------------------


async def test_zero_cost_mode_is_fast() -> None:
    engine = SimulatedEngine.zero_cost("zero")
    assert engine.profile.zero_cost and not DEFAULT_PROFILE.zero_cost
    await engine.start()
    # CPU time of this process: no sleeps happen, and other processes on a
    # shared machine should not fail the test.
    started = time.process_time()
    results = await asyncio.gather(
        *(collect(engine, req(f"r{i}", 16, 16)) for i in range(1000))
    )
    elapsed = time.process_time() - started
    await engine.stop()
    assert all(len(r) == 16 for r in results)
    assert elapsed < 1.0, f"1,000 requests of 16 tokens took {elapsed:.2f} s"


# -- fault hooks and lifecycle ------------------------------------------------


async def test_fail_next_fails_that_many_requests(make_engine: MakeEngine) -> None:
    engine = await make_engine()
    engine.fail_next(2)
    for _ in range(2):
        with pytest.raises(EngineError, match="injected"):
            await collect(engine, req("a"))
    assert len(await collect(engine, req("a"))) == 8
    custom = EngineError("boom")
    engine.fail_next(1, custom, after_tokens=3)
    seen: list[TokenDelta] = []
    with pytest.raises(EngineError, match="boom"):
        async for d in engine.generate(req("b", max_tokens=50)):
            seen.append(d)
    assert len(seen) == 3 and engine.healthy
    assert engine.stats().inflight == engine.stats().running == 0


async def test_kill_fails_in_flight_and_later_requests(make_engine: MakeEngine) -> None:
    engine = await make_engine(TIMED)
    streams = [engine.generate(req(f"r{i}", max_tokens=10_000)) for i in range(3)]
    for s in streams:
        await anext(s)
    engine.kill()
    assert not engine.healthy and not engine.stats().healthy
    for s in streams:
        with pytest.raises(EngineDeadError):
            async for _ in s:
                pass
    with pytest.raises(EngineDeadError):
        await anext(engine.generate(req("later")))
    assert engine.stats().inflight == engine.stats().running == 0


async def test_stall_pauses_the_steps(make_engine: MakeEngine) -> None:
    engine = await make_engine(TIMED)
    loop = asyncio.get_running_loop()
    stream = engine.generate(req("a", max_tokens=10_000))
    await anext(stream)
    engine.stall(0.05)
    before = loop.time()
    await anext(stream)  # may be the step already under way
    await anext(stream)
    assert loop.time() - before >= 0.05
    assert engine.healthy
    await stream.aclose()


async def test_stop_aborts_in_flight_and_is_idempotent() -> None:
    engine = SimulatedEngine("sim", profile=TIMED)
    await engine.start()
    stream = engine.generate(req("a", max_tokens=10_000))
    await anext(stream)
    await engine.stop()
    await engine.stop()
    assert [d.finish_reason async for d in stream][-1] is FinishReason.ABORT
    assert not engine.healthy
    with pytest.raises(EngineDeadError):
        await anext(engine.generate(req("b")))
    with pytest.raises(EngineDeadError):
        await engine.start()


# -- the profile ---------------------------------------------------------------


def test_profile_from_args_applies_known_keys() -> None:
    assert SimulatedProfile.from_args({}) == DEFAULT_PROFILE
    p = SimulatedProfile.from_args(
        {"max_num_seqs": 8, "base_step_ms": 5, "scheduling_policy": "priority",
         "zero_cost": True, "time_scale": 0.01}
    )
    assert (p.max_num_seqs, p.base_step_ms, p.scheduling_policy) == (8, 5, "priority")
    engine = SimulatedEngine.from_args("e", None, {"max_model_len": 512})
    assert engine.profile.max_model_len == 512


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"max_num_seq": 8}, "unknown argument.*'max_num_seq'"),
        ({"max_num_seqs": True}, "max_num_seqs must be int"),
        ({"max_num_seqs": "16"}, "max_num_seqs must be int"),
        ({"eos_prob": 1.5}, "eos_prob"),
        ({"base_step_ms": float("nan")}, "base_step_ms"),
        ({"kv_capacity_tokens": 1024}, "kv_capacity_tokens"),
        ({"scheduling_policy": "lifo"}, "scheduling_policy"),
    ],
)
def test_profile_from_args_refuses_bad_args(args: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimulatedProfile.from_args(args)
