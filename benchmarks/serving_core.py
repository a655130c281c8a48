"""Serving core figures (issue: serving core), one run, servers one after another:

- engine start and warmup seconds, time to ready;
- first-request TTFT right after ready vs steady state, for the gateway and for vLLM's
  own OpenAI server (whose first request takes the cold paths);
- TTFT and ITL through the gateway vs vLLM's server at 5 req/s (256-in/64-out), as ratios.

    .venv/bin/python benchmarks/serving_core.py --out results/serving_core
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import requests

from benchmarks.common import demo_model, first_token_s, gateway, loadtest, plain_vllm


def probe(url: str) -> dict[str, float]:
    first = first_token_s(url)
    steady = [first_token_s(url) for _ in range(20)]
    return {"first_ttft_ms": first * 1000, "steady_ttft_ms": statistics.median(steady) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("results/serving_core"))
    parser.add_argument("--duration", type=float, default=40)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model = demo_model()
    results: dict[str, Any] = {}

    vllm = plain_vllm(model, 8301, args.out)
    try:
        results["vllm"] = {"ready_s": vllm.ready_s, **probe(vllm.url)}
        results["vllm"]["load"] = loadtest(vllm.url, args.out / "vllm-5rps", 5, args.duration,
                                           model)
    finally:
        vllm.stop()

    gw = gateway(8302, args.out)
    try:
        ready = requests.get(f"{gw.url}/health/ready", timeout=10).json()
        results["gateway"] = {"ready_s": gw.ready_s,
                              "engine_start_s": ready["engine_start_seconds"],
                              "warmup_s": ready["warmup_seconds"], **probe(gw.url)}
        results["gateway"]["load"] = loadtest(gw.url, args.out / "gateway-5rps", 5,
                                              args.duration, model)
    finally:
        results["gateway"]["exit_code"] = gw.stop()

    (args.out / "serving_core.json").write_text(json.dumps(results, indent=2))
    print(report(results))


def report(r: dict[str, Any]) -> str:
    g, v = r["gateway"], r["vllm"]
    go, vo = g["load"]["overall"], v["load"]["overall"]
    rows = [
        "| | gateway (2 engines) | vLLM OpenAI server | ratio |",
        "|---|---|---|---|",
        f"| process start to ready | {g['ready_s']:.1f} s | {v['ready_s']:.1f} s | |",
        f"| engine start (both, concurrent) | {g['engine_start_s']:.1f} s | | |",
        "| warmup per engine | " + ", ".join(f"{k} {s:.1f} s" for k, s in g["warmup_s"].items())
        + " | none | |",
        f"| first request TTFT after ready | {g['first_ttft_ms']:.0f} ms | "
        f"{v['first_ttft_ms']:.0f} ms | {g['first_ttft_ms'] / v['first_ttft_ms']:.3f} |",
        f"| steady-state TTFT (median of 20) | {g['steady_ttft_ms']:.1f} ms | "
        f"{v['steady_ttft_ms']:.1f} ms | {g['steady_ttft_ms'] / v['steady_ttft_ms']:.2f} |",
    ]
    for key, label in (("ttft_ms", "TTFT"), ("itl_ms", "ITL")):
        for q in ("p50", "p99"):
            a, b = go[key][q], vo[key][q]
            rows.append(f"| 5 req/s {label} {q} | {a:.1f} ms | {b:.1f} ms | {a / b:.2f} |")
    rows.append(f"| 5 req/s output tok/s | {go['output_tokens_per_s']:.0f} | "
                f"{vo['output_tokens_per_s']:.0f} | |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
