"""Placement pieces: the prefix hash, the bounded affinity map, least-loaded choice."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import scheduler.placement
from scheduler.placement import Affinity, choose_engine, prefix_key

ROOT = Path(scheduler.placement.__file__).resolve().parents[1]


def test_prefix_key_hashes_only_the_leading_tokens() -> None:
    assert prefix_key([1, 2, 3, 4], 3) == prefix_key([1, 2, 3, 9, 9], 3)
    assert prefix_key([1, 2, 3], 3) != prefix_key([1, 2, 4], 3)
    assert prefix_key([1, 2], 3) is None  # too short to be worth a cache hit


def test_prefix_key_is_the_same_in_another_process() -> None:
    # Warmup pins prefixes in one process; requests must hash them the same way.
    code = "from scheduler.placement import prefix_key; print(prefix_key(list(range(32)), 32))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={"PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)})
    assert int(other.stdout) == prefix_key(list(range(32)), 32)


def test_affinity_is_a_bounded_lru() -> None:
    a = Affinity(capacity=2)
    a.remember(1, "x")
    a.remember(2, "y")
    assert a.lookup(1) == "x"  # a lookup does not refresh: only grants do
    a.remember(1, "x")  # refreshed by a grant
    a.remember(3, "z")  # evicts 2, the least recently granted
    assert len(a) == 2
    assert (a.lookup(1), a.lookup(2), a.lookup(3)) == ("x", None, "z")
    a.remember(None, "x")
    assert a.lookup(None) is None and len(a) == 2


def test_affinity_follows_the_last_engine_that_ran_the_prefix() -> None:
    a = Affinity(capacity=8)
    a.remember(5, "x")
    a.remember(5, "y")
    assert a.lookup(5) == "y"


def test_choose_engine_prefers_affinity_among_candidates() -> None:
    inflight, limits = {"x": 3, "y": 0}, {"x": 4, "y": 4}
    assert choose_engine(["x", "y"], "x", inflight, limits) == "x"
    assert choose_engine(["y"], "x", inflight, limits) == "y"  # x is full or not eligible
    assert choose_engine(["x", "y"], None, inflight, limits) == "y"


def test_choose_engine_least_loaded_by_fraction_then_count_then_name() -> None:
    assert choose_engine(["x", "y"], None, {"x": 2, "y": 3}, {"x": 4, "y": 8}) == "y"
    assert choose_engine(["x", "y"], None, {"x": 2, "y": 4}, {"x": 4, "y": 8}) == "x"
    assert choose_engine(["y", "x"], None, {"x": 1, "y": 1}, {"x": 4, "y": 4}) == "x"
