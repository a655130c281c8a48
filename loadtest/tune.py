"""The parameter tuner: one gateway per combination of engine args, one fixed workload each.

The grid file (YAML)::

    model: demo                  # "demo" (the built-in model, default) or a local model dir
    base_config: gateway.yaml    # optional; everything but its engines is kept (classes, keys)
    engine:                      # optional: the engine's other keys (gateway.example.yaml)
      name: tuned                # default
      classes: [interactive, standard, batch]  # default: every class of the base config
      env: {VLLM_CPU_KVCACHE_SPACE: "1"}
      warmup: {ladder: [32]}
    args: {max_model_len: 2048, enforce_eager: true}   # AsyncEngineArgs of every combination
    grid:                        # every combination of these values is tried
      max_num_seqs: [16, 64]
      max_num_batched_tokens: [2048, 8192]
      enable_chunked_prefill: [true, false]

For each combination the tuner writes ``OUT/combo_<i>/gateway.yaml``, starts
``python -m gateway --config it --port P``, waits for ``GET /health/ready`` == 200, runs
the workload (the usual run flags) with resource monitoring of the gateway process, and
stops it with SIGTERM. A combination that cannot run (more tensor-parallel ranks than
visible GPUs, a gateway that exits or never gets ready, every request failing) is skipped
with its reason. Throughput is counted in tokens (the server's usage), never in words.
Output: ``OUT/tune.csv``, a table, and the best combination meeting ``--max-ttft-ms``
(overall TTFT p99) and ``--min-throughput`` (output tokens/s) as a ready-to-paste
``engines:`` YAML snippet (also ``OUT/best.yaml``).
"""

from __future__ import annotations

import csv
import itertools
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from loadtest import report, runner
from loadtest.config import RunConfig
from loadtest.errors import LoadtestError, UsageError
from loadtest.launcher import free_port, launched

DEFAULT_CLASSES = ("interactive", "standard", "batch")  # the gateway's, without a classes key
RESULT_COLUMNS = ("status", "reason", "startup_s", "request_throughput", "output_tokens_per_s",
                  "ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms", "e2el_p99_ms",
                  "goodput_rps", "ok", "rejected", "errors")


@dataclass(frozen=True, slots=True)
class Grid:
    """A parsed grid file."""

    model: str  # "demo" or a local model directory
    base: dict[str, Any]  # the base config without engines
    engine: dict[str, Any]  # name, classes, env: everything of the engine entry but args
    args: dict[str, Any]
    axes: dict[str, list[Any]]

    def combinations(self) -> list[dict[str, Any]]:
        keys = list(self.axes)
        return [dict(zip(keys, values, strict=True))
                for values in itertools.product(*(self.axes[k] for k in keys))]


def load_grid(path: Path) -> Grid:
    """Parse and check a grid file; problems are ``UsageError`` with the file's name."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"--grid {path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("grid"), dict) or not data["grid"]:
        raise UsageError(f"--grid {path}: needs a 'grid' mapping of arg -> list of values")
    axes = {k: v if isinstance(v, list) else [v] for k, v in data["grid"].items()}
    if any(not values for values in axes.values()):
        raise UsageError(f"--grid {path}: every grid entry needs at least one value")
    base: dict[str, Any] = {}
    if data.get("base_config"):
        base_path = (path.parent / str(data["base_config"])).resolve()
        try:
            base = yaml.safe_load(base_path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise UsageError(f"base_config {base_path}: {exc}") from None
        base.pop("engines", None)
    engine = dict(data.get("engine") or {})
    engine.setdefault("name", "tuned")
    # the gateway refuses a config with a class no engine serves: serve them all
    classes = [c["name"] for c in base.get("classes", []) if isinstance(c, dict) and "name" in c]
    engine.setdefault("classes", classes or list(DEFAULT_CLASSES))
    model = str(data.get("model") or "demo")
    if model != "demo" and (path.parent / model).is_dir():
        model = str((path.parent / model).resolve())  # the config is written elsewhere
    return Grid(model, base, engine, dict(data.get("args") or {}), axes)


def gateway_config(grid: Grid, model: str, combo: dict[str, Any]) -> dict[str, Any]:
    """The gateway config of one combination: the base plus one engine with these args."""
    engine = {"name": grid.engine["name"], "model": model,
              **{k: v for k, v in grid.engine.items() if k != "name"},
              "args": {**grid.args, **combo}}
    return {**grid.base, "engines": [engine]}


def visible_gpus() -> int:
    """GPUs nvidia-ml-py can see (0 without it or without a GPU)."""
    try:
        import pynvml
    except ImportError:
        return 0
    try:
        pynvml.nvmlInit()
        return int(pynvml.nvmlDeviceGetCount())
    except pynvml.NVMLError:
        return 0


def skip_reason(combo: dict[str, Any], gpus: int) -> str | None:
    tp = int(combo.get("tensor_parallel_size", 1)) * int(combo.get("pipeline_parallel_size", 1))
    if tp > max(gpus, 1):
        return f"needs {tp} GPUs, {gpus} visible"
    return None


def _row(summary: dict[str, Any]) -> dict[str, Any]:
    o = summary["overall"]
    return {
        "request_throughput": o["request_throughput"],
        "output_tokens_per_s": o["output_tokens_per_s"],
        "ttft_p50_ms": o["ttft_ms"]["p50"], "ttft_p99_ms": o["ttft_ms"]["p99"],
        "tpot_p50_ms": o["tpot_ms"]["p50"], "tpot_p99_ms": o["tpot_ms"]["p99"],
        "e2el_p99_ms": o["e2el_ms"]["p99"], "goodput_rps": o["goodput_rps"],
        "ok": o["ok"], "rejected": o["rejected_429"] + o["rejected_503"], "errors": o["errors"],
    }


async def _try_one(
    grid: Grid, model: str, combo: dict[str, Any], config: RunConfig, out: Path,
    gateway_cmd: Sequence[str], ready_timeout_s: float, console: Console,
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(gateway_config(grid, model, combo), sort_keys=False))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [*gateway_cmd, "--config", str(config_path), "--port", str(port)]
    started = time.monotonic()
    try:
        async with launched(command, url + "/health/ready", out / "gateway.log",
                            ready_timeout_s) as process:
            startup = time.monotonic() - started
            run_config = config.with_(url=url, out=out, label=out.name)
            result = await runner.run(run_config, console, watch_pids=(process.pid,))
    except LoadtestError as exc:
        return {"status": "failed", "reason": str(exc)}
    summary = report.write_results(result, out)
    row = {"status": "ok", "reason": "", "startup_s": round(startup, 1), **_row(summary)}
    if row["ok"] == 0:
        errors = summary["detail"]["overall"]["errors"]
        row.update(status="failed", reason=f"no request succeeded: {next(iter(errors), '?')}")
    return row


def best(rows: Sequence[dict[str, Any]], max_ttft_ms: float | None,
         min_throughput: float | None) -> dict[str, Any] | None:
    """The highest output tokens/s among rows meeting the constraints (ties: lower p99)."""
    fits = [r for r in rows if r["status"] == "ok"
            and (max_ttft_ms is None or (r["ttft_p99_ms"] or float("inf")) <= max_ttft_ms)
            and (min_throughput is None or (r["output_tokens_per_s"] or 0) >= min_throughput)]
    return max(fits, key=lambda r: (r["output_tokens_per_s"] or 0, -(r["ttft_p99_ms"] or 0)),
               default=None)


async def tune(
    grid_path: Path, config: RunConfig, gateway_cmd: str, ready_timeout_s: float,
    max_ttft_ms: float | None, min_throughput: float | None, console: Console,
) -> int:
    """Try every combination; write tune.csv and best.yaml; 0 if one met the constraints."""
    grid = load_grid(grid_path)
    model = grid.model
    gpus = visible_gpus()
    command = shlex.split(gateway_cmd)
    rows: list[dict[str, Any]] = []
    for i, combo in enumerate(grid.combinations()):
        shown = ", ".join(f"{k}={v}" for k, v in combo.items())
        console.print(f"[bold]tune {i + 1}/{len(grid.combinations())}: {shown}[/bold]")
        reason = skip_reason(combo, gpus)
        if reason:
            outcome: dict[str, Any] = {"status": "skipped", "reason": reason}
        else:
            outcome = await _try_one(grid, model, combo, config, config.out / f"combo_{i}",
                                     command, ready_timeout_s, console)
        if outcome["status"] != "ok":
            console.print(f"  {outcome['status']}: {outcome['reason']}")
        rows.append({"combo": i, **combo, **outcome})
    _write_csv(config.out / "tune.csv", rows, list(grid.axes))
    console.print(_table(rows, list(grid.axes)))
    winner = best(rows, max_ttft_ms, min_throughput)
    if winner is None:
        console.print("no combination met the constraints")
        return 1
    combo = {k: winner[k] for k in grid.axes}
    snippet = yaml.safe_dump({"engines": gateway_config(grid, model, combo)["engines"]},
                             sort_keys=False)
    (config.out / "best.yaml").write_text(snippet)
    console.print(f"best: combo {winner['combo']} — {winner['output_tokens_per_s']:.0f} output "
                  f"tok/s, TTFT p99 {winner['ttft_p99_ms']:.0f} ms. Paste into the config:")
    console.print(snippet, markup=False, highlight=False)
    return 0


def _write_csv(path: Path, rows: Sequence[dict[str, Any]], axes: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["combo", *axes, *RESULT_COLUMNS], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _table(rows: Sequence[dict[str, Any]], axes: list[str]) -> Table:
    grid = Table(title="tuning grid", title_justify="left")
    shown = ("status", "output_tokens_per_s", "request_throughput", "ttft_p50_ms", "ttft_p99_ms",
             "tpot_p50_ms", "errors")
    for name in ("#", *axes, *shown):
        grid.add_column(name.removesuffix("_ms"), justify="right")
    for r in rows:
        cells = [r.get(k) for k in shown]
        grid.add_row(str(r["combo"]), *(str(r[a]) for a in axes),
                     *(f"{c:,.1f}" if isinstance(c, float) else "-" if c is None else str(c)
                       for c in cells))
    return grid
