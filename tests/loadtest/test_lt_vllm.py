"""Against real plain vLLM on the demo model, and against vLLM's own metric code."""

from __future__ import annotations

import sys
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from lt_support import small_config

from loadtest import report, runner
from loadtest.bench.agreement import demo_model_dir
from loadtest.config import SLO, DatasetSpec, Length
from loadtest.launcher import free_port, launched
from loadtest.metrics import summarize
from loadtest.records import Outcome, RequestRecord
from loadtest.slos import SLOSet

pytestmark = pytest.mark.vllm

# --dtype float32: vLLM's CPU build turns "auto" into bfloat16, and its bf16 attention
# kernel dies with SIGILL on this machine (the demo model is float32 for that reason)
PLAIN_VLLM_ARGS = ("--max-model-len", "2048", "--enforce-eager", "--dtype", "float32")


@pytest.fixture(scope="module")
def demo_dir() -> str:
    return demo_model_dir()


@pytest.fixture(scope="module")
async def plain_vllm(demo_dir: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """``python -m vllm.entrypoints.openai.api_server`` on the demo model."""
    port = free_port()
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", demo_dir,
               *PLAIN_VLLM_ARGS, "--port", str(port)]
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    async with launched(command, f"http://127.0.0.1:{port}/health", log, ready_timeout_s=600,
                        env={"VLLM_CPU_KVCACHE_SPACE": "1"}):
        yield f"http://127.0.0.1:{port}"


async def test_ten_requests_against_plain_vllm(plain_vllm: str, demo_dir: str,
                                               tmp_path: Path) -> None:
    config = small_config(
        plain_vllm, tmp_path, rps=5.0, num_requests=10, warmup_requests=2,
        dataset=DatasetSpec(input_len=Length(256, 256), output_len=Length(64, 64),
                            tokenizer=Path(demo_dir)),
        request_timeout_s=120.0,
    )
    result = await runner.run(config)
    summary = report.write_results(result, tmp_path)
    overall = summary["overall"]
    assert (overall["sent"], overall["ok"], overall["errors"]) == (10, 10, 0)
    assert overall["goodput_rps"] is None  # plain vLLM has no /v1/sla
    assert any("no SLOs" in note for note in summary["run"]["notes"])
    for r in result.measured:
        assert r.output_tokens == 64  # ignore_eos honoured, counted from usage
        assert r.prompt_tokens == 256  # exact prompts from the model's own tokenizer
        # One gap per token event after the first. vLLM's server sends one event per
        # token while its output handler keeps up, and merges deltas when it falls
        # behind (seen in CI with the box busy: 25 events for 64 tokens).
        assert 1 <= len(r.itl_s) <= 63
        assert 0 < r.ttft_s <= r.e2el_s  # type: ignore[operator]
        assert sum(r.itl_s) == pytest.approx(r.e2el_s - r.ttft_s, abs=1e-6)  # type: ignore[operator]
    # (no lower bound on TPOT: with vLLM's threads on both of this machine's cores, a
    # starved client can read a whole stream in one chunk; TPOT is then honestly ~0)
    assert overall["tpot_ms"]["p50"] >= 0 and overall["output_tokens_per_s"] > 0


async def test_chat_endpoint_against_plain_vllm(plain_vllm: str, tmp_path: Path) -> None:
    config = small_config(plain_vllm, tmp_path, rps=5.0, num_requests=3, endpoint="chat",
                          request_timeout_s=120.0)
    result = await runner.run(config)
    assert all(r.outcome is Outcome.OK and r.output_tokens == 4 for r in result.measured)


def test_metric_math_equals_vllms_calculate_metrics() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from vllm.benchmarks.lib.endpoint_request_func import RequestFuncOutput
        from vllm.benchmarks.serve import calculate_metrics

    rng = np.random.default_rng(0)
    records, outputs = [], []
    for i in range(200):
        tokens = int(rng.integers(1, 20))
        ttft = float(rng.exponential(0.2))
        itl = tuple(float(x) for x in rng.exponential(0.02, size=tokens - 1))
        success = bool(rng.random() > 0.1)
        e2el = ttft + sum(itl)
        outputs.append(RequestFuncOutput(success=success, latency=e2el, ttft=ttft,
                                         itl=list(itl), output_tokens=tokens, prompt_len=5,
                                         start_time=0.0))
        records.append(RequestRecord(i, "a", False, 0.0, 0.0, e2el,
                                     Outcome.OK if success else Outcome.ERROR, 200,
                                     ttft_s=ttft, e2el_s=e2el, itl_s=itl,
                                     output_tokens=tokens))
    theirs, _ = calculate_metrics(input_requests=[], outputs=outputs, dur_s=10.0,
                                  tokenizer=None, selected_percentiles=[50, 90, 99],
                                  goodput_config_dict={"ttft": 200, "tpot": 25})
    ours = summarize(records, SLOSet({"a": SLO(ttft_ms=200, tpot_ms=25)}, "--slo"), 10.0)
    o = ours["overall"]
    for name in ("ttft", "tpot", "itl", "e2el"):
        mine = o[f"{name}_ms"]
        assert mine["mean"] == pytest.approx(getattr(theirs, f"mean_{name}_ms"))
        assert mine["p50"] == pytest.approx(getattr(theirs, f"median_{name}_ms"))
        their_percentiles = dict(getattr(theirs, f"percentiles_{name}_ms"))
        for p in (50, 90, 99):
            assert mine[f"p{p}"] == pytest.approx(their_percentiles[p])
    assert o["request_throughput"] == pytest.approx(theirs.request_throughput)
    assert o["output_tokens_per_s"] == pytest.approx(theirs.output_throughput)
    assert o["goodput_rps"] == pytest.approx(theirs.request_goodput)
