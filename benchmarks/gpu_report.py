"""BENCHMARKS.md's H100 tables and plots from ``gpu_headline.py``'s results (CPU side).

Each ``--run`` is a folder unpacked from one device run's ``h100.tar.gz``: ``main/`` (the
driver's phases) and optionally ``gw2b/`` (a phase rerun later on the same machine).

    .venv/bin/python -m benchmarks.gpu_report --run results/h100-run1 --run results/h100-run2 \
        --plots-from results/h100-run1 --docs docs/benchmarks
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

SYSTEMS = (  # phase folder, label
    ("vllm-fcfs-50", "vLLM FCFS"),
    ("vllm-prio-50", "vLLM priority"),
    ("gw1-50", "slagate, 1 engine"),
    ("gw1f128-50", "slagate, 1 engine, floor 128"),
    ("gw1p512-50", "slagate, 1 engine, pacing 512"),
    ("gw1p1024-50", "slagate, 1 engine, pacing 1024"),
    ("gw1p1024f128-50", "slagate, 1 engine, pacing 1024, floor 128"),
    ("gw2-50", "slagate, 2 engines"),
)


def systems(run: dict[str, Any]) -> list[tuple[str, str]]:
    """SYSTEMS this run measured, then its other gateway phases (``gw1@...`` variants)
    under their own names."""
    known = [(phase, label) for phase, label in SYSTEMS if phase in run["phases"]]
    seen = {phase for phase, _ in known}
    return known + [(phase, f"slagate, {phase[:-3]}") for phase in run["phases"]
                    if phase.startswith("gw") and phase.endswith("-50") and phase not in seen]
CLASS_COLORS = {"interactive": "tab:red", "batch": "tab:blue"}
# What the plot titles say: the device (--prefix, upper-cased) and what the gateway ran.
LABELS = {"device": "H100", "after_50": "then the sweep 9 / 18 / 36 / 54 / 108 req/s"}


def load_run(folder: Path) -> dict[str, Any]:
    """The driver's results.json, with a later rerun's phases (``gw2b/``) merged in."""
    results: dict[str, Any] = json.loads((folder / "main" / "results.json").read_text())
    extra = folder / "gw2b" / "results.json"
    if extra.exists():
        results["phases"].update(json.loads(extra.read_text())["phases"])
    results["folder"] = str(folder)
    return results


def rows(run: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per system measured at 50 req/s in this run."""
    fcfs = run["phases"]["vllm-fcfs-50"]["summary"]["overall"]["output_tokens_per_s"]
    out = []
    for phase, label in systems(run):
        s = run["phases"][phase]["summary"]
        i, b, o = s["per_class"]["interactive"], s["per_class"]["batch"], s["overall"]
        out.append({
            "system": label, "phase": phase,
            "i_ttft_p50": i["ttft_ms"]["p50"], "i_ttft_p99": i["ttft_ms"]["p99"],
            "i_tpot_p99": i["tpot_ms"]["p99"], "i_attain": i["slo_attainment"],
            "b_ttft_p99": b["ttft_ms"]["p99"], "b_shed": b["rejected_429"] + b["rejected_503"],
            "rps": o["request_throughput"], "tok_s": o["output_tokens_per_s"],
            "tok_ratio": o["output_tokens_per_s"] / fcfs,
        })  # fmt: skip
    return out


def table(run: dict[str, Any], name: str) -> str:
    base = run["phases"]["vllm-fcfs-20"]["summary"]["overall"]["ttft_ms"]["p99"]
    target = run["interactive_target_ms"]
    lines = [
        f"**{name}** ({run['device']}): plain vLLM FCFS TTFT p99 at 20 req/s {base:.0f} ms, "
        f"so the interactive target is {target:.0f} ms (TPOT target 50 ms).",
        "",
        "| 50 req/s offered | interactive TTFT p50 / p99 (ms) | interactive TPOT p99 (ms) "
        "| interactive SLO met | batch TTFT p99 (ms) | batch shed | achieved req/s "
        "| output tok/s (x FCFS) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows(run):
        ttft_mark = "" if r["phase"].startswith("vllm") else (
            " ✓" if r["i_ttft_p99"] <= target else " ✗")
        tok_mark = "" if r["phase"].startswith("vllm") else (
            " ✓" if r["tok_ratio"] >= 0.95 else " ✗")
        lines.append(
            f"| {r['system']} | {r['i_ttft_p50']:,.0f} / {r['i_ttft_p99']:,.0f}{ttft_mark} | "
            f"{r['i_tpot_p99']:.1f} | {r['i_attain'] * 100:.1f}% | {r['b_ttft_p99']:,.0f} | "
            f"{r['b_shed']} | {r['rps']:.1f} | {r['tok_s']:,.0f} "
            f"({r['tok_ratio']:.3f}){tok_mark} |")
    return "\n".join(lines)


def read_requests(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def plot_ttft_over_time(main: Path, phases: list[tuple[str, str]], out: Path) -> None:
    """Client-side TTFT of every request against its send time, per class, one panel each."""
    fig, axes = plt.subplots(len(phases), 1, figsize=(9, 2.6 * len(phases)), sharex=True)
    for ax, (phase, label) in zip(axes, phases, strict=True):
        reqs = [r for r in read_requests(main / phase / "requests.csv")
                if r["phase"] == "measured" and r["ttft_ms"]]
        for cls, color in CLASS_COLORS.items():
            pts = [(float(r["send_s"]), float(r["ttft_ms"])) for r in reqs if r["class"] == cls]
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=3, color=color, label=cls,
                       alpha=0.6 if cls == "batch" else 0.9)
        ax.set_yscale("log")
        ax.set_ylabel("TTFT (ms)")
        ax.set_title(label, fontsize=9)
        ax.legend(loc="upper left", fontsize=7, markerscale=3)
    axes[-1].set_xlabel("request sent at (s into the run)")
    fig.suptitle(f"TTFT over time per class, 50 req/s offered (dsk7b, {LABELS['device']})",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_controller(main: Path, name: str, out: Path) -> None:
    """The controller's limit and in-flight count, its observed interactive TTFT and
    target, and every interactive request's client-side TTFT, on one clock."""
    with (main / f"sla_{name}.csv").open() as handle:
        samples = [s for s in csv.DictReader(handle) if s["engine"] in ("main", "fast")]
    t0 = float(samples[0]["t"])
    t = [float(s["t"]) - t0 for s in samples]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True)
    ax.plot(t, [float(s["limit"]) for s in samples], color="tab:blue", label="concurrency limit")
    ax.plot(t, [float(s["inflight"]) for s in samples], color="tab:blue", alpha=0.35,
            label="in flight in the engine")
    ax.plot(t, [float(s["queue_batch"]) for s in samples], color="tab:gray", alpha=0.6,
            label="batch queued in the gateway")
    ax.set_ylabel("sequences / requests")
    ax.legend(loc="upper left", fontsize=7)
    # NaN where the controller had too few samples, so idle stretches show as gaps
    obs = [(x, float(s["observed_interactive_ms"] or "nan"))
           for x, s in zip(t, samples, strict=True)]
    for folder in sorted(main.glob(f"{name}-*/**/summary.json")):
        summary = json.loads(folder.read_text())
        shift = summary["run"]["clock_t0"] - t0
        reqs = read_requests(folder.parent / "requests.csv")
        pts = [(float(r["send_s"]) + shift, float(r["ttft_ms"])) for r in reqs
               if r["class"] == "interactive" and r["ttft_ms"]]
        ax2.scatter([p[0] for p in pts], [p[1] for p in pts], s=2, color="tab:red", alpha=0.25)
        rps = summary["config"]["rps"]
        ax.text(shift + 1, 0.93, f"{rps:g}/s", fontsize=7, transform=ax.get_xaxis_transform())
        ax.axvline(shift, color="grey", linestyle=":", linewidth=0.8)
        ax2.axvline(shift, color="grey", linestyle=":", linewidth=0.8)
    ax2.scatter([], [], s=6, color="tab:red", label="interactive TTFT per request (client)")
    ax2.plot([p[0] for p in obs], [p[1] for p in obs], color="black", linewidth=1,
             label="controller's observed interactive TTFT (engine side, p90, 5 s)")
    ax2.plot(t, [float(s["target_ms"]) for s in samples], color="black", linestyle="--",
             linewidth=1, label="controller target (0.6 x interactive target)")
    ax2.set_yscale("log")
    ax2.set_ylabel("ms")
    ax2.set_xlabel("seconds since the gateway was ready")
    ax2.legend(loc="upper left", fontsize=7)
    fig.suptitle(f"Adaptive controller on the {LABELS['device']} (one engine): 50 req/s, "
                 f"{LABELS['after_50']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_sweep(main: Path, out: Path) -> None:
    """Goodput per class against offered load, gateway and plain vLLM, one plot."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for phase, label, style in (("gw1-sweep", "slagate", "-"),
                                ("vllm-fcfs-sweep", "vLLM FCFS", "--")):
        points = json.loads((main / phase / "sweep.json").read_text())["points"]
        rps = [p["rps"] for p in points]
        for cls, color in CLASS_COLORS.items():
            ax.plot(rps, [p["per_class"][cls]["goodput_rps"] for p in points], style,
                    marker="o", color=color, label=f"{label}: {cls}")
            ax2.plot(rps, [100 * p["per_class"][cls]["slo_attainment"] for p in points], style,
                     marker="o", color=color, label=f"{label}: {cls}")
    ax.set_ylabel("goodput (req/s meeting the class SLOs,\nover the run incl. its drain)")
    ax2.set_ylabel("SLO attainment (% of requests sent)")
    for a in (ax, ax2):
        a.set_xlabel("offered load (req/s; 20% interactive)")
        a.legend(fontsize=8)
        a.grid(alpha=0.3)
    fig.suptitle("Per class vs offered load, slagate (1 engine) and plain vLLM (dsk7b, "
                 f"{LABELS['device']}, 20 s of arrivals per point)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def sweep_table(main: Path) -> str:
    lines = ["| offered req/s | system | interactive goodput | batch goodput | interactive "
             "TTFT p99 (ms) | achieved req/s | output tok/s |", "|---|---|---|---|---|---|---|"]
    docs = {label: json.loads((main / phase / "sweep.json").read_text())["points"]
            for phase, label in (("gw1-sweep", "slagate"), ("vllm-fcfs-sweep", "vLLM FCFS"))}
    for i, point in enumerate(docs["slagate"]):
        for label, points in docs.items():
            p = points[i]
            pc, o = p["per_class"], p["overall"]
            lines.append(
                f"| {point['rps']:g} | {label} | {pc['interactive']['goodput_rps']:.1f} | "
                f"{pc['batch']['goodput_rps']:.1f} | {pc['interactive']['ttft_ms']['p99']:,.0f} "
                f"| {o['request_throughput']:.1f} | {o['output_tokens_per_s']:,.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", type=Path, action="append", required=True)
    parser.add_argument("--plots-from", type=Path, required=True)
    parser.add_argument("--docs", type=Path, default=Path("docs/benchmarks"))
    parser.add_argument("--prefix", default="h100", help="file names: PREFIX-controller.png, ...")
    parser.add_argument("--first", type=int, default=1, help="the first --run's number")
    parser.add_argument("--controller", default="gw1",
                        help="the gateway phase whose /v1/sla samples the controller plot shows")
    parser.add_argument("--ttft-phases", type=lambda v: v.split(","), default=None,
                        help="the phases in the TTFT-over-time plot (default: every one)")
    args = parser.parse_args()
    summary: dict[str, Any] = {}
    for i, folder in enumerate(args.run, args.first):
        run = load_run(folder)
        print(table(run, f"Run {i}"), end="\n\n")
        summary[f"run{i}"] = {"device": run["device"],
                              "interactive_target_ms": run["interactive_target_ms"],
                              "rows": rows(run), "errors": run["errors"]}
    main_dir = args.plots_from / "main"
    swept = (main_dir / "gw1-sweep" / "sweep.json").exists()
    LABELS["device"] = args.prefix.split("-")[0].upper()
    if not swept:
        LABELS["after_50"] = "alone"
    if swept:
        print(sweep_table(main_dir))
    args.docs.mkdir(parents=True, exist_ok=True)
    prefix = args.prefix
    plotted = load_run(args.plots_from)
    plot_ttft_over_time(main_dir, [(p, label) for p, label in systems(plotted)
                                   if (main_dir / p / "requests.csv").exists()
                                   and (not args.ttft_phases or p in args.ttft_phases)],
                        args.docs / f"{prefix}-ttft-over-time.png")
    plot_controller(main_dir, args.controller, args.docs / f"{prefix}-controller.png")
    if swept:
        plot_sweep(main_dir, args.docs / f"{prefix}-sweep.png")
    (args.docs / f"{prefix}-summary.json").write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
