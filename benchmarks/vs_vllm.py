"""Gateway vs vLLM's own OpenAI server on the same engine (issue #6 items 4 and 6).

    .venv/bin/python -m benchmarks.vs_vllm [--capacity 30] [--factors 0.25,0.5,1,2,3] \
        [--duration 10] [--series vllm,fcfs,sla] [--out results/vs_vllm]

One script run, one server at a time, each driven by ``python -m loadtest --sweep-rps``
over the same rates (``factors`` x ``capacity`` req/s; plain vLLM kept up with 42 req/s
of 256-in/64-out on this box, so 30 is taken as its capacity) with the same seed, mix
(interactive=0.2,batch=0.8) and SLOs (interactive TTFT 500 ms / TPOT 200 ms, batch
30 s / 1 s):

- ``vllm``: ``python -m vllm.entrypoints.openai.api_server``, same engine args;
- ``fcfs``: the gateway in FCFS mode (``added_latency.fcfs_config``: classes alike, no
  controller), the fair comparison for item 4 (output tokens/s >= vLLM's at each load);
- ``sla``: the gateway with ``benchmarks/sla-cpu.yaml`` (classes, priorities,
  controller): what the SLA scheduling does to goodput per class past capacity.

Prints output tokens/s per rate with the gateway/vLLM ratio, goodput per class per rate,
and draws goodput per class vs offered load for every series into one plot
(``docs/benchmarks/vs-vllm-sweep.png`` unless ``--plot`` says otherwise).
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path
from typing import Any

from benchmarks.added_latency import VLLM_FLAGS, fcfs_config
from benchmarks.common import PY, ROOT, Server, demo_model, gateway, plain_vllm

MIX = "interactive=0.2,batch=0.8"
SLOS = ["--slo", "interactive:ttft=500,tpot=200", "--slo", "batch:ttft=30000,tpot=1000"]
LABELS = {"vllm": "vLLM OpenAI server", "fcfs": "gateway, FCFS mode",
          "sla": "gateway, SLA mode (sla-cpu.yaml)"}


def sweep(url: str, out: Path, rates: list[float], duration: float, model: str) -> Any:
    cmd = [PY, "-m", "loadtest", "--url", url, "--sweep-rps", ",".join(f"{r:g}" for r in rates),
           "--duration", str(duration), "--mix", MIX, *SLOS, "--dataset", "random",
           "--input-len", "256", "--output-len", "64", "--tokenizer", model, "--seed", "1",
           "--out", str(out), "--no-progress", "--no-plots"]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "sweep.json").read_text())


def start(series: str, model: str, out: Path) -> Server:
    if series == "vllm":
        return plain_vllm(model, 8481, out, *VLLM_FLAGS)
    if series == "fcfs":
        return gateway(8482, out, fcfs_config(out), name="gateway-fcfs")
    return gateway(8483, out, ROOT / "benchmarks" / "sla-cpu.yaml", name="gateway-sla")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacity", type=float, default=30.0)
    parser.add_argument("--factors", default="0.25,0.5,1,2,3")
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--series", default="vllm,fcfs,sla")
    parser.add_argument("--out", type=Path, default=Path("results/vs_vllm"))
    parser.add_argument("--resume", action="store_true",
                        help="keep the series already in OUT (after a run broke off)")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs/benchmarks/vs-vllm-sweep.png")
    parser.add_argument("--report-only", action="store_true",
                        help="print and plot OUT/vs_vllm.json again, run nothing")
    args = parser.parse_args()
    rates = [round(float(f) * args.capacity, 2) for f in args.factors.split(",")]
    if args.report_only:
        done = json.loads((args.out / "vs_vllm.json").read_text())
        print(report(done, rates))
        plot(done, args.capacity, args.plot)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    model = demo_model()
    results: dict[str, Any] = {}
    for series in args.series.split(","):
        done = args.out / series / "sweep.json"
        if args.resume and done.exists():
            results[series] = json.loads(done.read_text())  # from an earlier, partial run
            continue
        server = start(series, model, args.out)
        try:
            results[series] = sweep(server.url, args.out / series, rates, args.duration, model)
        finally:
            server.stop()
    (args.out / "vs_vllm.json").write_text(json.dumps(results, indent=2))
    print(report(results, rates))
    plot(results, args.capacity, args.plot)
    print(f"plot: {args.plot}")


def _points(sweep_doc: Any) -> dict[float, Any]:
    return {float(p["rps"]): p for p in sweep_doc["points"]}


def report(results: dict[str, Any], rates: list[float]) -> str:
    series = list(results)
    pts = {s: _points(results[s]) for s in series}
    head = " | ".join(f"{LABELS[s]} tok/s" for s in series)
    rows = [f"| offered req/s | {head} | " + " | ".join(
        f"{s} / vllm" for s in series if s != "vllm") + " |",
        "|---|" + "---|" * (len(series) + len([s for s in series if s != "vllm"]))]
    for rate in rates:
        toks = {s: pts[s][rate]["overall"]["output_tokens_per_s"] for s in series}
        ratios = [f"{toks[s] / toks['vllm']:.2f}" for s in series
                  if s != "vllm" and "vllm" in toks and toks["vllm"]]
        rows.append(f"| {rate:g} | " + " | ".join(f"{toks[s]:,.0f}" for s in series) + " | "
                    + " | ".join(ratios) + " |")
    rows += ["", "Goodput (req/s meeting their class SLOs) per class:", "",
             "| offered req/s | " + " | ".join(f"{s} interactive | {s} batch" for s in series)
             + " |", "|---|" + "---|---|" * len(series)]
    for rate in rates:
        cells = []
        for s in series:
            per_class = pts[s][rate]["per_class"]
            for cls in ("interactive", "batch"):
                good = per_class.get(cls, {}).get("goodput_rps")
                cells.append("-" if good is None else f"{good:.2f}")
        rows.append(f"| {rate:g} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plot(results: dict[str, Any], capacity: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (good_ax, tok_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    styles = {"vllm": "-", "fcfs": "--", "sla": "-"}
    colors = {"interactive": "tab:red", "batch": "tab:blue"}
    widths = {"vllm": 1.2, "fcfs": 1.2, "sla": 2.4}
    for series, doc in results.items():
        points = sorted(doc["points"], key=lambda p: p["rps"])
        offered = [p["rps"] for p in points]
        for cls, color in colors.items():
            good = [p["per_class"].get(cls, {}).get("goodput_rps") or 0.0 for p in points]
            good_ax.plot(offered, good, styles[series], color=color, lw=widths[series],
                         marker="o" if series == "sla" else ".",
                         label=f"{LABELS[series]}: {cls}")
        tok_ax.plot(offered, [p["overall"]["output_tokens_per_s"] for p in points],
                    styles[series], lw=widths[series], marker=".", label=LABELS[series])
    for ax in (good_ax, tok_ax):
        ax.axvline(capacity, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("offered load, req/s (256-in/64-out; dotted: --capacity)")
        ax.grid(alpha=0.3)
    good_ax.set_ylabel("goodput, req/s within class SLOs")
    good_ax.set_title("Goodput per class vs offered load")
    tok_ax.set_ylabel("output tokens/s")
    tok_ax.set_title("Output throughput vs offered load")
    good_ax.legend(fontsize=7)
    tok_ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
