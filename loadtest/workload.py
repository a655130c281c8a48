"""The whole run planned up front: every request's due time, class and content.

Planning before sending keeps the send loop cheap and makes a run a pure function of its
config and seed. Arrivals, classes and content draw from independent child streams of the
seed, so changing the dataset does not move the arrival times (and vice versa).

The run starts with a warm-up phase taken from the same arrival process (the server is
already under the offered load when measurement begins): ``--warmup-requests N`` makes the
first N arrivals warm-up, otherwise arrivals in the first ``--warmup-s`` seconds are.
Warm-up requests are sent, recorded with ``phase=warmup`` in requests.csv, and left out of
every statistic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from loadtest import arrivals
from loadtest.config import RunConfig
from loadtest.datasets import Sample, build_samples


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    """One request of the plan."""

    index: int
    due_s: float  # seconds after the run's start
    sla_class: str
    sample: Sample
    warmup: bool
    disconnect_after: int | None = None  # hang up after this many token events


@dataclass(frozen=True, slots=True)
class Workload:
    """The plan: requests in due order and where the measured window starts."""

    requests: tuple[PlannedRequest, ...]
    measure_start_s: float

    @property
    def warmup_count(self) -> int:
        return sum(r.warmup for r in self.requests)

    @property
    def measured_count(self) -> int:
        return len(self.requests) - self.warmup_count


def _warmup_offsets(config: RunConfig, rng: np.random.Generator) -> np.ndarray:
    rate, shape = config.rps, config.burstiness
    if config.warmup_requests is not None:
        return arrivals.offsets_for_count(rng, rate, shape, config.warmup_requests)
    if config.warmup_s <= 0 or math.isinf(rate):
        return np.zeros(0)
    return arrivals.offsets_for_horizon(rng, rate, shape, config.warmup_s)


def _measured_offsets(config: RunConfig, rng: np.random.Generator) -> np.ndarray:
    if config.num_requests is not None:
        return arrivals.offsets_for_count(rng, config.rps, config.burstiness, config.num_requests)
    assert config.duration_s is not None
    return arrivals.offsets_for_horizon(rng, config.rps, config.burstiness, config.duration_s)


def plan(config: RunConfig) -> Workload:
    """Plan every request of ``config``'s run (warm-up first, then the measured ones)."""
    # Children by index: adding a stream never moves the earlier ones.
    seeds = np.random.SeedSequence(config.seed).spawn(5)
    warm_rng, measured_rng, class_rng, data_rng, hangup_rng = (
        np.random.default_rng(s) for s in seeds
    )
    warm = _warmup_offsets(config, warm_rng)
    if config.warmup_requests is not None:
        start = float(warm[-1]) if len(warm) else 0.0
    else:
        start = config.warmup_s if len(warm) else 0.0
    due = np.concatenate([warm, start + _measured_offsets(config, measured_rng)])

    names = [name for name, _ in config.mix]
    shares = np.array([share for _, share in config.mix])
    drawn = class_rng.choice(len(names), size=len(due), p=shares)
    samples = build_samples(config.dataset, len(due), data_rng)
    hangups = _hangups(config.disconnect_fraction, samples, hangup_rng)
    requests = tuple(
        PlannedRequest(
            index=i,
            due_s=float(due[i]),
            sla_class=samples[i].sla_class or names[drawn[i]],
            sample=samples[i],
            warmup=i < len(warm),
            disconnect_after=hangups[i],
        )
        for i in range(len(due))
    )
    return Workload(requests, start)


def _hangups(fraction: float, samples: list[Sample], rng: np.random.Generator) -> list[int | None]:
    """Per request: after how many token events its client hangs up (None: never).

    A hang-up lands strictly inside the stream (after the first token, before the last),
    so the gateway sees a client leave mid-stream, not before or after it.
    """
    if fraction <= 0:
        return [None] * len(samples)
    chosen = rng.random(len(samples)) < fraction
    cut = rng.random(len(samples))
    return [
        1 + int(c * (s.output_len - 1)) if pick and s.output_len > 1 else None
        for pick, c, s in zip(chosen, cut, samples, strict=True)
    ]
