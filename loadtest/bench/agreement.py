"""Agreement with the field's standard tool on one plain vLLM server.

    python -m loadtest.bench.agreement [--model-dir DIR] [--url URL] [--rps 5]
        [--num-prompts 300] [--rounds 1] [--sequential] [--out results/bench-agreement]

Starts plain vLLM's OpenAI server on the demo model (``python -m engines.demo_model``)
unless ``--url`` names a running one, warms it up (discarded), then measures it with
vLLM's ``benchmarks/serve.py`` and with ``python -m loadtest`` on the same workload shape
(random 256-in/64-out, ``ignore_eos``, Poisson arrivals, no warm-up in either) and prints
TTFT p50 and TPOT p50 of both and their ratios (ours / vLLM's). The issue asks for both
ratios within 10%.

By default both tools run *at the same time*, each offering half of ``--rps``: the server
sees the ``--rps`` workload and both tools sample the very same server conditions. (Run
one after the other -- ``--sequential``, alternating which goes first -- the server's own
drift between runs on a shared machine is larger than the 10% being tested.) Both
tools' ``--num-prompts`` requests are sent over the same span.

On a small machine the server's threads would otherwise starve the clients (a starved
client reads a whole stream in one chunk and reports TPOT ~0), so by default vLLM is
pinned to CPU 1 (``taskset``, ``VLLM_CPU_OMP_THREADS_BIND``) and both clients to CPU 0.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from loadtest.launcher import free_port, launched

TOLERANCE = 0.10
SERVER_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}
THEIR_START_LINE = "Starting main benchmark run"
BOOTSTRAP = 2000


def demo_model_dir() -> str:
    """The demo model's directory (``python -m engines.demo_model`` builds it if needed)."""
    done = subprocess.run([sys.executable, "-m", "engines.demo_model"], capture_output=True,
                          text=True, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise SystemExit(f"python -m engines.demo_model failed: {done.stderr.strip()[-300:]}")
    return lines[-1].strip()


def _pinned(cpu: str | None, command: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *command] if cpu is not None else command


def their_command(url: str, model: str, rps: float, num: int, seed: int, out: Path,
                  cpu: str | None) -> list[str]:
    return _pinned(cpu, [
        sys.executable, "-m", "loadtest.bench.vllm_bench_serve", "--backend", "openai",
        "--base-url", url, "--model", model, "--tokenizer", model, "--dataset-name", "random",
        "--random-input-len", "256", "--random-output-len", "64", "--ignore-eos",
        "--request-rate", str(rps), "--num-prompts", str(num), "--seed", str(seed),
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,90,99",
        "--disable-tqdm", "--save-result", "--save-detailed", "--result-dir", str(out.parent),
        "--result-filename", out.name])


def our_command(url: str, model: str, rps: float, num: int, seed: int, out: Path,
                cpu: str | None) -> list[str]:
    return _pinned(cpu, [
        sys.executable, "-m", "loadtest", "--url", url, "--model", model, "--tokenizer", model,
        "--input-len", "256", "--output-len", "64", "--rps", str(rps),
        "--num-requests", str(num), "--warmup-requests", "0", "--seed", str(seed),
        "--no-progress", "--no-plots", "--out", str(out)])


def their_result(out: Path) -> dict[str, Any]:
    data = orjson.loads(out.read_bytes())
    ok = [i for i, err in enumerate(data["errors"]) if not err]
    ttfts = [data["ttfts"][i] * 1000 for i in ok]
    tpots = [sum(data["itls"][i]) * 1000 / (data["output_lens"][i] - 1) for i in ok
             if data["output_lens"][i] > 1]
    return {"ttft_p50": data["median_ttft_ms"], "tpot_p50": data["median_tpot_ms"],
            "ttft_p99": data["p99_ttft_ms"], "tpot_p99": data["p99_tpot_ms"],
            "completed": data["completed"], "throughput": data["request_throughput"],
            "ttfts": ttfts, "tpots": tpots}


def our_result(out: Path) -> dict[str, Any]:
    o = orjson.loads((out / "summary.json").read_bytes())["overall"]
    with (out / "requests.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle)
                if r["phase"] == "measured" and r["outcome"] == "ok"]
    return {"ttft_p50": o["ttft_ms"]["p50"], "tpot_p50": o["tpot_ms"]["p50"],
            "ttft_p99": o["ttft_ms"]["p99"], "tpot_p99": o["tpot_ms"]["p99"],
            "completed": o["ok"], "throughput": o["request_throughput"],
            "ttfts": [float(r["ttft_ms"]) for r in rows],
            "tpots": [float(r["tpot_ms"]) for r in rows if r["tpot_ms"]]}


def median_ratio_ci(ours: list[float], theirs: list[float], seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of median(ours) / median(theirs): how much is sampling noise."""
    rng = np.random.default_rng(seed)
    a, b = np.asarray(ours), np.asarray(theirs)
    ratios = [np.median(rng.choice(a, len(a))) / np.median(rng.choice(b, len(b)))
              for _ in range(BOOTSTRAP)]
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(low), float(high)


def _show(command: list[str]) -> list[str]:
    print("$", " ".join(command), flush=True)
    return command


def together(theirs: list[str], ours: list[str]) -> None:
    """Start vLLM's tool, start ours when its main run begins, wait for both."""
    their_proc = subprocess.Popen(_show(theirs), stdout=subprocess.PIPE, text=True,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert their_proc.stdout is not None
    for line in their_proc.stdout:  # vLLM's import and ready check take seconds
        if THEIR_START_LINE in line:
            break
    our_proc = subprocess.Popen(_show(ours), stdout=subprocess.DEVNULL)
    for _ in their_proc.stdout:  # drain, so it never blocks on a full pipe
        pass
    if their_proc.wait() != 0 or our_proc.wait() != 0:
        raise SystemExit("a benchmark client failed")


def one_round(url: str, model: str, args: argparse.Namespace, i: int) -> dict[str, Any]:
    their_out, our_out = args.out / f"vllm_r{i}.json", args.out / f"loadtest_r{i}"
    if args.sequential:
        steps = [their_command(url, model, args.rps, args.num_prompts, i, their_out,
                               args.client_cpu),
                 our_command(url, model, args.rps, args.num_prompts, i, our_out,
                             args.client_cpu)]
        for command in steps if i % 2 == 0 else steps[::-1]:
            subprocess.run(_show(command), check=True, stdout=subprocess.DEVNULL)
    else:
        half = args.rps / 2
        together(
            their_command(url, model, half, args.num_prompts, i, their_out, args.client_cpu),
            our_command(url, model, half, args.num_prompts, 1000 + i, our_out, args.client_cpu),
        )
    return {"vllm": their_result(their_out), "loadtest": our_result(our_out)}


def compare_rounds(url: str, model: str, args: argparse.Namespace) -> bool:
    args.out.mkdir(parents=True, exist_ok=True)
    warmup = our_command(url, model, args.rps, 20, 999, args.out / "warmup", args.client_cpu)
    subprocess.run(_show(warmup), check=True, stdout=subprocess.DEVNULL)  # cold paths
    rows = [one_round(url, model, args, i) for i in range(args.rounds)]
    mode = ("one after the other" if args.sequential
            else f"at the same time, {args.rps / 2:g} req/s each")
    print(f"\n{args.rps:g} req/s, random 256-in/64-out, {args.num_prompts} requests per tool "
          f"and round, {mode}")
    print(f"{'round':<6}{'tool':<9}{'TTFT p50':>10}{'TPOT p50':>10}{'TTFT p99':>10}"
          f"{'TPOT p99':>10}{'done':>6}{'req/s':>7}")
    passed = True
    for i, got in enumerate(rows):
        for tool in ("vllm", "loadtest"):
            m = got[tool]
            print(f"{i:<6}{tool:<9}{m['ttft_p50']:>10.2f}{m['tpot_p50']:>10.2f}"
                  f"{m['ttft_p99']:>10.2f}{m['tpot_p99']:>10.2f}{m['completed']:>6}"
                  f"{m['throughput']:>7.2f}")
        ratios = {k: got["loadtest"][k] / got["vllm"][k] for k in ("ttft_p50", "tpot_p50")}
        print(f"{i:<6}{'ratio':<9}{ratios['ttft_p50']:>10.3f}{ratios['tpot_p50']:>10.3f}")
        cis = [median_ratio_ci(got["loadtest"][k], got["vllm"][k]) for k in ("ttfts", "tpots")]
        print(f"{i:<6}{'95% CI':<9}" + "".join(f"{f'{lo:.2f}-{hi:.2f}':>10}" for lo, hi in cis)
              + "   (bootstrap of the ratio of medians: sampling noise)")
        passed &= all(abs(r - 1) <= TOLERANCE for r in ratios.values())
    print("PASS" if passed else "FAIL", f"(TTFT p50 and TPOT p50 ratios within {TOLERANCE:.0%})")
    return passed


async def _with_server(model: str, args: argparse.Namespace) -> bool:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
               "--max-model-len", "2048", "--enforce-eager", "--dtype", args.dtype,
               "--port", str(port)]
    env = dict(SERVER_ENV)
    if args.server_cpus is not None:
        command = _pinned(args.server_cpus, command)
        env["VLLM_CPU_OMP_THREADS_BIND"] = args.server_cpus
    async with launched(_show(command), url + "/health", args.out / "vllm_server.log", 600,
                        env=env):
        return await asyncio.to_thread(compare_rounds, url, model, args)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", help="default: the demo model")
    parser.add_argument("--url", help="a running plain vLLM server (default: start one)")
    parser.add_argument("--dtype", default="float32",
                        help="vLLM's --dtype; its CPU build maps 'auto' to bfloat16, whose "
                             "attention kernel dies with SIGILL on some CPUs")
    parser.add_argument("--rps", type=float, default=5.0, help="total offered load")
    parser.add_argument("--num-prompts", type=int, default=300, help="per tool and round")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--sequential", action="store_true", help="one tool after the other")
    parser.add_argument("--client-cpu", default="0", help="taskset CPU list of both clients")
    parser.add_argument("--server-cpus", default="1", help="taskset CPU list of vLLM")
    parser.add_argument("--no-pin", action="store_true", help="share all CPUs")
    parser.add_argument("--out", type=Path, default=Path("results/bench-agreement"))
    args = parser.parse_args()
    if args.no_pin or not shutil.which("taskset"):
        args.client_cpu = args.server_cpus = None
    model = args.model_dir or demo_model_dir()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.url:
        return 0 if compare_rounds(args.url, model, args) else 1
    return 0 if asyncio.run(_with_server(model, args)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
