"""The SLA headline (issue: SLA scheduler), one run, servers one after another.

Demo model, 256-in/64-out random prompts, streaming, mix interactive=0.2,batch=0.8:
1. plain vLLM OpenAI server, FCFS, at 10 req/s: its TTFT p99 sets the interactive
   target (1.5x, the loosest the issue allows);
2. plain vLLM FCFS at 50 req/s, and with --scheduling-policy priority (interactive 0,
   batch 2) at 50 req/s;
3. the gateway (benchmarks/sla-cpu.yaml with that target) at 50 req/s, then a load step
   (20 -> 100 req/s) sampled from /v1/sla for the controller plot.

    .venv/bin/python -m benchmarks.sla_headline --out results/sla
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path
from typing import Any

import requests
import yaml

from benchmarks.common import ROOT, demo_model, gateway, loadtest, plain_vllm

MIX = "interactive=0.2,batch=0.8"
PRIORITIES = "interactive=0,batch=2"


def run_gateway(model: str, out: Path, target_ms: float, duration: float) -> dict[str, Any]:
    config = yaml.safe_load((ROOT / "benchmarks" / "sla-cpu.yaml").read_text())
    for c in config["classes"]:
        if c["name"] == "interactive":
            c["ttft_target_ms"] = round(target_ms, 1)
    path = out / "sla-cpu.generated.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    gw = gateway(8402, out, path)
    result: dict[str, Any] = {}
    try:
        result["rps50"] = loadtest(gw.url, out / "gateway-50", 50, duration, model, MIX)
        result["sla_after"] = requests.get(f"{gw.url}/v1/sla", timeout=10).json()
        result["step"] = load_step(gw.url, model, out)
    finally:
        result["exit_code"] = gw.stop()
    return result


def load_step(url: str, model: str, out: Path) -> list[dict[str, float]]:
    """20 req/s for 20 s, then 100 req/s for 30 s; /v1/sla sampled every 0.5 s."""
    samples: list[dict[str, float]] = []
    stop = threading.Event()
    t0 = time.perf_counter()

    def poll() -> None:
        while not stop.is_set():
            engine = requests.get(f"{url}/v1/sla", timeout=10).json()["engines"][0]
            interactive = engine["observed_ttft_ms_by_class"].get("interactive")
            samples.append({"t": time.perf_counter() - t0, "limit": engine["concurrency_limit"],
                            "observed_ms": interactive or float("nan"),
                            "target_ms": engine["ttft_target_ms"],
                            "inflight": engine["inflight"]})
            stop.wait(0.5)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    loadtest(url, out / "step-20", 20, 20, model, MIX)
    switch = time.perf_counter() - t0
    loadtest(url, out / "step-100", 100, 30, model, MIX)
    stop.set()
    poller.join()
    plot_step(samples, switch, out / "controller_step.png")
    return samples


def plot_step(samples: list[dict[str, float]], switch: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] for s in samples]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.plot(t, [s["limit"] for s in samples], color="tab:blue", label="concurrency limit")
    ax.plot(t, [s["inflight"] for s in samples], color="tab:blue", alpha=0.35,
            label="in flight")
    ax.set_xlabel("seconds")
    ax.set_ylabel("sequences")
    ax2 = ax.twinx()
    ax2.plot(t, [s["observed_ms"] for s in samples], color="tab:red",
             label="interactive engine-side TTFT (controller's p90, 5 s window)")
    ax2.plot(t, [s["target_ms"] for s in samples], color="tab:red", linestyle="--",
             label="controller target (0.6 x interactive target)")
    ax2.set_ylabel("ms")
    ax.axvline(switch, color="grey", linestyle=":")
    ax.set_title("Adaptive controller after a load step 20 -> 100 req/s (demo model, CPU)")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def row(name: str, s: dict[str, Any]) -> str:
    i, b, o = s["per_class"]["interactive"], s["per_class"]["batch"], s["overall"]
    return (f"| {name} | {i['ttft_ms']['p50']:.0f} / {i['ttft_ms']['p99']:.0f} | "
            f"{i['slo_attainment'] * 100:.1f}% | {b['ttft_ms']['p99']:.0f} | "
            f"{b['rejected_429'] + b['rejected_503']} | {o['request_throughput']:.1f} | "
            f"{o['output_tokens_per_s']:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("results/sla"))
    parser.add_argument("--duration", type=float, default=40)
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    model = demo_model()
    r: dict[str, Any] = {}

    vllm = plain_vllm(model, 8401, out)
    try:
        r["vllm_fcfs_10"] = loadtest(vllm.url, out / "vllm-fcfs-10", 10, args.duration, model, MIX)
        baseline_p99 = r["vllm_fcfs_10"]["overall"]["ttft_ms"]["p99"]
        target = 1.5 * baseline_p99
        r["target_ms"] = target
        # The gateway's class SLOs, so plain vLLM's attainment is judged the same way.
        slos = ["--slo", f"interactive:ttft={target:.1f},tpot=200",
                "--slo", "batch:ttft=30000,tpot=1000"]
        r["vllm_fcfs_50"] = loadtest(vllm.url, out / "vllm-fcfs-50", 50, args.duration, model,
                                     MIX, *slos)
    finally:
        vllm.stop()
    vllm = plain_vllm(model, 8401, out, "--scheduling-policy", "priority")
    try:
        r["vllm_prio_50"] = loadtest(vllm.url, out / "vllm-prio-50", 50, args.duration, model,
                                     MIX, "--priority", PRIORITIES, *slos)
    finally:
        vllm.stop()

    r["gateway"] = run_gateway(model, out, target, args.duration)
    (out / "sla.json").write_text(json.dumps(r, indent=2))

    fcfs, gw = r["vllm_fcfs_50"]["overall"], r["gateway"]["rps50"]["overall"]
    print(f"plain vLLM TTFT p99 at 10 req/s: {baseline_p99:.0f} ms -> interactive target "
          f"{target:.0f} ms (1.5x)")
    print("| 50 req/s offered | interactive TTFT p50 / p99 (ms) | interactive SLO attainment "
          "| batch TTFT p99 (ms) | batch shed | achieved req/s | output tok/s |")
    print("|---|---|---|---|---|---|---|")
    print(row("vLLM FCFS", r["vllm_fcfs_50"]))
    print(row("vLLM priority", r["vllm_prio_50"]))
    print(row("slagate", r["gateway"]["rps50"]))
    print(f"gateway output tok/s / vLLM FCFS: "
          f"{gw['output_tokens_per_s'] / fcfs['output_tokens_per_s']:.2f}")


if __name__ == "__main__":
    main()
