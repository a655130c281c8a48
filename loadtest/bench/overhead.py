"""Self-overhead: can the instrument drive N streaming req/s on one core, and how exact is it?

    python -m loadtest.bench.overhead [--rps 500] [--duration 60] [--output-len 16]
        [--client-cpu 0] [--server-cpu 1 [2 ...]] [--out results/bench-overhead]

Starts the zero-latency fake server pinned to ``--server-cpu`` (one process per CPU given,
sharing the port) and ``python -m loadtest`` pinned to ``--client-cpu`` (``taskset``), then
joins the client's records with the servers' own timestamps (both read CLOCK_MONOTONIC) by
``X-Request-Id``:

* send lag -- actual send minus the arrival process's due time (open-loop fidelity);
* request delay -- server handler start minus the client's send stamp;
* notice delay -- the client's first-token stamp minus the server's first write;
* TTFT error -- measured TTFT minus the server's own TTFT (the sum of the two above):
  how much the instrument adds to every latency it reports.

It passes when the achieved rate is within 2% of the offered one, no request failed, and
the TTFT error's p99 is under 1 ms.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import orjson

from loadtest.launcher import free_port

ERROR_LIMIT_MS = 1.0


def _pinned(cpu: int, args: list[str]) -> list[str]:
    """``args`` run on CPU ``cpu`` only, where taskset exists."""
    return ["taskset", "-c", str(cpu), *args] if shutil.which("taskset") else args


def _stats(name: str, values_ms: np.ndarray) -> str:
    p50, p99 = np.percentile(values_ms, [50, 99])
    return f"{name:<15} p50 {p50:7.3f}  p99 {p99:7.3f}  max {values_ms.max():7.3f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rps", type=float, default=500.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--output-len", type=int, default=16)
    parser.add_argument("--client-cpu", type=int, default=0)
    parser.add_argument("--server-cpu", type=int, nargs="+", default=[1],
                        help="one fake server process per CPU given (sharing the port)")
    parser.add_argument("--out", type=Path, default=Path("results/bench-overhead"))
    args = parser.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args.out.mkdir(parents=True, exist_ok=True)
    logs = [args.out / f"fake_server_{i}.json" for i in range(len(args.server_cpu))]
    servers = [
        subprocess.Popen(
            _pinned(cpu, [sys.executable, "-m", "loadtest.bench.fake_server", "--port",
                          str(port), "--reuse-port", "--log-file", str(log)]),
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        for cpu, log in zip(args.server_cpu, logs, strict=True)
    ]
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url + "/health/ready", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(1.0)  # let every instance bind before the run
        client = _pinned(args.client_cpu, [
            sys.executable, "-m", "loadtest", "--url", url, "--rps", str(args.rps),
            "--duration", str(args.duration), "--input-len", "16",
            "--output-len", str(args.output_len), "--no-progress", "--no-plots",
            "--out", str(args.out)])
        print("$", " ".join(client), flush=True)
        done = subprocess.run(client, check=False)
        if done.returncode != 0:
            return done.returncode
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)
    server_log = [entry for log in logs for entry in orjson.loads(log.read_bytes())]

    summary = orjson.loads((args.out / "summary.json").read_bytes())
    t0, prefix = summary["run"]["clock_t0"], summary["run"]["request_id_prefix"]
    by_id = {rid: (recv, first) for rid, recv, first, _ in server_log}
    send_lag, request_delay, notice_delay = [], [], []
    with (args.out / "requests.csv").open() as handle:
        for row in csv.DictReader(handle):
            if row["phase"] != "measured" or row["outcome"] != "ok":
                continue
            recv_ns, first_ns = by_id[f"{prefix}-{row['index']}"]
            send = t0 + float(row["send_s"])
            first_seen = send + float(row["ttft_ms"]) / 1000
            send_lag.append((float(row["send_s"]) - float(row["due_s"])) * 1000)
            request_delay.append((recv_ns / 1e9 - send) * 1000)
            notice_delay.append((first_seen - first_ns / 1e9) * 1000)
    overall = summary["overall"]
    error = np.array(request_delay) + np.array(notice_delay)
    timeline = list(csv.DictReader((args.out / "timeline.csv").open()))
    cpu = [float(r["loadtest_cpu_percent"]) for r in timeline if r["loadtest_cpu_percent"]]
    offered = overall["sent"] / args.duration  # the Poisson draw's actual rate
    print(f"offered {args.rps:g} req/s for {args.duration:g} s, {args.output_len} tokens each: "
          f"sent {overall['sent']}, ok {overall['ok']}, errors {overall['errors']}")
    print(f"achieved {overall['request_throughput']:.1f} req/s "
          f"({overall['output_tokens_per_s']:,.0f} tok/s, {offered:.1f} req/s sent); "
          f"loadtest CPU mean {np.mean(cpu):.0f}% of one core, max {np.max(cpu):.0f}%")
    print(_stats("send lag", np.array(send_lag)))
    print(_stats("request delay", np.array(request_delay)))
    print(_stats("notice delay", np.array(notice_delay)))
    print(_stats("TTFT error", error))
    ttft = overall["ttft_ms"]
    print(f"measured TTFT   p50 {ttft['p50']:7.3f}  p99 {ttft['p99']:7.3f} ms "
          "(against a zero-latency server)")
    passed = (overall["errors"] == 0 and overall["ok"] == overall["sent"]
              and overall["request_throughput"] >= 0.98 * offered >= 0.95 * 0.98 * args.rps
              and np.percentile(error, 99) < ERROR_LIMIT_MS)
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
