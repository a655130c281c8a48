"""PNG plots of runs (matplotlib, Agg backend: no display needed).

One run: ``ttft_over_time.png`` (TTFT of every request by send time, per class),
``latency_cdf.png`` (TTFT/TPOT/ITL/E2EL CDFs per class), ``throughput.png`` (output
tokens/s, completions/s and requests in flight per second) and, with monitor samples,
``resources.png``. Several runs (``compare``) overlay the same CDFs and throughput; a
sweep plots goodput and p99 TTFT against offered load.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from loadtest.metrics import time_buckets
from loadtest.records import Outcome, RequestRecord
from loadtest.runner import RunResult

DPI = 110
_RESOURCE_PREFIXES = ("system_cpu", "loadtest_cpu", "server_cpu", "gpu", "gateway_", "vllm:")


def _ok(records: Sequence[RequestRecord]) -> list[RequestRecord]:
    return [r for r in records if r.outcome is Outcome.OK]


def _by_class(records: Sequence[RequestRecord]) -> dict[str, list[RequestRecord]]:
    groups: dict[str, list[RequestRecord]] = {}
    for r in records:
        groups.setdefault(r.sla_class, []).append(r)
    return dict(sorted(groups.items()))


def _latencies_ms(records: Sequence[RequestRecord]) -> dict[str, list[float]]:
    ok = _ok(records)
    return {
        "TTFT": [r.ttft_s * 1000 for r in ok if r.ttft_s is not None],
        "TPOT": [t * 1000 for r in ok if (t := r.tpot_s) is not None],
        "ITL": [g * 1000 for r in ok for g in r.itl_s],
        "E2EL": [r.e2el_s * 1000 for r in ok if r.e2el_s is not None],
    }


def _cdf(ax: Any, values: Sequence[float], **style: Any) -> None:
    if values:
        x = np.sort(values)
        ax.plot(x, np.arange(1, len(x) + 1) / len(x), **style)


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def latency_cdfs(series: Sequence[tuple[str, Sequence[RequestRecord]]], path: Path) -> None:
    """CDF panels; ``series`` is (label, records) -- one run's classes or several runs'."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    styles = ["-", "--", ":", "-."]
    for i, (label, records) in enumerate(series):
        for cls_index, (cls, group) in enumerate(_by_class(records).items()):
            style = {"linestyle": styles[i % len(styles)], "color": f"C{cls_index}",
                     "label": f"{label} {cls}".strip()}
            for ax, values in zip(axes.flat, _latencies_ms(group).values(), strict=True):
                _cdf(ax, values, **style)
    for ax, name in zip(axes.flat, ("TTFT", "TPOT", "ITL", "E2EL"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel(f"{name} (ms)")
        ax.set_ylabel("fraction of requests" if name != "ITL" else "fraction of gaps")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    _save(fig, path)


def _mark_warmup(axes: Any, measure_start_s: float | None) -> None:
    if measure_start_s:
        for ax in np.atleast_1d(axes):
            ax.axvline(measure_start_s, color="grey", linestyle="--", linewidth=1)
            ax.text(measure_start_s, 1.0, " measured →", transform=ax.get_xaxis_transform(),
                    va="top", fontsize=7, color="grey")


def ttft_over_time(series: Sequence[tuple[str, Sequence[RequestRecord]]], path: Path,
                   measure_start_s: float | None = None) -> None:
    fig, ax = plt.subplots(figsize=(11, 4.5))
    _mark_warmup(ax, measure_start_s)
    markers = ["o", "x", "^", "s"]
    for i, (label, records) in enumerate(series):
        for cls_index, (cls, group) in enumerate(_by_class(_ok(records)).items()):
            ax.scatter([r.send_s for r in group], [(r.ttft_s or 0) * 1000 for r in group],
                       s=6, marker=markers[i % len(markers)], color=f"C{cls_index}",
                       label=f"{label} {cls}".strip(), alpha=0.6)
        rejected = [r for r in records if r.outcome is not Outcome.OK]
        if rejected:
            ax.scatter([r.send_s for r in rejected], np.full(len(rejected), 1.0), s=8,
                       marker="|", color="red", label=f"{label} rejected/failed".strip())
    ax.set_yscale("log")
    ax.set_xlabel("send time (s)")
    ax.set_ylabel("TTFT (ms)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, markerscale=2)
    _save(fig, path)


def throughput(series: Sequence[tuple[str, Sequence[RequestRecord]]], path: Path,
               measure_start_s: float | None = None) -> None:
    fig, axes = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    _mark_warmup(axes, measure_start_s)
    for i, (label, records) in enumerate(series):
        if not records:
            continue
        end = max(r.done_s for r in records)
        buckets = time_buckets(records, end)
        for ax, key in zip(axes, ("output_tokens_per_s", "completed_per_s", "in_flight"),
                           strict=True):
            ax.step(buckets["t_s"], buckets[key], where="post", color=f"C{i}",
                    label=label or None)
    for ax, name in zip(axes, ("output tokens/s", "completed/s", "mean in flight"), strict=True):
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("time (s)")
    if any(label for label, _ in series):
        axes[0].legend(fontsize=8)
    _save(fig, path)


def resources(result: RunResult, path: Path) -> None:
    keys = sorted({k for s in result.resources for k in s.values
                   if k.startswith(_RESOURCE_PREFIXES)})
    if not keys:
        return
    fig, axes = plt.subplots(len(keys), 1, figsize=(11, 1.6 * len(keys) + 1), sharex=True,
                             squeeze=False)
    t = [s.t_s for s in result.resources]
    for ax, key in zip(axes[:, 0], keys, strict=True):
        ax.plot(t, [s.values.get(key, np.nan) for s in result.resources])
        ax.set_ylabel(key, rotation=0, ha="right", fontsize=7)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("time (s)")
    _save(fig, path)


def plot_run(result: RunResult, out: Path) -> None:
    """All plots of one run into ``out``."""
    series = [("", result.measured)]
    ttft_over_time([("", result.records)], out / "ttft_over_time.png", result.measure_start_s)
    latency_cdfs(series, out / "latency_cdf.png")
    throughput([("", result.records)], out / "throughput.png", result.measure_start_s)
    resources(result, out / "resources.png")


def plot_compare(results: Sequence[tuple[str, RunResult]], out: Path) -> None:
    """Overlaid plots of several runs of the same workload."""
    latency_cdfs([(label, r.measured) for label, r in results], out / "compare_latency_cdf.png")
    ttft_over_time([(label, r.records) for label, r in results], out / "compare_ttft.png")
    throughput([(label, r.records) for label, r in results], out / "compare_throughput.png")


def plot_sweep(points: Sequence[dict[str, Any]], out: Path) -> None:
    """Goodput and p99 TTFT against offered rate, one line per class."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    rates = [p["rps"] for p in points]
    classes = sorted({c for p in points for c in p["per_class"]})
    has_slos = any(p["overall"].get("goodput_rps") is not None for p in points)
    key = "goodput_rps" if has_slos else "request_throughput"
    for i, cls in enumerate([*classes, "all"]):
        rows = [p["overall"] if cls == "all" else p["per_class"].get(cls, {}) for p in points]
        style = {"marker": "o", "color": "black" if cls == "all" else f"C{i}", "label": cls}
        if cls == "all" or has_slos:
            top.plot(rates, [row.get(key) or np.nan for row in rows], **style)
        p99 = [(row.get("ttft_ms") or {}).get("p99") for row in rows]
        bottom.plot(rates, [np.nan if v is None else v for v in p99], **style)
    top.plot(rates, rates, color="grey", linestyle=":", label="offered")
    top.set_ylabel("goodput (req/s)" if has_slos else "throughput (req/s, no SLOs)")
    bottom.set_ylabel("TTFT p99 (ms)")
    bottom.set_yscale("log")
    bottom.set_xlabel("offered load (req/s)")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, out / "sweep.png")
