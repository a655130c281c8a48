"""``EnginePool``: the named engines of one gateway process.

Engines start concurrently (each load takes tens of seconds) and stop in
reverse order. Each member serves a set of SLA classes; ``eligible(cls)``
lists the healthy engines a class may run on, for the scheduler to choose from.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

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

    def eligible(self, sla_class: str) -> list[Engine]:
        """Healthy engines that may serve this class, in config order."""
        return [m.engine for m in self._members
                if sla_class in m.classes and m.engine.healthy]

    def stats(self) -> list[EngineStats]:
        return [m.engine.stats() for m in self._members]
