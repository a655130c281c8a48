"""Helpers shared by the loadtest tests (a plain module: tests/ is not a package)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loadtest.bench.fake_server import Behaviour
from loadtest.config import DatasetSpec, Length, RunConfig


@dataclass
class FakeTarget:
    url: str
    behaviour: Behaviour


def small_config(url: str, out: Path, **changes: object) -> RunConfig:
    """A fast run: 200 req/s, 20 requests, short prompts, no warm-up, no files but results."""
    base = RunConfig(
        url=url,
        rps=200.0,
        duration_s=None,
        num_requests=20,
        warmup_s=0.0,
        dataset=DatasetSpec(input_len=Length(16, 16), output_len=Length(4, 4)),
        out=out,
        progress=False,
        plots=False,
        monitor_interval_s=0.0,
    )
    return base.with_(**changes)
