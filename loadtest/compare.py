"""Side by side: one seeded workload against several targets, one table, overlaid plots.

The runs go one after another (never at once: they would compete for the same machine),
each into ``OUT/<label>/``. Because the workload is a function of the config and seed,
every target receives byte-identical requests at identical offsets.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from rich.console import Console
from rich.table import Table

from loadtest import report, runner
from loadtest.config import RunConfig
from loadtest.errors import UsageError

_COLUMNS = (("TTFT p50", "ttft_ms", "p50"), ("TTFT p99", "ttft_ms", "p99"),
            ("TPOT p50", "tpot_ms", "p50"), ("E2EL p99", "e2el_ms", "p99"))


def labels_for(urls: Sequence[str], given: Sequence[str]) -> list[str]:
    """``--label`` values, else host:port of each URL (made unique)."""
    if given and len(given) != len(urls):
        raise UsageError("give one --label per --url, or none")
    labels = list(given) or [(urlsplit(u).netloc or u).replace(":", "_") for u in urls]
    if len(set(labels)) != len(labels):
        labels = [f"{i}-{label}" for i, label in enumerate(labels, 1)]
    return labels


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table(summaries: Sequence[tuple[str, dict[str, Any]]]) -> Table:
    grid = Table(title="side by side (ms)", title_justify="left")
    for name in ("class", "target", "sent", "ok", "rejected", "errors",
                 *(c[0] for c in _COLUMNS), "goodput/s", "tok/s"):
        grid.add_column(name, justify="left" if name in ("class", "target") else "right")
    classes = sorted({c for _, s in summaries for c in s["per_class"]})
    for cls in [*classes, "all"]:
        for i, (label, summary) in enumerate(summaries):
            row = summary["overall"] if cls == "all" else summary["per_class"].get(cls)
            if row is None:
                continue
            tok = _fmt(row.get("output_tokens_per_s"), 0) if cls == "all" else ""
            grid.add_row(
                cls if i == 0 else "", label, str(row["sent"]), str(row["ok"]),
                str(row["rejected_429"] + row["rejected_503"]), str(row["errors"]),
                *(_fmt(row[key][stat]) for _, key, stat in _COLUMNS),
                _fmt(row["goodput_rps"], 2), tok,
                end_section=i == len(summaries) - 1,
            )
    return grid


async def compare(
    config: RunConfig, urls: Sequence[str], labels: Sequence[str], console: Console
) -> list[tuple[str, runner.RunResult, dict[str, Any]]]:
    """Run ``config`` against each URL in turn; write each run's files."""
    runs = []
    for url, label in zip(urls, labels, strict=True):
        console.print(f"[bold]compare: {label} ({url})[/bold]")
        run_config = config.with_(url=url, label=label, out=config.out / label)
        result = await runner.run(run_config, console)
        summary = report.write_results(result, run_config.out)
        runs.append((label, result, summary))
    return runs


def write_compare(
    runs: Sequence[tuple[str, runner.RunResult, dict[str, Any]]], out: Path, draw: bool,
    console: Console,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    document = {label: {"url": s["config"]["url"], "per_class": s["per_class"],
                        "overall": s["overall"], "notes": s["run"]["notes"]}
                for label, _, s in runs}
    (out / "compare.json").write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    if draw:
        from loadtest import plots  # matplotlib: only when drawing

        plots.plot_compare([(label, result) for label, result, _ in runs], out)
    console.print(table([(label, s) for label, _, s in runs]))
    for label, _, s in runs:
        for note in s["run"]["notes"]:
            console.print(f"[dim]note ({label}): {note}[/dim]")
