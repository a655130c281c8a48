"""vLLM's ``AsyncLLMEngine`` driven in process, on the loadtest's own arrival schedule.

    python -m benchmarks.engine_direct --rps 5 --duration 20 --input-len 64 --output-len 16 \
        --tokenizer MODEL_DIR --seed 1 --engine-args '{"max_model_len": 2048, ...}' \
        --out results/added_latency/direct-5

The workload is planned by the loadtest itself (``loadtest.cli.config_from`` and
``loadtest.workload.plan`` from the same flags), so due times, classes and prompts
match a ``python -m loadtest`` run with those flags request for request. Prompts are
tokenized before the run (as the loadtest encodes its bodies before the run), then
each request goes to ``AsyncLLMEngine.generate`` as ``TokensPrompt`` at its due time.
TTFT: from the send to the first output with a token; ITL: between outputs. Writes
``summary.json`` with p50/p90/p99 of each over the measured requests (warm-up ones,
as the loadtest marks them, are sent and left out).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import uvloop

from loadtest.cli import build_parser, config_from
from loadtest.workload import plan


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p90": float("nan"), "p99": float("nan"), "mean": 0.0}
    p50, p90, p99 = np.percentile(np.array(values) * 1000, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99),
            "mean": float(np.mean(values) * 1000)}


async def run(argv: list[str], engine_args: dict[str, Any], model: str, out: Path) -> None:
    from transformers import AutoTokenizer
    from vllm import AsyncEngineArgs, AsyncLLMEngine, SamplingParams, TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    args = build_parser("run").parse_args(argv)
    config = config_from(args, "in-process")
    workload = plan(config)
    tok = AutoTokenizer.from_pretrained(model)
    prompts = [tok.encode(r.sample.prompt or "", add_special_tokens=True)
               for r in workload.requests]
    llm = AsyncLLMEngine.from_engine_args(AsyncEngineArgs(model=model, **engine_args))
    try:
        async def one(index: int, ids: list[int], max_tokens: int) -> tuple[float, list[float]]:
            params = SamplingParams(max_tokens=max_tokens, ignore_eos=config.ignore_eos,
                                    temperature=1.0, output_kind=RequestOutputKind.DELTA)
            sent = time.perf_counter()
            stamps: list[float] = []
            async for output in llm.generate(TokensPrompt(prompt_token_ids=ids), params,
                                             f"direct-{index}-{sent}"):
                if output.outputs and output.outputs[0].token_ids:
                    stamps.append(time.perf_counter())
            return sent, stamps

        # Warm the engine first, as the gateway's start-up does (the gateway run
        # also starts measuring only after its own warm-up phase).
        await asyncio.gather(*(one(-i, prompts[0], 8) for i in range(1, 5)))
        start = time.perf_counter()

        async def at_due(i: int) -> tuple[float, list[float]]:
            request = workload.requests[i]
            while (delay := start + request.due_s - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            return await one(i, prompts[i], request.sample.output_len)

        results = await asyncio.gather(*(at_due(i) for i in range(len(workload.requests))))
        elapsed = time.perf_counter() - start
    finally:
        llm.shutdown()
    ttft: list[float] = []
    itl: list[float] = []
    tokens, last = 0, start
    for request, (sent, stamps) in zip(workload.requests, results, strict=True):
        if request.warmup or not stamps:
            continue
        ttft.append(stamps[0] - sent)
        itl.extend(b - a for a, b in itertools.pairwise(stamps))
        tokens += len(stamps)
        last = max(last, stamps[-1])
    # Output tokens/s over the measured window: its first due time to the last token.
    window = last - (start + workload.measure_start_s)
    summary = {"overall": {"ttft_ms": _percentiles(ttft), "itl_ms": _percentiles(itl),
                           "ok": len(ttft), "output_tokens_per_s": tokens / window,
                           "duration_s": elapsed}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine-args", required=True, help="JSON: AsyncEngineArgs fields")
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", type=Path, required=True)
    ours, loadtest_argv = parser.parse_known_args()
    uvloop.run(run(loadtest_argv, json.loads(ours.engine_args), ours.model, ours.out))
    sys.exit(0)


if __name__ == "__main__":
    main()
