"""The tuner, with the fake server standing in for the gateway subprocess."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import yaml

from loadtest.cli import main
from loadtest.errors import UsageError
from loadtest.tune import best, gateway_config, load_grid, skip_reason

GRID = """
model: fake-model
base_config: base.yaml
engine: {name: tuned, classes: [interactive, batch]}
args: {max_model_len: 2048, enforce_eager: true}
grid:
  max_num_seqs: [8, 1024]          # the fake refuses to start with > 512
  tensor_parallel_size: [1, 2]     # no GPUs here: 2 is skipped
"""


def write_grid(tmp_path: Path) -> Path:
    (tmp_path / "base.yaml").write_text(
        "classes: [{name: interactive, ttft_target_ms: 500}]\nengines: [{name: old}]\n")
    path = tmp_path / "grid.yaml"
    path.write_text(GRID)
    return path


def test_generated_config_keeps_the_base_and_replaces_engines(tmp_path: Path) -> None:
    grid = load_grid(write_grid(tmp_path))
    assert len(grid.combinations()) == 4
    config = gateway_config(grid, "m", {"max_num_seqs": 8})
    assert config["classes"] == [{"name": "interactive", "ttft_target_ms": 500}]
    assert config["engines"] == [{"name": "tuned", "model": "m",
                                  "classes": ["interactive", "batch"],
                                  "args": {"max_model_len": 2048, "enforce_eager": True,
                                           "max_num_seqs": 8}}]
    # without a classes list, the engine serves every class of the base config
    (tmp_path / "g2.yaml").write_text("base_config: base.yaml\ngrid: {max_num_seqs: [4]}\n")
    plain = load_grid(tmp_path / "g2.yaml")
    assert plain.model == "demo" and plain.engine["classes"] == ["interactive"]


def test_bad_grid_files(tmp_path: Path) -> None:
    for text in ("grid: {}", "grid: {a: []}", "nope", "grid: [1"):
        (tmp_path / "g.yaml").write_text(text)
        with pytest.raises(UsageError):
            load_grid(tmp_path / "g.yaml")


def test_skip_and_best() -> None:
    assert skip_reason({"tensor_parallel_size": 2}, gpus=0) == "needs 2 GPUs, 0 visible"
    assert skip_reason({"tensor_parallel_size": 2}, gpus=2) is None
    rows = [{"status": "ok", "output_tokens_per_s": 100.0, "ttft_p99_ms": 900.0},
            {"status": "ok", "output_tokens_per_s": 80.0, "ttft_p99_ms": 100.0},
            {"status": "failed", "output_tokens_per_s": None, "ttft_p99_ms": None}]
    assert best(rows, None, None) == rows[0]
    assert best(rows, max_ttft_ms=500, min_throughput=None) == rows[1]
    assert best(rows, max_ttft_ms=500, min_throughput=90) is None


def test_tune_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["tune", "--grid", str(write_grid(tmp_path)),
                 "--gateway-cmd", f"{sys.executable} -m loadtest.bench.fake_server",
                 "--rps", "100", "--num-requests", "10", "--warmup-requests", "2",
                 "--no-progress", "--no-plots", "--max-ttft-ms", "5000", "--out", str(out)])
    assert code == 0
    rows = list(csv.DictReader((out / "tune.csv").open()))
    status = {(r["max_num_seqs"], r["tensor_parallel_size"]): r["status"] for r in rows}
    assert status == {("8", "1"): "ok", ("8", "2"): "skipped", ("1024", "1"): "failed",
                      ("1024", "2"): "skipped"}
    failed = next(r for r in rows if r["status"] == "failed")
    assert "does not fit in memory" in failed["reason"]
    ok = next(r for r in rows if r["status"] == "ok")
    assert float(ok["output_tokens_per_s"]) > 0 and ok["errors"] == "0"
    snippet = yaml.safe_load((out / "best.yaml").read_text())
    assert snippet["engines"][0]["args"]["max_num_seqs"] == 8
    assert "max_num_seqs: 8" in capsys.readouterr().out
    assert (out / "combo_0" / "summary.json").exists()
    assert "server_cpu_percent" in (out / "combo_0" / "timeline.csv").read_text()
