"""A test-side driver: the gateway's serving path without HTTP, on simulated engines.

``Harness.run`` replays a list of ``Arrival``s (open loop, in simulated
seconds) against a real ``Scheduler`` + ``Dispatcher`` and ``SimulatedEngine``s,
doing for each request what ``gateway/serving.py::_serve`` does:
``Ticket`` -> ``dispatcher.acquire`` -> ``engine.generate`` ->
``dispatcher.first_token`` on the first token -> ``dispatcher.release``.

Clocks: one clock for everything, the event loop's. The dispatcher gets
``clock=loop.time``, tickets take their arrival from it, the engines sleep
on it, and every latency recorded here is read from it.

- On ``VirtualClockLoop`` (``run_virtual``) that clock jumps to the next
  timer whenever no callback is ready, so a simulated minute costs only the
  CPU the loop spends (a second or two), and no delay of the machine can
  reach a measurement: the scenarios are deterministic (given a seed) and
  cannot be flaky on a loaded machine. ``Scale(1.0)``: engines at
  ``time_scale=1``, loop seconds are simulated seconds.
- On an ordinary loop, engines run at ``time_scale=k`` (``Scale(k)``): one
  simulated second lasts ``k`` loop seconds. The dispatcher must still keep
  the loop clock: its timer task sleeps loop seconds between ticks and
  deadlines, so a clock divided by ``k`` would make it sleep ``1/k`` times
  too long. So every time the scheduler sees (class targets, queue
  timeouts, controller interval and window, promotion age, drain-rate
  window) is converted from simulated to loop seconds with ``Scale.real``
  (``sim_class``, ``sim_settings``), and every latency is read back in
  simulated seconds with ``Scale.sim``. There, the machine's own hiccups
  show up ``1/k`` times larger in simulated seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import selectors
from collections.abc import Callable, Coroutine, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import TypeVar

import numpy as np

from engines.protocol import EngineError, EngineStats, GenerationRequest, SamplingSpec
from engines.sim_profile import SimulatedProfile
from engines.simulated import SimulatedEngine
from scheduler.core import Scheduler
from scheduler.dispatcher import Dispatcher, Expired, Rejected
from scheduler.placement import prefix_key
from scheduler.policy import ClassPolicy, ControllerSettings, SchedulerSettings
from scheduler.ticket import Ticket, TicketState

T = TypeVar("T")


class _VirtualSelector(selectors.DefaultSelector):
    """Polls without blocking; where the loop would wait for its next timer,
    moves the loop's clock forward to it instead."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = super().select(0)
        if events or timeout == 0:
            return events
        if timeout is None:
            # Nothing ready, no timer, no I/O: every task waits on another.
            raise RuntimeError("virtual clock: nothing can ever run again (deadlock)")
        self.now += timeout
        return events


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop on simulated time: whenever no callback is ready, its clock
    jumps to the next timer. Work in callbacks takes no time on it."""

    def __init__(self) -> None:
        self._virtual = _VirtualSelector()
        super().__init__(self._virtual)

    def time(self) -> float:
        return self._virtual.now


def run_virtual(main: Coroutine[object, object, T]) -> T:
    """Run ``main`` to completion on a fresh ``VirtualClockLoop``."""
    with asyncio.Runner(loop_factory=VirtualClockLoop) as runner:
        return runner.run(main)


@dataclass(frozen=True, slots=True)
class Scale:
    """Loop seconds per simulated second (the engines' ``time_scale``)."""

    k: float

    def real(self, sim_s: float) -> float:
        return sim_s * self.k

    def sim(self, real_s: float) -> float:
        return real_s / self.k


def sim_class(scale: Scale, name: str, *, rank: int, engines: Sequence[str],
              ttft_target_s: float, queue_timeout_s: float, weight: float = 1.0,
              max_queue: int = 100_000, max_queued_tokens: int = 10**9,
              priority: int = 0) -> ClassPolicy:
    """A class whose times are given in simulated seconds (stored in loop seconds)."""
    return ClassPolicy(name=name, rank=rank, weight=weight,
                       ttft_target_s=scale.real(ttft_target_s),
                       tpot_target_s=scale.real(1.0),
                       queue_timeout_s=scale.real(queue_timeout_s), max_queue=max_queue,
                       max_queued_tokens=max_queued_tokens, priority=priority,
                       engines=frozenset(engines))


def sim_settings(scale: Scale, *, controller: ControllerSettings,
                 promotion_age_s: float = 1e6, reserved_slots: int = 0,
                 prefix_tokens: int = 32, rate_window_s: float = 10.0) -> SchedulerSettings:
    """Scheduler settings with times in simulated seconds (stored in loop seconds)."""
    return SchedulerSettings(
        promotion_age_s=scale.real(promotion_age_s), reserved_slots=reserved_slots,
        prefix_tokens=prefix_tokens, rate_window_s=scale.real(rate_window_s),
        controller=replace(controller, window_s=scale.real(controller.window_s),
                           interval_s=scale.real(controller.interval_s)))


@dataclass(frozen=True, slots=True)
class Arrival:
    """One client: when it arrives (simulated s from the start) and what it asks."""

    at: float
    sla_class: str
    prompt: tuple[int, ...]
    max_tokens: int
    tenant: str = "t"
    label: str = ""  # what the test groups it by (e.g. its class in an FCFS baseline)
    group: int | None = None  # e.g. its shared-prefix group
    cancel_after_s: float | None = None  # client leaves this long (sim s) after arriving
    cancel_after_tokens: int | None = None  # client leaves after this many tokens


@dataclass(slots=True)
class Result:
    """What happened to one client. ``status`` is set exactly once."""

    arrival: Arrival
    ticket: Ticket | None = None
    status: str | None = None  # ok | rejected | expired | cancelled | failed
    detail: str = ""  # reject reason, where a cancel hit, the engine error
    retry_after_s: float | None = None
    tokens: int = 0
    cancel_hit: TicketState | None = None  # the ticket's state when the client left
    left_queue: bool | None = None  # for clients cancelled while queued

    def finish(self, status: str, detail: str = "") -> None:
        assert self.status is None, f"second terminal state {status} after {self.status}"
        self.status = status
        self.detail = detail

    # Latencies in loop seconds (the harness converts them).
    @property
    def engine(self) -> str | None:
        return None if self.ticket is None else self.ticket.engine

    def wait(self) -> float | None:
        t = self.ticket
        return None if t is None or t.granted_at is None else t.granted_at - t.arrival

    def ttft(self) -> float | None:
        t = self.ticket
        return None if t is None or t.first_token_at is None else t.first_token_at - t.arrival

    def engine_ttft(self) -> float | None:
        t = self.ticket
        if t is None or t.first_token_at is None or t.granted_at is None:
            return None
        return t.first_token_at - t.granted_at


@dataclass(frozen=True, slots=True)
class EngineSample:
    limit: int
    inflight: int  # granted by the scheduler, not yet released
    running: int  # the engine's own batch
    waiting: int  # queued inside the engine
    engine_inflight: int  # streams the engine holds
    observed_s: float | None  # the controller's last quantile (loop s)
    action: str


@dataclass(frozen=True, slots=True)
class Sample:
    t: float  # simulated seconds since the start
    lag: float  # how late the sampler woke (loop s): a loaded machine shows here
    engines: Mapping[str, EngineSample]
    queued: Mapping[str, int]


@dataclass
class Run:
    scale: Scale
    results: list[Result]
    samples: list[Sample]
    scheduler: Scheduler
    engines: dict[str, SimulatedEngine]
    start: float  # loop time when the first arrival was due
    elapsed: float  # loop seconds from start to the end of the last client
    final_stats: dict[str, EngineStats] = field(default_factory=dict)

    def by(self, status: str | None = None, **match: object) -> list[Result]:
        out = []
        for r in self.results:
            if status is not None and r.status != status:
                continue
            if all(getattr(r.arrival, k) == v for k, v in match.items()):
                out.append(r)
        return out

    def sim(self, values: Sequence[float | None]) -> np.ndarray:
        return np.array([self.scale.sim(v) for v in values if v is not None], dtype=float)

    def ttfts(self, **match: object) -> np.ndarray:
        return self.sim([r.ttft() for r in self.by("ok", **match)])

    def waits(self, **match: object) -> np.ndarray:
        return self.sim([r.wait() for r in self.by(None, **match) if r.wait() is not None])

    def since_start(self, loop_time: float) -> float:
        """Simulated seconds from the start of the run to a loop time."""
        return self.scale.sim(loop_time - self.start)

    def max_lag(self) -> float:
        return max((s.lag for s in self.samples), default=0.0)


class Harness:
    """Scheduler, dispatcher and simulated engines on the running loop."""

    def __init__(self, scale: Scale, classes: Sequence[ClassPolicy],
                 profiles: Mapping[str, SimulatedProfile], settings: SchedulerSettings,
                 engine_limits: Mapping[str, int] | None = None,
                 scheduler_factory: Callable[..., Scheduler] = Scheduler) -> None:
        self.scale = scale
        self.profiles = {n: replace(p, time_scale=scale.k) for n, p in profiles.items()}
        # The scheduler's ceiling per engine: max_num_seqs, as the gateway does,
        # unless a test caps it lower.
        limits = dict(engine_limits or {n: p.max_num_seqs for n, p in profiles.items()})
        self.classes = {c.name: c for c in classes}
        self.settings = settings
        self.scheduler = scheduler_factory(list(classes), limits, settings)
        self.engines = {n: SimulatedEngine(n, profile=p) for n, p in self.profiles.items()}
        self.dispatcher: Dispatcher | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._results: list[Result] = []

    async def run(self, arrivals: Sequence[Arrival], *, sample_every_s: float = 0.25,
                  check: Callable[[Sample], None] | None = None,
                  tail_s: float = 0.0, hang_after_s: float = 120.0) -> Run:
        """Replay ``arrivals``, wait for every client to end, stop everything.

        ``check`` runs on each sample (e.g. to assert limits inline). All
        arguments are simulated seconds: ``tail_s`` of idle time after the
        last client; a client still going ``hang_after_s`` after the last
        arrival fails the run.
        """
        assert self.dispatcher is None, "one run per Harness"
        loop = asyncio.get_running_loop()
        self.dispatcher = Dispatcher(self.scheduler, clock=loop.time)
        # On a real clock, a full garbage collection of the test process's heap
        # pauses the loop, and with it the engines, for tens of milliseconds
        # (tenths of simulated seconds at time_scale 0.1). Freezing what exists
        # now keeps collections to this run's objects.
        gc.collect()
        gc.freeze()
        for engine in self.engines.values():
            await engine.start()
        timers = loop.create_task(self.dispatcher.run(lambda: [
            n for n, e in self.engines.items() if e.healthy]))
        samples: list[Sample] = []
        start = loop.time()
        done = asyncio.Event()
        sampler = loop.create_task(self._sample(start, sample_every_s, samples, check, done))
        self._results = [Result(a) for a in arrivals]
        try:
            last = max((a.at for a in arrivals), default=0.0)
            await asyncio.wait_for(self._replay(arrivals, start),
                                   self.scale.real(last + hang_after_s))
            if tail_s:
                await asyncio.sleep(self.scale.real(tail_s))
        finally:
            done.set()
            await sampler  # re-raises a failed inline check
            timers.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timers
            final = {n: e.stats() for n, e in self.engines.items()}
            for engine in self.engines.values():
                await engine.stop()
            gc.unfreeze()
        return Run(self.scale, self._results, samples, self.scheduler, self.engines,
                   start, loop.time() - start, final)

    async def _replay(self, arrivals: Sequence[Arrival], start: float) -> None:
        loop = asyncio.get_running_loop()
        pending = len(arrivals)
        all_done = asyncio.Event()
        errors: list[BaseException] = []

        def ended(task: asyncio.Task[None]) -> None:
            nonlocal pending
            pending -= 1
            # Cancelled clients end in CancelledError by design; anything else is a bug.
            if not task.cancelled() and task.exception() is not None:
                errors.append(task.exception())  # type: ignore[arg-type]
            if pending == 0:
                all_done.set()

        for index, arrival in enumerate(arrivals):
            delay = start + self.scale.real(arrival.at) - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = loop.create_task(self._client(index))
            task.add_done_callback(ended)
            self._tasks.append(task)
            if arrival.cancel_after_s is not None:
                loop.call_later(self.scale.real(arrival.cancel_after_s), self._cancel, index)
        # Not gather(): that would handle thousands of finished tasks in one loop
        # turn, a pause the simulated engines would feel.
        if pending:
            await all_done.wait()
        if errors:
            raise errors[0]

    def _cancel(self, index: int) -> None:
        task, result = self._tasks[index], self._results[index]
        if task.done() or result.cancel_hit is not None:
            return
        if result.ticket is None:  # not started yet: leave once it has arrived
            asyncio.get_running_loop().call_soon(self._cancel, index)
            return
        result.cancel_hit = result.ticket.state
        task.cancel()

    async def _client(self, index: int) -> None:
        """One request through the serving path (as ``gateway/serving.py`` does)."""
        assert self.dispatcher is not None
        dispatcher, result = self.dispatcher, self._results[index]
        arrival = result.arrival
        policy = self.classes[arrival.sla_class]
        now = dispatcher.now()
        ticket = result.ticket = Ticket(
            id=f"r{index}", sla_class=arrival.sla_class, tenant=arrival.tenant,
            prompt_tokens=len(arrival.prompt), max_tokens=arrival.max_tokens,
            arrival=now, deadline=now + policy.queue_timeout_s,
            prefix_key=prefix_key(arrival.prompt, self.settings.prefix_tokens))
        try:
            name = await dispatcher.acquire(ticket)
        except Rejected as exc:
            result.retry_after_s = exc.rejection.retry_after_s
            result.finish("rejected", exc.rejection.reason)
            return
        except Expired:
            result.finish("expired")
            return
        except asyncio.CancelledError:
            result.finish("cancelled", "queued")
            result.left_queue = (ticket.state is TicketState.DONE
                                 and ticket.id not in self.scheduler.queues[ticket.sla_class])
            raise
        engine = self.engines[name]
        request = GenerationRequest(
            request_id=ticket.id, prompt_token_ids=arrival.prompt,
            sampling=SamplingSpec(max_tokens=arrival.max_tokens, ignore_eos=True),
            priority=policy.priority)
        release = "failed"
        try:
            async with aclosing(engine.generate(request)) as deltas:
                async for delta in deltas:
                    if not delta.token_ids:
                        continue
                    if result.tokens == 0:
                        dispatcher.first_token(ticket)
                    result.tokens += len(delta.token_ids)
                    if (arrival.cancel_after_tokens is not None
                            and result.tokens >= arrival.cancel_after_tokens
                            and result.cancel_hit is None):
                        # The client goes away mid-stream: cancelled from outside,
                        # as aiohttp cancels a handler whose connection dropped.
                        asyncio.get_running_loop().call_soon(self._cancel, index)
            release = "finished"
            result.finish("ok")
        except EngineError as exc:
            result.finish("failed", repr(exc))
        except asyncio.CancelledError:
            release = "client_gone"
            result.finish("cancelled", "streaming")
            raise
        finally:
            dispatcher.release(ticket, release)

    async def _sample(self, start: float, every_s: float, out: list[Sample],
                      check: Callable[[Sample], None] | None, done: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        period = self.scale.real(every_s)
        due = loop.time()
        while not done.is_set():
            now = loop.time()
            engines = {}
            for name, engine in self.engines.items():
                stats, state = engine.stats(), self.scheduler.controllers[name].state()
                engines[name] = EngineSample(
                    state.limit, self.scheduler.inflight[name], stats.running, stats.waiting,
                    stats.inflight, state.observed_s, state.last_action)
            sample = Sample(self.scale.sim(now - start), max(0.0, now - due), engines,
                            {n: len(q) for n, q in self.scheduler.queues.items()})
            out.append(sample)
            if check is not None:
                check(sample)
            due = now + period
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), period)


def poisson(rng: random.Random, rate: float, start: float, end: float) -> list[float]:
    """Arrival times of a Poisson process of ``rate`` per (simulated) second."""
    out: list[float] = []
    t = start
    while True:
        t += rng.expovariate(rate)
        if t >= end:
            return out
        out.append(t)


def prompt(n: int, head: int, prefix: tuple[int, ...] = ()) -> tuple[int, ...]:
    """A prompt of ``n`` tokens: ``prefix``, then tokens that differ by ``head``."""
    tail = n - len(prefix)
    return prefix + tuple((head * 7919 + i) % 1000 + 3 for i in range(tail))


def quantile(values: np.ndarray, q: float) -> float:
    assert len(values), "no samples"
    return float(np.quantile(values, q))
