"""Arrival process statistics for a seed: mean rate, dispersion, burstiness."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from loadtest import arrivals


def cv(x: np.ndarray) -> float:
    return float(np.std(x) / np.mean(x))


def test_count_mode_hits_the_nominal_rate_exactly() -> None:
    due = arrivals.offsets_for_count(np.random.default_rng(1), 50.0, 1.0, 20_000)
    assert due[-1] == pytest.approx(20_000 / 50.0)  # vLLM's rescaling
    assert np.all(np.diff(due) >= 0)


@pytest.mark.parametrize("burstiness", [0.25, 1.0, 4.0])
def test_gap_dispersion_follows_the_gamma_shape(burstiness: float) -> None:
    due = arrivals.offsets_for_count(np.random.default_rng(2), 50.0, burstiness, 20_000)
    gaps = np.diff(np.concatenate([[0.0], due]))
    # gamma(shape k): coefficient of variation 1/sqrt(k)
    assert cv(gaps) == pytest.approx(1 / math.sqrt(burstiness), rel=0.05)
    assert np.mean(gaps) == pytest.approx(1 / 50.0, rel=1e-9)


def test_horizon_mode_is_poisson_in_counts() -> None:
    due = arrivals.offsets_for_horizon(np.random.default_rng(3), 50.0, 1.0, 400.0)
    assert due.max() < 400.0
    assert len(due) / 400.0 == pytest.approx(50.0, abs=3 * math.sqrt(50 * 400) / 400)
    per_second = np.histogram(due, bins=np.arange(401))[0]
    # Poisson counts: variance == mean (index of dispersion 1)
    assert np.var(per_second) / np.mean(per_second) == pytest.approx(1.0, abs=0.15)


def test_bursty_counts_are_overdispersed() -> None:
    due = arrivals.offsets_for_horizon(np.random.default_rng(4), 50.0, 0.2, 400.0)
    per_100ms = np.histogram(due, bins=np.arange(0, 400.01, 0.1))[0]
    assert np.var(per_100ms) / np.mean(per_100ms) > 2.0


def test_same_seed_same_arrivals() -> None:
    a = arrivals.offsets_for_count(np.random.default_rng(7), 10.0, 0.5, 100)
    b = arrivals.offsets_for_count(np.random.default_rng(7), 10.0, 0.5, 100)
    c = arrivals.offsets_for_count(np.random.default_rng(8), 10.0, 0.5, 100)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_infinite_rate_and_infinite_burstiness() -> None:
    assert not arrivals.offsets_for_count(np.random.default_rng(0), math.inf, 1.0, 5).any()
    regular = arrivals.offsets_for_count(np.random.default_rng(0), 4.0, math.inf, 4)
    assert list(regular) == pytest.approx([0.25, 0.5, 0.75, 1.0])


async def test_wait_until_is_never_early() -> None:
    lags = []
    for _ in range(20):
        deadline = time.perf_counter() + 0.002
        await arrivals.wait_until(deadline)
        lags.append(time.perf_counter() - deadline)
    assert min(lags) >= 0
    assert np.median(lags) < 0.02  # loose: the machine is shared
