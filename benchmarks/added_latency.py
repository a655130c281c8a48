"""Added latency (issue #6 item 3): the same vLLM engine alone vs behind the gateway.

    .venv/bin/python -m benchmarks.added_latency [--rates 5,50] [--duration 20] \
        [--input-len 64 --output-len 16] [--out results/added_latency]

One script run, one server at a time on the CPU box:

1. ``benchmarks.engine_direct``: vLLM's ``AsyncLLMEngine`` in process, driven on the
   loadtest's own plan (same seed, due times and prompts, tokenized up front);
2. the gateway over HTTP in FCFS mode (``fcfs_config``: one class, one engine with the
   same engine args, no concurrency controller), driven by ``python -m loadtest`` with
   the same flags.

Added TTFT = gateway TTFT - engine TTFT at the same percentile; targets p50 <= 1 ms and
p99 <= 5 ms. The default request is 64-in/16-out so that 50 req/s stays under this
box's capacity: above it, TTFT is queueing time, which no front end "adds" (the 256-in/
64-out capacity here is ~14-31 req/s). The gateway side also pays the HTTP client (the
loadtest) on the same 2 cores; the in-process side has none.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from benchmarks.common import PY, ROOT, demo_model, gateway, loadtest

# Batch limits pinned: vLLM's defaults differ by entry point (its OpenAI server on CPU
# takes max_num_seqs 128, an in-process AsyncLLMEngine 256), and every side of these
# comparisons must run the same engine.
ENGINE_ARGS: dict[str, Any] = {"max_model_len": 2048, "enforce_eager": True,
                               "dtype": "float32", "max_num_seqs": 128,
                               "max_num_batched_tokens": 2048}
VLLM_FLAGS = ("--max-num-seqs", "128", "--max-num-batched-tokens", "2048")
KV_GIB = "2"


def fcfs_config(out: Path, engine_args: dict[str, Any] = ENGINE_ARGS) -> Path:
    """A gateway config that only forwards: classes alike, arrival order, no limit of its own."""
    args = ", ".join(f"{k}: {json.dumps(v)}" for k, v in engine_args.items())
    classes = "\n".join(
        f"  - {{name: {name}, rank: 0, ttft_target_ms: 60000, tpot_target_ms: 60000,\n"
        f"     queue_timeout_ms: 120000, max_queue: 100000, max_queued_tokens: 1000000000}}"
        for name in ("interactive", "standard", "batch"))
    text = f"""# FCFS mode: every class alike (one rank, one weight, no priorities), one engine
# on vLLM's default FCFS policy, no concurrency controller (the gateway grants up to
# max_num_seqs at once and never holds a request back while the engine has room).
default_class: standard
classes:
{classes}
engines:
  - name: main
    model: demo
    classes: [interactive, standard, batch]
    env: {{VLLM_CPU_KVCACHE_SPACE: "{KV_GIB}"}}
    args: {{{args}}}
scheduler:
  reserved_slots: 0
  top_class_headroom: 0
  controller: {{enabled: false}}
"""
    path = out / "gateway-fcfs.yaml"
    path.write_text(text)
    return path


def direct(model: str, out: Path, rps: float, duration: float, workload: list[str]) -> Any:
    cmd = [PY, "-m", "benchmarks.engine_direct", "--engine-args", json.dumps(ENGINE_ARGS),
           "--model", model, "--out", str(out), "--rps", str(rps), "--duration", str(duration),
           "--tokenizer", model, "--seed", "1", *workload]
    with (out.parent / f"{out.name}.log").open("wb") as log:
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=log, stderr=subprocess.STDOUT,
                       env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": KV_GIB})
    return json.loads((out / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="5,50")
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--input-len", default="64")
    parser.add_argument("--output-len", default="16")
    parser.add_argument("--out", type=Path, default=Path("results/added_latency"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rates = [float(r) for r in args.rates.split(",")]
    workload = ["--dataset", "random", "--input-len", args.input_len,
                "--output-len", args.output_len]
    model = demo_model()
    results: dict[str, Any] = {"direct": {}, "gateway": {}}
    for rps in rates:
        results["direct"][rps] = direct(model, args.out / f"direct-{rps:g}", rps,
                                        args.duration, workload)
    gw = gateway(8471, args.out, fcfs_config(args.out), name="gateway-fcfs")
    try:
        for rps in rates:
            results["gateway"][rps] = loadtest(gw.url, args.out / f"gateway-{rps:g}", rps,
                                               args.duration, model, "standard=1", *workload,
                                               "--no-plots")
    finally:
        gw.stop()
    (args.out / "added_latency.json").write_text(json.dumps(results, indent=2))
    print(report(results, rates))


def report(r: dict[str, Any], rates: list[float]) -> str:
    rows = ["| offered | TTFT p50 engine / gateway / added | TTFT p99 engine / gateway / added "
            "| ITL p50 engine / gateway | output tok/s engine / gateway |",
            "|---|---|---|---|---|"]
    for rps in rates:
        d, g = r["direct"][rps]["overall"], r["gateway"][rps]["overall"]
        cells = []
        for q in ("p50", "p99"):
            a, b = d["ttft_ms"][q], g["ttft_ms"][q]
            cells.append(f"{a:.1f} / {b:.1f} / **{b - a:+.1f} ms**")
        rows.append(f"| {rps:g} req/s | {cells[0]} | {cells[1]} | "
                    f"{d['itl_ms']['p50']:.1f} / {g['itl_ms']['p50']:.1f} ms | "
                    f"{d['output_tokens_per_s']:.0f} / {g['output_tokens_per_s']:.0f} |")
    rows.append("\ntargets: added TTFT p50 <= 1 ms, p99 <= 5 ms")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
