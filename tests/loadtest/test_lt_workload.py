"""Workload as data: datasets, class mix, warm-up, reproducibility."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loadtest.config import DatasetSpec, Length, RunConfig, parse_mix
from loadtest.datasets import build_samples
from loadtest.errors import UsageError
from loadtest.prompts import BYTES_PER_TOKEN, TokenizerPrompts
from loadtest.workload import plan


def config(**changes: object) -> RunConfig:
    base = RunConfig(rps=20.0, duration_s=None, num_requests=200, warmup_s=0.0,
                     dataset=DatasetSpec(input_len=Length(32, 32), output_len=Length(8, 8)))
    return base.with_(**changes)


def test_same_seed_same_plan_and_independent_streams() -> None:
    a, b = plan(config()), plan(config())
    assert a == b
    other = plan(config(seed=1))
    assert [r.due_s for r in other.requests] != [r.due_s for r in a.requests]
    # changing the dataset does not move the arrivals
    longer = plan(config(dataset=DatasetSpec(input_len=Length(64, 64))))
    assert [r.due_s for r in longer.requests] == [r.due_s for r in a.requests]


def test_mix_shares() -> None:
    workload = plan(config(num_requests=4000, mix=parse_mix("interactive=0.2,batch=0.8")))
    classes = [r.sla_class for r in workload.requests]
    assert classes.count("interactive") / len(classes) == pytest.approx(0.2, abs=0.02)


def test_warmup_by_count_and_by_time() -> None:
    by_count = plan(config(warmup_requests=5))
    assert by_count.warmup_count == 5 and by_count.measured_count == 200
    assert by_count.measure_start_s == by_count.requests[4].due_s
    assert all(r.warmup == (r.index < 5) for r in by_count.requests)
    by_time = plan(config(warmup_s=3.0))
    warm = [r for r in by_time.requests if r.warmup]
    assert by_time.measure_start_s == 3.0 and all(r.due_s < 3.0 for r in warm)
    assert 30 <= len(warm) <= 90  # ~60 at 20 req/s
    assert by_time.measured_count == 200


def test_duration_mode() -> None:
    workload = plan(config(num_requests=None, duration_s=10.0))
    assert 140 <= workload.measured_count <= 260
    assert max(r.due_s for r in workload.requests) < 10.0


def test_byte_estimate_prompts_and_ranged_lengths() -> None:
    spec = DatasetSpec(input_len=Length(10, 20), output_len=Length(1, 3))
    samples = build_samples(spec, 300, np.random.default_rng(0))
    assert {s.output_len for s in samples} == {1, 2, 3}
    assert all(s.input_len is None for s in samples)  # an estimate is not a count
    sizes = {len(s.prompt or "") for s in samples}
    assert min(sizes) == 10 * BYTES_PER_TOKEN and max(sizes) == 20 * BYTES_PER_TOKEN


def test_tokenizer_prompts_are_exact(tokenizer_dir: Path) -> None:
    spec = DatasetSpec(input_len=Length(50, 50), tokenizer=tokenizer_dir)
    samples = build_samples(spec, 20, np.random.default_rng(0))
    maker = TokenizerPrompts(tokenizer_dir)
    assert all(s.input_len == 50 for s in samples)
    assert [maker.count(s.prompt or "") for s in samples] == [50] * 20


def test_chat_lengths_have_a_long_tail() -> None:
    spec = DatasetSpec(kind="chat", input_len=Length(100, 100), output_len=Length(50, 50))
    samples = build_samples(spec, 2000, np.random.default_rng(0))
    outputs = np.array([s.output_len for s in samples])
    assert np.median(outputs) == pytest.approx(50, rel=0.1)
    assert outputs.max() == 200 and outputs.min() >= 1  # clipped at 4 x median
    assert np.mean(outputs) > np.median(outputs)  # right skew


def test_jsonl_dataset(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "hi", "output_len": 3}\n\n'
                    '{"messages": [{"role": "user", "content": "yo"}], "class": "batch"}\n')
    workload = plan(config(num_requests=10, dataset=DatasetSpec(kind="jsonl", path=path)))
    assert {r.sample.prompt for r in workload.requests} == {"hi", None}
    assert {r.sla_class for r in workload.requests if r.sample.messages} == {"batch"}
    assert {r.sample.output_len for r in workload.requests} == {3, 128}


@pytest.mark.parametrize(
    "text", ['{"prompt": 5}', "[1]", "{bad", '{"prompt": "x", "output_len": 0}']
)
def test_bad_jsonl_lines(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(text + "\n")
    with pytest.raises(UsageError, match=r"bad\.jsonl:1"):
        build_samples(DatasetSpec(kind="jsonl", path=path), 1, np.random.default_rng(0))


def test_missing_files_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        build_samples(DatasetSpec(kind="jsonl", path=tmp_path / "nope.jsonl"), 1,
                      np.random.default_rng(0))
    with pytest.raises(UsageError):
        TokenizerPrompts(tmp_path / "nope")
