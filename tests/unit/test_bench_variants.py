"""The benchmark drivers' variant specs: what an A/B row or a device phase runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import benchmarks.gpu_headline as gpu
from benchmarks.gpu_headline import variant
from benchmarks.sla_ab import apply, parse_variant


def test_sla_ab_variant_sets_dotted_keys_in_lists_and_maps() -> None:
    name, settings = parse_variant(
        "v:scheduler.prefill_budget_tokens=0,engines.0.args.max_num_batched_tokens=384,"
        "scheduler.controller.initial_limit=32")
    config = {"scheduler": {"controller": {"initial_limit": 64}},
              "engines": [{"args": {"max_num_batched_tokens": 512}}]}
    apply(config, settings)
    assert name == "v"
    assert config == {"scheduler": {"controller": {"initial_limit": 32},
                                    "prefill_budget_tokens": 0},
                      "engines": [{"args": {"max_num_batched_tokens": 384}}]}


def test_sla_ab_base_variant_changes_nothing_and_bad_items_are_refused() -> None:
    name, settings = parse_variant("base:")
    assert (name, settings) == ("base", {})
    with pytest.raises(SystemExit, match="not KEY=VALUE"):
        parse_variant("v:scheduler.prefill_budget_tokens")


def test_gpu_variant_splits_controller_and_scheduler_settings(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, dict[str, object], dict[str, object]]] = []
    monkeypatch.setattr("benchmarks.gpu_headline.phase_gateway",
                        lambda run, name, template, sweep, controller, scheduler:
                        calls.append((name, controller, scheduler)))
    variant("gw1@min_limit=144+prefill_budget_tokens=1536")(None)  # type: ignore[arg-type]
    assert calls == [("gw1_min_limit144_prefill_budget_tokens1536", {"min_limit": 144},
                      {"prefill_budget_tokens": 1536})]
    with pytest.raises(KeyError):
        variant("gw2@min_limit=1")


def test_gpu_gateway_config_takes_engine_args_from_args_keys(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    started: list[str] = []

    class FakeServer:
        ready_s = 0.0

    def fake_start(name: str, cmd: list[str], *rest: object, **kw: object) -> FakeServer:
        started.append(cmd[cmd.index("--config") + 1])
        return FakeServer()

    monkeypatch.setattr(gpu, "start", fake_start)
    monkeypatch.setattr(gpu, "gpu_name", lambda: "none")
    run = gpu.Run(tmp_path, "/abs/dsk7b", 30)
    gpu.gateway(run, "v", "gateway-1engine.yaml", {"min_limit": 100},
              {"args.max_num_batched_tokens": 2048, "prefill_budget_tokens": 512})
    config = yaml.safe_load(Path(started[0]).read_text())
    assert config["engines"][0]["args"]["max_num_batched_tokens"] == 2048
    assert config["engines"][0]["model"] == "/abs/dsk7b"
    assert config["scheduler"]["prefill_budget_tokens"] == 512
    assert config["scheduler"]["controller"]["min_limit"] == 100
    assert "args.max_num_batched_tokens" not in config["scheduler"]
