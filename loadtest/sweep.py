"""Capacity curve: the same workload at several offered rates, and the knee.

Each rate is a full run in ``OUT/rps_<rate>/``; ``OUT/sweep.json`` lists the points and
the knee, ``OUT/sweep.png`` plots goodput and p99 TTFT against offered load. The knee is
the highest rate, walking up from the lowest, before the first one that fails: with SLOs,
a rate passes when every class with SLOs attains at least ``knee_attainment`` of its
requests within them (rejections count as misses); without SLOs, when nothing was
rejected or failed and requests completed at least 90% as fast as they were sent (a
server that cannot keep up stretches the run while its queue drains).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from loadtest import report, runner
from loadtest.config import RunConfig

THROUGHPUT_PASS = 0.9


def passes(point: dict[str, Any], knee_attainment: float) -> bool:
    """Whether one sweep point meets its SLOs (or, without SLOs, keeps up)."""
    judged = [c for c in point["per_class"].values() if c["slo_attainment"] is not None]
    if judged:
        return all(bool(c["slo_attainment"] >= knee_attainment) for c in judged)
    overall = point["overall"]
    failed = overall["rejected_429"] + overall["rejected_503"] + overall["errors"]
    achieved = float(overall["request_throughput"] or 0.0)
    return bool(failed == 0 and achieved >= THROUGHPUT_PASS * point["sent_rps"])


def knee(points: Sequence[dict[str, Any]], knee_attainment: float) -> float | None:
    """The highest passing rate below the first failing one (None if the lowest fails)."""
    best = None
    for point in sorted(points, key=lambda p: p["rps"]):
        if not passes(point, knee_attainment):
            break
        best = point["rps"]
    return best


def _table(points: Sequence[dict[str, Any]], knee_rps: float | None) -> Table:
    grid = Table(title="capacity sweep (ms)", title_justify="left")
    for name in ("offered/s", "achieved/s", "goodput/s", "rejected", "errors", "TTFT p50",
                 "TTFT p99", "TPOT p50", "tok/s", ""):
        grid.add_column(name, justify="right")
    for p in points:
        o = p["overall"]
        cells = [o["request_throughput"], o["goodput_rps"], o["ttft_ms"]["p50"],
                 o["ttft_ms"]["p99"], o["tpot_ms"]["p50"], o["output_tokens_per_s"]]
        text = ["-" if v is None else f"{v:,.1f}" for v in cells]
        grid.add_row(f"{p['rps']:g}", text[0], text[1], str(o["rejected_429"] + o["rejected_503"]),
                     str(o["errors"]), *text[2:], "← knee" if p["rps"] == knee_rps else "")
    return grid


async def sweep(
    config: RunConfig, rates: Sequence[float], knee_attainment: float, console: Console
) -> tuple[list[dict[str, Any]], float | None, list[runner.RunResult]]:
    """Run every rate in turn; return the points, the knee and the runs."""
    points, results = [], []
    for rate in rates:
        console.print(f"[bold]sweep: {rate:g} req/s[/bold]")
        run_config = config.with_(rps=rate, out=config.out / f"rps_{rate:g}")
        result = await runner.run(run_config, console)
        results.append(result)
        summary = report.write_results(result, run_config.out)
        measured = result.measured
        span = max((r.due_s for r in measured), default=0.0) - result.measure_start_s
        points.append({"rps": rate, "sent_rps": len(measured) / span if span > 0 else rate,
                       "per_class": summary["per_class"], "overall": summary["overall"]})
    return points, knee(points, knee_attainment), results


def write_sweep(
    points: list[dict[str, Any]], knee_rps: float | None, out: Path, draw: bool, console: Console
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    document = {"points": points, "knee_rps": knee_rps}
    (out / "sweep.json").write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    if draw:
        from loadtest import plots  # matplotlib: only when drawing

        plots.plot_sweep(points, out)
    console.print(_table(points, knee_rps))
    verdict = f"{knee_rps:g} req/s" if knee_rps is not None else "below the lowest rate tried"
    console.print(f"knee (highest rate meeting the SLOs): {verdict}")
