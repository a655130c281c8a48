"""``EngineSupervisor``: notices an engine that died and brings a fresh one up.

It polls the pool every ``poll_s`` (a property read per engine). An engine that
stops serving (``healthy`` turned false: vLLM's engine core died; or retired
here after ``stalls_before_restart`` stalls in a row) is retired, stopped, and
replaced by a fresh instance from the factory, started and warmed (``prepare``)
before it takes traffic again. Attempts back off exponentially with jitter,
capped; the backoff keeps growing while restarted engines keep dying within
``stable_after_s`` and resets once one has served that long.

Stalls are reported by the request path (``note_stall``); an engine with a
stall since its last completed request is *suspect*: exported, never used for
placement, since a single slow step is not proof of a hung engine.

``run`` owns every restart task (a ``TaskGroup``); cancelling it cancels them,
and a half-started replacement is stopped on the way out.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from engines.pool import EnginePool
from engines.protocol import Engine, EngineInfo

logger = logging.getLogger(__name__)

EngineFactory = Callable[[str], Engine]
"""A fresh, unstarted engine for the configured engine of this name."""
Prepare = Callable[[Engine, EngineInfo], Awaitable[object]]
"""Warm a started engine (and re-pin its warmup prefixes) before it serves."""


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    backoff_s: float = 1.0  # first delay; doubles per failure in a row
    backoff_max_s: float = 60.0  # cap
    jitter: float = 0.2  # each delay is scaled by a random factor in [1 - j, 1 + j]
    stable_after_s: float = 60.0  # serving this long resets the backoff
    stalls_before_restart: int = 3  # stalls in a row that retire an engine; 0: never
    poll_s: float = 0.1  # how often engine health is read

    def delay(self, failures: int, unit: float) -> float:
        """The wait before attempt number ``failures`` (0-based); ``unit`` in [0, 1)."""
        base = min(self.backoff_max_s, self.backoff_s * 2.0 ** min(failures, 64))
        return min(self.backoff_max_s, base * (1.0 + self.jitter * (2.0 * unit - 1.0)))


class EngineState(enum.StrEnum):
    SERVING = "serving"
    SUSPECT = "suspect"  # serving, but stalled since its last completed request
    RESTARTING = "restarting"
    DOWN = "down"  # out of service with no restart under way (no factory)


@dataclass(frozen=True, slots=True)
class EngineHealth:
    """One engine's supervision record, for metrics and ``/health/ready``."""

    name: str
    state: EngineState
    restarts: int  # successful restarts
    restart_failures: int  # attempts that failed to start or warm
    stalls: int  # cumulative
    last_backoff_s: float  # the latest delay waited before an attempt; 0 before any


class EngineSupervisor:
    """See the module docstring."""

    def __init__(
        self,
        pool: EnginePool,
        factory: EngineFactory | None,
        prepare: Prepare,
        policy: RestartPolicy = RestartPolicy(),
        *,
        on_change: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.pool = pool
        self.policy = policy
        self._factory = factory
        self._prepare = prepare
        self._on_change = on_change
        self._clock = clock
        self._rng = rng or random.Random()
        names = [m.engine.name for m in pool]
        self._restarting: set[str] = set()
        self._down: set[str] = set()  # out of service for good (no factory)
        self._restarts = dict.fromkeys(names, 0)
        self._failed = dict.fromkeys(names, 0)
        self._stalls = dict.fromkeys(names, 0)
        self._stalls_in_row = dict.fromkeys(names, 0)
        self._failures_in_row = dict.fromkeys(names, 0)
        self._serving_since = dict.fromkeys(names, clock())
        self._backoff = dict.fromkeys(names, 0.0)

    # -- reports from the request path ------------------------------------------

    def note_stall(self, engine: Engine) -> None:
        """A request on ``engine`` got no token within the stall timeout."""
        name = engine.name
        if self.pool.engine(name) is not engine:
            return  # an instance already replaced
        self._stalls[name] += 1
        self._stalls_in_row[name] += 1
        limit = self.policy.stalls_before_restart
        if limit and self._stalls_in_row[name] >= limit and self.pool.serving(name):
            logger.error("engine %s stalled %d times in a row: restarting it", name,
                         self._stalls_in_row[name])
            self._retire(name)

    def note_dead(self, engine: Engine) -> None:
        """A request saw ``engine`` die: take it out of service now, not at the
        next look (unless it was replaced already)."""
        if self.pool.engine(engine.name) is engine and engine.name not in self._restarting:
            self._retire(engine.name)

    def note_completed(self, name: str) -> None:
        self._stalls_in_row[name] = 0

    # -- state -------------------------------------------------------------------

    def health(self) -> list[EngineHealth]:
        out = []
        for m in self.pool:
            name = m.engine.name
            if name in self._restarting:
                state = EngineState.RESTARTING
            elif not self.pool.serving(name):
                state = EngineState.DOWN
            elif self._stalls_in_row[name]:
                state = EngineState.SUSPECT
            else:
                state = EngineState.SERVING
            out.append(EngineHealth(name, state, self._restarts[name], self._failed[name],
                                    self._stalls[name], self._backoff[name]))
        return out

    # -- the loop ----------------------------------------------------------------

    async def run(self) -> None:
        """Watch and restart until cancelled."""
        async with asyncio.TaskGroup() as restarts:
            while True:
                for m in self.pool:
                    name = m.engine.name
                    if (name not in self._restarting and name not in self._down
                            and not self.pool.serving(name)):
                        self._restarting.add(name)
                        restarts.create_task(self._restart(name), name=f"restart-{name}")
                await asyncio.sleep(self.policy.poll_s)

    def _retire(self, name: str) -> None:
        self.pool.retire(name)
        if self._on_change is not None:
            self._on_change()

    async def _restart(self, name: str) -> None:
        try:
            self._retire(name)
            old = self.pool.engine(name)
            logger.error("engine %s is out of service (%s)", name,
                         "dead" if not old.healthy else "stalled")
            if self._clock() - self._serving_since[name] >= self.policy.stable_after_s:
                self._failures_in_row[name] = 0
            await _stop_quietly(old)
            if self._factory is None:
                logger.error("engine %s cannot be restarted: no factory", name)
                self._down.add(name)
                return
            while not await self._attempt(name, self._factory):
                pass
        finally:
            self._restarting.discard(name)

    async def _attempt(self, name: str, factory: EngineFactory) -> bool:
        delay = self.policy.delay(self._failures_in_row[name], self._rng.random())
        self._backoff[name] = delay
        logger.info("engine %s: restart in %.2f s", name, delay)
        await asyncio.sleep(delay)
        self._failures_in_row[name] += 1
        engine = factory(name)
        try:
            info = await engine.start()
            await self._prepare(engine, info)
        except Exception:
            logger.exception("engine %s failed to restart", name)
            self._failed[name] += 1
            await _stop_quietly(engine)
            return False
        except asyncio.CancelledError:
            await asyncio.shield(_stop_quietly(engine))
            raise
        self.pool.replace(name, engine, info)
        self._restarts[name] += 1
        self._stalls_in_row[name] = 0
        self._serving_since[name] = self._clock()
        logger.warning("engine %s restarted (restart %d)", name, self._restarts[name])
        if self._on_change is not None:
            self._on_change()
        return True


async def _stop_quietly(engine: Engine) -> None:
    # A dead engine may fail to stop cleanly; its replacement must come up anyway.
    try:
        await engine.stop()
    except Exception:
        logger.exception("engine %s failed to stop cleanly", engine.name)
