"""Gateway-only A/B of `benchmarks/sla-cpu.yaml` variants at the SLA headline's load.

Each variant: the gateway on sla-cpu.yaml with the interactive target fixed at
``--target-ms`` (take it from an `sla_headline` run's plain-vLLM p99 at 10 req/s x 1.5)
and the variant's settings overridden, then the headline's workload (random 256-in/64-out,
streaming, mix interactive=0.2,batch=0.8, ``--rps`` for ``--duration`` s). Variants run
one after another, in order, ``--repeat`` times (ABAB..., so drift on a shared box hits
each alike); one row per run and the per-variant medians are printed.

    .venv/bin/python -m benchmarks.sla_ab --target-ms 50 \\
        --variant base: --variant pace0:scheduler.prefill_budget_tokens=0 --repeat 2

A variant is ``NAME:KEY=VALUE,KEY=VALUE`` with dotted keys into the config
(``scheduler.controller.initial_limit=32``, ``engines.0.args.max_num_batched_tokens=384``).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import requests
import yaml

from benchmarks.common import ROOT, demo_model, gateway, loadtest
from benchmarks.sla_headline import MIX


def parse_variant(spec: str) -> tuple[str, dict[str, Any]]:
    name, _, body = spec.partition(":")
    settings: dict[str, Any] = {}
    for item in filter(None, body.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"variant {spec!r}: {item!r} is not KEY=VALUE")
        settings[key] = yaml.safe_load(value)
    return name, settings


def apply(config: dict[str, Any], settings: dict[str, Any]) -> None:
    for dotted, value in settings.items():
        node: Any = config
        *path, last = dotted.split(".")
        for part in path:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value


def run_one(name: str, settings: dict[str, Any], target_ms: float, rps: float,
            duration: float, model: str, out: Path, port: int) -> dict[str, Any]:
    config = yaml.safe_load((ROOT / "benchmarks" / "sla-cpu.yaml").read_text())
    for c in config["classes"]:
        if c["name"] == "interactive":
            c["ttft_target_ms"] = target_ms
    apply(config, settings)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    gw = gateway(port, out, path)
    try:
        summary = loadtest(gw.url, out / "load", rps, duration, model, MIX,
                           "--slo", f"interactive:ttft={target_ms:g}")
        engine = requests.get(f"{gw.url}/v1/sla", timeout=10).json()["engines"][0]
    finally:
        gw.stop()
    inter = summary["per_class"]["interactive"]
    row = {"variant": name, "ttft_p50_ms": inter["ttft_ms"]["p50"],
           "ttft_p99_ms": inter["ttft_ms"]["p99"], "attainment": inter["slo_attainment"],
           "req_s": summary["overall"]["request_throughput"],
           "tok_s": summary["overall"]["output_tokens_per_s"],
           "limit_after": engine["concurrency_limit"], "action_after": engine["last_action"]}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target-ms", type=float, required=True)
    parser.add_argument("--variant", action="append", required=True,
                        help="NAME:KEY=VALUE,... (dotted config keys)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--rps", type=float, default=50)
    parser.add_argument("--duration", type=float, default=40)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "sla_ab")
    parser.add_argument("--port", type=int, default=8403)
    args = parser.parse_args()
    variants = [parse_variant(v) for v in args.variant]
    model = str(demo_model())
    rows: list[dict[str, Any]] = []
    for i in range(args.repeat):
        for name, settings in variants:
            rows.append(run_one(name, settings, args.target_ms, args.rps, args.duration,
                                model, args.out / f"{name}-{i}", args.port))
    (args.out / "ab.json").write_text(json.dumps(rows, indent=1))
    print(f"\n| variant (median of {args.repeat}) | interactive TTFT p50 / p99 (ms) "
          "| attainment | req/s | output tok/s |\n|---|---|---|---|---|")
    for name, _ in variants:
        mine = [r for r in rows if r["variant"] == name]

        def med(key: str, rs: list[dict[str, Any]] = mine) -> float:
            return statistics.median(r[key] for r in rs)

        print(f"| {name} | {med('ttft_p50_ms'):.0f} / {med('ttft_p99_ms'):.0f} "
              f"| {100 * med('attainment'):.1f}% | {med('req_s'):.1f} | {med('tok_s'):,.0f} |")


if __name__ == "__main__":
    main()
