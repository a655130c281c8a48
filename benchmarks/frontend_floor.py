"""Front-end floor (issue #6 item 1) and token coalescing (item 2), one run, ratios.

    .venv/bin/python -m benchmarks.frontend_floor [--duration 8] [--out results/frontend_floor]

Servers run one at a time pinned to CPU 0 (``taskset -c 0``), load runs on CPU 1:

1. ``benchmarks.bare_server`` (aiohttp + uvloop + orjson, a few lines) against the
   full gateway path (``benchmarks.sim_gateway --zero-cost``: validation, tokenizer,
   scheduler, wire format, metrics; engine steps cost nothing), coalescing off
   and on. Non-streaming req/s by ``wrk`` (POST, 8 output tokens, 32 connections);
   SSE events/s by ``benchmarks.sse_load`` (512 tokens per stream, 32 streams).
   Targets: gateway req/s >= 50% of bare, SSE events/s >= 70% of bare.
   A third gateway run uses ``--null-engine`` (every token yielded at once, no
   batch loop): the gateway's own cost without the simulator's.
2. Coalescing at high concurrency: the gateway with coalescing off vs on, 256
   streams: tokens/s, events/s, and TTFT p50/p99 (first token is never held).

Numbers on a shared box are noisy: read the ratios, which come from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

from benchmarks.common import PY, ROOT, Server, start
from loadtest.launcher import free_port

WRK_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model": "slagate-demo", "prompt": "Hello there, how are you today?", \
"max_tokens": 8, "ignore_eos": true}'
"""


def pinned(cpu: int, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *cmd] if shutil.which("taskset") else cmd


def serve(name: str, module: str, port: int, out: Path, *args: str,
          env: dict[str, str] | None = None) -> Server:
    return start(name, pinned(0, [PY, "-m", module, "--port", str(port), *args]), port,
                 "/health/ready", out, env=env, timeout=180)


def cpu_s(server: Server) -> float:
    """CPU seconds the server process has used so far (user + system)."""
    times = psutil.Process(server.proc.pid).cpu_times()
    return float(times.user + times.system)


def wrk(url: str, duration: float, out: Path, connections: int = 32) -> dict[str, float]:
    script = out / "post.lua"
    script.write_text(WRK_LUA)
    done = subprocess.run(pinned(1, ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s",
                                     "-s", str(script), url + "/v1/completions"]),
                          check=True, capture_output=True, text=True)
    text = done.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors: (.*)", text)
    return {"req_per_s": rps, "requests": total, "non_2xx": float(bad.group(1)) if bad else 0.0,
            "socket_errors": 0.0 if errors is None else 1.0}


def sse(url: str, duration: float, concurrency: int, max_tokens: int = 512) -> dict[str, Any]:
    done = subprocess.run(pinned(1, [PY, "-m", "benchmarks.sse_load", "--url", url,
                                     "--concurrency", str(concurrency), "--max-tokens",
                                     str(max_tokens), "--duration", str(duration)]),
                          cwd=ROOT, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure(server: Server, duration: float, out: Path, plain: bool = True,
            high: int = 0) -> dict[str, Any]:
    # A short warm-up pass first: first-call paths (imports, caches) are not the floor.
    sse(server.url, 1, 4, 32)
    result: dict[str, Any] = {}
    # Server CPU per request or token, next to throughput: on a shared box the
    # throughput is whatever CPU share the server got, its CPU cost per unit of
    # work is not. 1 / cost is the rate one whole core would sustain.
    if plain:
        before = cpu_s(server)
        result["plain"] = wrk(server.url, duration, out)
        result["plain"]["cpu_us_per_req"] = ((cpu_s(server) - before) * 1e6
                                             / max(1, result["plain"]["requests"]))
        before = cpu_s(server)
        result["sse"] = sse(server.url, duration, 32)
        result["sse"]["cpu_us_per_token"] = ((cpu_s(server) - before) * 1e6
                                             / max(1, result["sse"]["streams"] * 512))
    if high:
        before = cpu_s(server)
        result["sse_high"] = sse(server.url, duration, high)
        result["sse_high"]["cpu_us_per_token"] = ((cpu_s(server) - before) * 1e6
                                                  / max(1, result["sse_high"]["streams"] * 512))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--high-concurrency", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path("results/frontend_floor"))
    parser.add_argument("--report-only", action="store_true",
                        help="print the tables of OUT/frontend_floor.json again, run nothing")
    args = parser.parse_args()
    if args.report_only:
        print(report(json.loads((args.out / "frontend_floor.json").read_text())))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    runs = [
        ("bare", "benchmarks.bare_server", (), {}, True, 0),
        ("gateway", "benchmarks.sim_gateway", ("--zero-cost",), {"SLAGATE_COALESCE": "0"},
         True, args.high_concurrency),
        ("gateway_coalescing", "benchmarks.sim_gateway", ("--zero-cost",),
         {"SLAGATE_COALESCE": "1"}, True, args.high_concurrency),
        ("gateway_null", "benchmarks.sim_gateway", ("--null-engine",), {"SLAGATE_COALESCE": "0"},
         True, 0),
    ]
    results["high"] = args.high_concurrency
    for name, module, extra, env, plain, high in runs:
        # A fresh free port each: a server left over on a fixed port would answer
        # the readiness probe in the new one's place.
        server = serve(name, module, free_port(), args.out, *extra, env=env)
        try:
            results[name] = measure(server, args.duration, args.out, plain, high)
        finally:
            server.stop()
        print(f"{name}: {json.dumps(results[name])}", file=sys.stderr, flush=True)
    results["load_average"] = os.getloadavg()
    (args.out / "frontend_floor.json").write_text(json.dumps(results, indent=2))
    print(report(results))


COLUMNS = (("gateway", "gateway, coalescing off"), ("gateway_coalescing", "gateway, coalescing on"),
           ("gateway_null", "gateway, null engine"))


def report(r: dict[str, Any]) -> str:
    bare = r["bare"]
    cols = [(key, label) for key, label in COLUMNS if key in r]
    rows = ["| one core each, load on the other | bare aiohttp | "
            + " | ".join(f"{label} | ratio" for _, label in cols) + " | target |",
            "|---|---|" + "---|---|" * len(cols) + "---|"]

    def row(label: str, key: str, metric: str, target: str, inverse: bool = False) -> None:
        # inverse: a cost (CPU per unit), whose ratio is bare / gateway.
        b = bare[key][metric]
        cells = []
        for name, _ in cols:
            g = r[name][key][metric]
            ratio = (b / g if inverse else g / b) if g and b else float("nan")
            cells.append(f"{g:,.1f} | {ratio:.2f}")
        rows.append(f"| {label} | {b:,.1f} | " + " | ".join(cells) + f" | {target} |")

    row("non-streaming req/s (8 tokens, wrk, 32 conns)", "plain", "req_per_s", ">= 0.50")
    row("server CPU us per non-streaming request (ratio bare/this)", "plain",
        "cpu_us_per_req", ">= 0.50", inverse=True)
    row("SSE events/s (512 tokens, 32 streams)", "sse", "events_per_s", ">= 0.70")
    row("SSE tokens/s (512 tokens, 32 streams)", "sse", "tokens_per_s", "")
    row("server CPU us per streamed token (ratio bare/this)", "sse", "cpu_us_per_token",
        ">= 0.70", inverse=True)
    hi_off, hi_on = r["gateway"]["sse_high"], r["gateway_coalescing"]["sse_high"]
    rows += ["", f"Coalescing, {r['high']} concurrent streams of 512 tokens "
             "(gateway, zero-cost engine):", "",
             "| | coalescing off | coalescing on | on / off |", "|---|---|---|---|"]
    for label, metric in (("tokens/s", "tokens_per_s"), ("SSE events/s", "events_per_s"),
                          ("TTFT p50 ms", "ttft_p50_ms"), ("TTFT p99 ms", "ttft_p99_ms"),
                          ("server CPU us per token", "cpu_us_per_token")):
        a, b = hi_off[metric], hi_on[metric]
        ratio = f"{b / a:.2f}" if a else "n/a"
        rows.append(f"| {label} | {a:,.1f} | {b:,.1f} | {ratio} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
