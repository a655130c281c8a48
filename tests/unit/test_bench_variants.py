"""The benchmark drivers' variant specs: what an A/B row or a device phase runs."""

from __future__ import annotations

import pytest

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
