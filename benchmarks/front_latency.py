"""What the front end alone adds to TTFT at light load (issue #6 item 3's floor).

`benchmarks/added_latency.py` compares vLLM driven in process with vLLM behind the
gateway over HTTP, so its "added" TTFT holds the HTTP round trip too, which any server
pays. This measures that part by itself, one server after another, driven by the same
`python -m loadtest` at ``--rps`` (random 64-in/16-out, streaming, ``ignore_eos``):

- **bare**: `benchmarks/bare_server.py` (aiohttp + uvloop + orjson, one SSE event per
  token, nothing else): the client's and the HTTP stack's share;
- **null**: the gateway (`benchmarks/sim_gateway.py --null-engine`: every token at once,
  no batch loop), the gateway's own path on top of that;
- **zero**: the gateway over the simulated engine with free steps (`--zero-cost`).

    .venv/bin/python -m benchmarks.front_latency [--rps 5] [--duration 15]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.common import PY, ROOT, demo_model, loadtest, start

SERVERS = (
    ("bare", ["-m", "benchmarks.bare_server"]),
    ("null", ["-m", "benchmarks.sim_gateway", "--null-engine"]),
    ("zero", ["-m", "benchmarks.sim_gateway", "--zero-cost"]),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rps", type=float, default=5)
    parser.add_argument("--duration", type=float, default=15)
    parser.add_argument("--port", type=int, default=8412)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "front_latency")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model = demo_model()
    rows = {}
    for name, cmd in SERVERS:
        server = start(name, [PY, *cmd, "--port", str(args.port)], args.port, "/health/ready",
                       args.out)
        try:
            summary = loadtest(server.url, args.out / name, args.rps, args.duration, model,
                               "interactive=1", "--input-len", "64", "--output-len", "16",
                               "--model", "slagate-demo", "--no-plots")
        finally:
            server.stop()
        ttft = summary["overall"]["ttft_ms"]
        rows[name] = {"p50": ttft["p50"], "p99": ttft["p99"],
                      "ok": summary["overall"]["ok"], "sent": summary["overall"]["sent"]}
        print(json.dumps({name: rows[name]}), flush=True)
    (args.out / "front_latency.json").write_text(json.dumps(rows, indent=1))
    bare = rows["bare"]
    print(f"\n| {args.rps:g} req/s, 64-in/16-out | TTFT p50 (ms) | TTFT p99 (ms) "
          "| p50 over bare | p99 over bare |\n|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['p50']:.2f} | {r['p99']:.2f} | {r['p50'] - bare['p50']:+.2f} "
              f"| {r['p99'] - bare['p99']:+.2f} |")


if __name__ == "__main__":
    main()
