"""Statistics of a run: pure functions of its measured records (no I/O, no clock).

Definitions are vLLM's ``benchmarks/serve.py`` (``calculate_metrics``):

* TTFT, E2EL per successful request; TPOT = (E2EL - TTFT) / (output_tokens - 1) over
  successful requests with more than one output token; ITL = every gap between token
  events, pooled over requests.
* mean is ``np.mean``; pNN is ``np.percentile`` (linear interpolation); values in ms.
  Empty samples give ``None`` (vLLM prints 0, which reads as "instant").
* request_throughput = successful requests / duration; output_tokens_per_s = their output
  tokens / duration; duration = the measured window (start of the measured arrivals to
  the last measured request's end), which for a run without warm-up is vLLM's
  ``benchmark_duration``.
* goodput_rps = successful requests meeting every SLO bound of their class / duration,
  where TPOT counts as 0 for 1-token outputs (vLLM's rule); slo_attainment = those good
  requests / requests sent, so rejections and errors count as misses.

Overall goodput and attainment cover the classes that have SLOs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from loadtest.config import SLO
from loadtest.records import Outcome, RequestRecord
from loadtest.slos import SLOSet

PERCENTILES = (50, 90, 99)


def distribution_ms(values_s: Sequence[float]) -> dict[str, float | None]:
    """``{mean, p50, p90, p99}`` in milliseconds of a sample given in seconds."""
    if len(values_s) == 0:
        return {"mean": None, **{f"p{p}": None for p in PERCENTILES}}
    ms = np.asarray(values_s, dtype=float) * 1000.0
    stats: dict[str, float | None] = {"mean": float(np.mean(ms))}
    for p, value in zip(PERCENTILES, np.percentile(ms, PERCENTILES), strict=True):
        stats[f"p{p}"] = float(value)
    return stats


def meets(record: RequestRecord, slo: SLO) -> bool:
    """True when a successful request meets every bound of ``slo``."""
    if record.outcome is not Outcome.OK:
        return False
    assert record.ttft_s is not None and record.e2el_s is not None
    tpot = record.tpot_s or 0.0  # vLLM: TPOT of a 1-token output counts as 0
    checks = (
        (slo.ttft_ms, record.ttft_s),
        (slo.tpot_ms, tpot),
        (slo.e2el_ms, record.e2el_s),
    )
    return all(bound is None or value * 1000.0 <= bound for bound, value in checks)


def _rate(count: float, duration_s: float | None) -> float | None:
    return count / duration_s if duration_s else None


def group_stats(
    records: Sequence[RequestRecord], slos: SLOSet, duration_s: float | None
) -> dict[str, Any]:
    """The per-class keys of summary.json for one group of records."""
    ok = [r for r in records if r.outcome is Outcome.OK]
    outcomes = [r.outcome for r in records]
    judged = [r for r in records if slos.of(r.sla_class) is not None]
    good = sum(meets(r, slo) for r in judged if (slo := slos.of(r.sla_class)) is not None)
    return {
        "sent": len(records),
        "ok": len(ok),
        "rejected_429": outcomes.count(Outcome.REJECTED_429),
        "rejected_503": outcomes.count(Outcome.REJECTED_503),
        "errors": outcomes.count(Outcome.ERROR),
        "ttft_ms": distribution_ms([r.ttft_s for r in ok if r.ttft_s is not None]),
        "tpot_ms": distribution_ms([t for r in ok if (t := r.tpot_s) is not None]),
        "itl_ms": distribution_ms([gap for r in ok for gap in r.itl_s]),
        "e2el_ms": distribution_ms([r.e2el_s for r in ok if r.e2el_s is not None]),
        "goodput_rps": _rate(good, duration_s) if judged else None,
        "slo_attainment": good / len(judged) if judged else None,
    }


def window(records: Iterable[RequestRecord], start_s: float) -> float | None:
    """Length of the measured window: ``start_s`` to the last measured request's end."""
    ends = [r.done_s for r in records]
    return max(ends) - start_s if ends else None


def summarize(
    records: Sequence[RequestRecord], slos: SLOSet, duration_s: float | None
) -> dict[str, Any]:
    """``per_class`` and ``overall`` of summary.json from the measured records."""
    classes = sorted({r.sla_class for r in records})
    per_class = {c: group_stats([r for r in records if r.sla_class == c], slos, duration_s)
                 for c in classes}
    overall = group_stats(records, slos, duration_s)
    ok = [r for r in records if r.outcome is Outcome.OK]
    overall["output_tokens_per_s"] = _rate(sum(r.output_tokens for r in ok), duration_s)
    overall["request_throughput"] = _rate(len(ok), duration_s)
    return {"per_class": per_class, "overall": overall}


def bucket_width(span_s: float) -> float:
    """About 60 buckets over ``span_s``, at a round width between 0.1 s and 60 s."""
    for width in (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0):
        if span_s / width <= 60:
            return width
    return 60.0


def time_buckets(
    records: Sequence[RequestRecord], end_s: float, width_s: float | None = None
) -> dict[str, np.ndarray]:
    """Per-interval series: output tokens/s, completions/s, mean requests in flight."""
    width = width_s or bucket_width(end_s)
    n = max(1, int(np.ceil(end_s / width)))
    edges = np.arange(n + 1) * width
    tokens = np.zeros(n)
    for r in records:
        times = r.token_times_s if r.outcome is Outcome.OK else []
        if times:
            # usage-counted tokens spread over the token events they arrived in
            tokens += np.histogram(times, bins=edges)[0] * (r.output_tokens / len(times))
    done = np.histogram([r.done_s for r in records], bins=edges)[0]
    # in flight: averaged over 10 points per interval
    sends = np.sort([r.send_s for r in records])
    ends = np.sort([r.done_s for r in records])
    points = (np.arange(n * 10) + 0.5) * (width / 10)
    level = np.searchsorted(sends, points) - np.searchsorted(ends, points)
    return {
        "t_s": edges[:-1],
        "output_tokens_per_s": tokens / width,
        "completed_per_s": done / width,
        "in_flight": level.reshape(n, 10).mean(axis=1),
    }
