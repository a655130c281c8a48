"""Results as files and one table: summary.json, requests.csv, timeline.csv.

``summary.json`` holds the contract keys of DESIGN.md section 3 (``per_class``,
``overall``, ``config``) plus ``run`` (what was measured, where the SLOs came from, notes)
and ``detail`` (per-class extras: token counts, Retry-After seen, reject reasons, error
kinds). ``requests.csv`` is the timeline of every request, warm-up included and flagged;
``timeline.csv`` the resource samples.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from loadtest.config import RunConfig
from loadtest.metrics import distribution_ms, summarize
from loadtest.records import Outcome, RequestRecord
from loadtest.runner import RunResult

REQUEST_COLUMNS = (
    "index", "phase", "class", "outcome", "status", "due_s", "send_s", "done_s", "ttft_ms",
    "tpot_ms", "e2el_ms", "itl_max_ms", "output_tokens", "prompt_tokens", "attempts",
    "retry_after_s", "reject_reason", "error",
)  # fmt: skip


def config_section(config: RunConfig) -> dict[str, Any]:
    """The ``config`` keys of summary.json."""
    spec = config.dataset
    return {
        "rps": config.rps if math.isfinite(config.rps) else "inf",
        "duration_s": config.duration_s,
        "mix": dict(config.mix),
        "dataset": {
            "kind": spec.kind,
            "path": str(spec.path) if spec.path else None,
            "input_len": str(spec.input_len),
            "output_len": str(spec.output_len),
            "tokenizer": str(spec.tokenizer) if spec.tokenizer else None,
        },
        "url": config.url,
        "seed": config.seed,
    }


def _detail(records: Sequence[RequestRecord]) -> dict[str, Any]:
    ok = [r for r in records if r.outcome is Outcome.OK]
    rejected = [r for r in records if r.outcome in (Outcome.REJECTED_429, Outcome.REJECTED_503)]
    prompts = [r.prompt_tokens for r in ok if r.prompt_tokens is not None]
    retry_after = [r.retry_after_s for r in rejected if r.retry_after_s is not None]
    return {
        "output_tokens": sum(r.output_tokens for r in ok),
        "mean_prompt_tokens": sum(prompts) / len(prompts) if prompts else None,
        "retried_requests": sum(r.attempts > 1 for r in records),
        # --disconnect-fraction hang-ups: neither ok nor errors, so kept out of latencies
        "cancelled": sum(r.outcome is Outcome.CANCELLED for r in records),
        "retry_after_s": {
            "mean": sum(retry_after) / len(retry_after) if retry_after else None,
            "max": max(retry_after, default=None),
        },
        "reject_reasons": dict(Counter(r.reject_reason or "(none)" for r in rejected)),
        "errors": dict(Counter(r.error[:80] for r in records if r.outcome is Outcome.ERROR)),
        "send_lag_ms": distribution_ms([r.send_s - r.due_s for r in records]),
    }


def build_summary(result: RunResult) -> dict[str, Any]:
    """The whole summary.json document."""
    measured = result.measured
    config = result.config
    summary = summarize(measured, result.slos, result.duration_s)
    summary["config"] = config_section(config)
    summary["run"] = {
        "label": config.label,
        "model": result.model,
        "endpoint": config.endpoint,
        "started_at": result.started_at,
        "request_id_prefix": result.request_id_prefix,
        "clock_t0": result.t0_monotonic,  # perf_counter() (CLOCK_MONOTONIC) at time 0
        "num_requests": config.num_requests,
        "burstiness": config.burstiness,
        "max_concurrency": config.max_concurrency,
        "warmup_requests": len(result.records) - len(measured),
        "measured_window_s": result.duration_s,
        "slo_source": result.slos.source,
        "slos": {c: slo.as_dict() for c, slo in result.slos.by_class.items()},
        "notes": list(result.notes),
    }
    classes = sorted({r.sla_class for r in measured})
    summary["detail"] = {
        "per_class": {c: _detail([r for r in measured if r.sla_class == c]) for c in classes},
        "overall": _detail(measured),
    }
    return summary


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value * 1000:.3f}"


def write_requests_csv(path: Path, records: Sequence[RequestRecord]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(REQUEST_COLUMNS)
        for r in sorted(records, key=lambda r: r.index):
            writer.writerow([
                r.index, "warmup" if r.warmup else "measured", r.sla_class, r.outcome.value,
                r.status, f"{r.due_s:.6f}", f"{r.send_s:.6f}", f"{r.done_s:.6f}",
                _ms(r.ttft_s), _ms(r.tpot_s), _ms(r.e2el_s), _ms(max(r.itl_s, default=None)),
                r.output_tokens, "" if r.prompt_tokens is None else r.prompt_tokens,
                r.attempts, "" if r.retry_after_s is None else r.retry_after_s,
                r.reject_reason, r.error,
            ])  # fmt: skip


def write_timeline_csv(path: Path, result: RunResult) -> None:
    keys = sorted({k for s in result.resources for k in s.values})
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["t_s", *keys])
        for sample in result.resources:
            writer.writerow([f"{sample.t_s:.3f}", *(sample.values.get(k, "") for k in keys)])


def write_results(result: RunResult, out: Path) -> dict[str, Any]:
    """Write summary.json, requests.csv and timeline.csv into ``out``; return the summary."""
    out.mkdir(parents=True, exist_ok=True)
    summary = build_summary(result)
    (out / "summary.json").write_bytes(
        orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    )
    write_requests_csv(out / "requests.csv", result.records)
    if result.resources:
        write_timeline_csv(out / "timeline.csv", result)
    return summary


def _cell(stats: dict[str, Any], key: str) -> str:
    value = stats.get(key)
    return "-" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _slo_cells(row: dict[str, Any]) -> tuple[str, str]:
    goodput, attained = row["goodput_rps"], row["slo_attainment"]
    if goodput is None:
        return "-", "-"
    return f"{goodput:.2f}", f"{attained:.1%}"


def table(summary: dict[str, Any], title: str) -> Table:
    """The per-class table printed at the end of a run."""
    grid = Table(title=title, title_justify="left")
    for name in ("class", "sent", "ok", "429", "503", "err", "TTFT p50", "TTFT p99",
                 "TPOT p50", "TPOT p99", "ITL p50", "E2EL p99", "goodput/s", "SLO met"):
        grid.add_column(name, justify="left" if name == "class" else "right")
    rows = [*summary["per_class"].items(), ("all", summary["overall"])]
    for name, row in rows:
        grid.add_row(
            name, str(row["sent"]), str(row["ok"]), str(row["rejected_429"]),
            str(row["rejected_503"]), str(row["errors"]),
            _cell(row["ttft_ms"], "p50"), _cell(row["ttft_ms"], "p99"),
            _cell(row["tpot_ms"], "p50"), _cell(row["tpot_ms"], "p99"),
            _cell(row["itl_ms"], "p50"), _cell(row["e2el_ms"], "p99"), *_slo_cells(row),
            end_section=name == rows[-2][0],
        )  # fmt: skip
    return grid


def print_report(summary: dict[str, Any], console: Console, title: str = "") -> None:
    """The table, then throughput and notes, latencies in ms."""
    run, overall = summary["run"], summary["overall"]
    console.print(table(summary, title or f"{run['model']} @ {summary['config']['url']} (ms)"))
    window = run["measured_window_s"]
    rps, tps = overall["request_throughput"], overall["output_tokens_per_s"]
    if window:
        console.print(f"measured window {window:.1f} s · {rps:.2f} req/s · "
                      f"{tps:,.0f} output tok/s · SLOs from {run['slo_source']}")
    for note in run["notes"]:
        console.print(f"[dim]note: {note}[/dim]")
