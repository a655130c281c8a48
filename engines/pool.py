"""``EnginePool``: the named engines of one gateway process.

Engines start concurrently (each load takes tens of seconds) and stop in
reverse order. Each member serves a set of SLA classes; ``eligible(cls)``
lists the serving engines a class may run on, for the scheduler to choose from.

An engine *serves* while it is healthy and not retired. The supervisor
(``engines.supervisor``) retires an engine it is about to restart (dead, or
stalled too often) and ``replace``s it with a fresh instance under the same
name, so everything that looks engines up by name follows the restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from engines.protocol import Engine, EngineInfo, EngineStats

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PoolMember:
    engine: Engine
    classes: frozenset[str]


class EnginePool:
    """Owns the engines' lifecycles; read-only lookups for everything else."""

    def __init__(self, members: Sequence[PoolMember]) -> None:
        names = [m.engine.name for m in members]
        if len(set(names)) != len(names):
            raise ValueError(f"engine names must be unique: {names}")
        self._members = tuple(members)
        self._by_name = {m.engine.name: m for m in members}
        self._retired: set[str] = set()
        self.infos: dict[str, EngineInfo] = {}

    def __iter__(self) -> Iterator[PoolMember]:
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def engine(self, name: str) -> Engine:
        return self._by_name[name].engine

    async def start(self) -> None:
        """Start every engine at once; if one fails, stop the others and raise."""
        results = await asyncio.gather(
            *(m.engine.start() for m in self._members), return_exceptions=True
        )
        failures = [(m, r) for m, r in zip(self._members, results, strict=True)
                    if isinstance(r, BaseException)]
        if failures:
            await self.stop()
            member, error = failures[0]
            raise RuntimeError(f"engine {member.engine.name} failed to start: {error}") from error
        for m, info in zip(self._members, results, strict=True):
            assert isinstance(info, EngineInfo)
            self.infos[m.engine.name] = info

    async def stop(self) -> None:
        for m in reversed(self._members):
            try:
                await m.engine.stop()
            except Exception:
                logger.exception("engine %s failed to stop cleanly", m.engine.name)

    def serving(self, name: str) -> bool:
        """Healthy and not retired: the scheduler may place work on it."""
        return name not in self._retired and self._by_name[name].engine.healthy

    def serving_names(self) -> list[str]:
        return [m.engine.name for m in self._members if self.serving(m.engine.name)]

    def eligible(self, sla_class: str) -> list[Engine]:
        """Serving engines that may serve this class, in config order."""
        return [m.engine for m in self._members
                if sla_class in m.classes and self.serving(m.engine.name)]

    def retire(self, name: str) -> None:
        """Take the engine out of service until it is replaced."""
        self._retired.add(name)

    def replace(self, name: str, engine: Engine, info: EngineInfo) -> Engine:
        """Put a started ``engine`` in the place of ``name``; returns the old one."""
        if engine.name != name:
            raise ValueError(f"engine {engine.name!r} cannot replace {name!r}")
        old = self._by_name[name]
        member = PoolMember(engine=engine, classes=old.classes)
        self._members = tuple(member if m is old else m for m in self._members)
        self._by_name[name] = member
        self.infos[name] = info
        self._retired.discard(name)
        return old.engine

    def stats(self) -> list[EngineStats]:
        """Engine snapshots; a retired engine reports unhealthy."""
        out = []
        for m in self._members:
            s = m.engine.stats()
            out.append(s if self.serving(s.name) or not s.healthy else replace(s, healthy=False))
        return out
