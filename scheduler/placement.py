"""Where a granted ticket runs: prefix affinity first, then the least loaded.

Affinity sends requests that share their leading prompt tokens (a system
prompt, a few-shot header) to the engine that last ran that prefix, so vLLM's
prefix cache hits. The map is bounded (LRU); warmup prompts are pinned to the
engine they warmed, through the same map.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence


def prefix_key(token_ids: Sequence[int], length: int) -> int | None:
    """Hash of the first ``length`` tokens; None for prompts shorter than that
    (too short to be worth a cache hit)."""
    if len(token_ids) < length:
        return None
    # hash() of a tuple of ints is deterministic across processes.
    return hash(tuple(token_ids[:length]))


class Affinity:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._engines: OrderedDict[int, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._engines)

    def lookup(self, key: int | None) -> str | None:
        if key is None:
            return None
        return self._engines.get(key)

    def remember(self, key: int | None, engine: str) -> None:
        if key is None:
            return
        self._engines[key] = engine
        self._engines.move_to_end(key)
        while len(self._engines) > self.capacity:
            self._engines.popitem(last=False)


def choose_engine(candidates: Sequence[str], preferred: str | None,
                  inflight: dict[str, int], limits: dict[str, int]) -> str:
    """The preferred engine if it is a candidate, else the least loaded one
    (by the fraction of its limit in use, then by count, then by name)."""
    if preferred is not None and preferred in candidates:
        return preferred
    return min(candidates, key=lambda e: (inflight[e] / max(1, limits[e]), inflight[e], e))
