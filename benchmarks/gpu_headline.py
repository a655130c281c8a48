"""The H100 headline (issue #6 items 5 and 6), run ON the GPU machine, servers one after
another in one process (``benchmarks/gpu/device.sh`` starts it; ``gpu_report.py`` turns
its results into BENCHMARKS.md's table and plots back on the CPU box).

Model: the dsk7b folder of ``../shared/gpu`` (deepseek-llm-7b's shape, dummy weights).
Workload: random 512-in / 128-out prompts, streaming, ``ignore_eos``, mix
interactive=0.2,batch=0.8, the same seed everywhere. Phases, in order of importance:

1. plain vLLM (its own OpenAI server, FCFS, the recipe's flags) at 20 req/s: its TTFT p99
   x 1.5 is the interactive TTFT target; then 50 req/s;
2. plain vLLM ``--scheduling-policy priority`` (interactive 0, batch 2) at 50 req/s;
3. the gateway, one engine (``benchmarks/gpu/gateway-1engine.yaml``) at 50 req/s, then the
   capacity sweep;
4. the gateway, two engines on the GPU (``gateway-2engine.yaml``) at 50 req/s;
5. plain vLLM FCFS again for the capacity sweep.

While a gateway runs, ``/v1/sla`` is sampled every 0.5 s (``sla_<phase>.csv``: the
controller's limit and observed TTFT per engine, queue depths per class). Every phase
writes ``results.json`` as it finishes, so a cut-off run keeps what it measured.

    python3 -m benchmarks.gpu_headline --model /abs/dsk7b --out /tmp/h100/main [--smoke]
        [--phases fcfs,prio,gw1,gw2,fcfs_sweep]   (also: gw1_nosweep, gw1_floor128, gw1_overload,
        gw1_plain, gw1_tf70, gw1_tf80, gw1_pace512, gw1_pace1024, gw1_pace2048,
        gw1_pace1024_f128, gw1@KEY=VALUE+KEY=VALUE...) [--target-ms T]
        (T: the interactive target from an earlier call's fcfs phase)

How it gets there: in the session's checkout, ``PY_TOK=$PWD/.venv/bin/python bash
../shared/gpu/prepare.sh . .gpu`` (vLLM 0.26 for the H100, its deps, the model folder;
~60 MiB), then copy gateway/ scheduler/ engines/ loadtest/ benchmarks/ into ``.gpu/proj``
(the checkout's own tracked copies travel too; running from ``.gpu/proj`` makes these
win), and one ``run`` call with ``carry: [".gpu"]``:
``INSTALL_ONLY=1 bash .gpu/device_run.sh && cd .gpu/proj && bash benchmarks/gpu/device.sh
start 530``, then ``bash benchmarks/gpu/device.sh wait 570`` calls until it prints
DRIVER DONE; unpack the last ``h100.tar.gz`` under results/ and run ``gpu_report.py``.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
import yaml

from benchmarks.common import PY, ROOT, Server, start

MIX = "interactive=0.2,batch=0.8"
PRIORITIES = "interactive=0,batch=2"
SERVED = "dsk7b"
VLLM_PORT, GATEWAY_PORT = 8011, 8000
INTERACTIVE_TPOT_MS, BATCH_TTFT_MS, BATCH_TPOT_MS = 50.0, 30000.0, 200.0
SWEEP_RPS = "9,18,36,54,108"  # 0.25x .. 3x of the ~36 req/s the recipe measured


class Run:
    """One device run: where results go, what was measured so far."""

    def __init__(self, out: Path, model: str, duration: float) -> None:
        self.out, self.model, self.duration = out, model, duration
        self.results: dict[str, Any] = {"device": gpu_name(), "phases": {}, "errors": {}}
        self.target_ms: float | None = None

    def save(self) -> None:
        (self.out / "results.json").write_text(json.dumps(self.results, indent=2))

    def slos(self) -> list[str]:
        target = self.target_ms or 100.0
        return ["--slo", f"interactive:ttft={target:.1f},tpot={INTERACTIVE_TPOT_MS:g}",
                "--slo", f"batch:ttft={BATCH_TTFT_MS:g},tpot={BATCH_TPOT_MS:g}"]

    def workload(self, out: Path) -> list[str]:
        """The loadtest flags every run shares (ignore_eos is the loadtest's default)."""
        return ["--mix", MIX, "--dataset", "random", "--input-len", "512", "--output-len",
                "128", "--tokenizer", self.model, "--out", str(out), "--no-progress",
                "--no-plots", "--seed", "1"]

    def loadtest(self, url: str, name: str, rps: float, *extra: str,
                 duration: float | None = None) -> dict[str, Any]:
        out = self.out / name
        length = ([] if "--num-requests" in extra
                  else ["--duration", str(duration or self.duration)])
        cmd = [PY, "-m", "loadtest", "--url", url, "--rps", str(rps), *length,
               *self.workload(out), *extra]
        log = (self.out / f"{name}.loadtest.log").open("wb")
        started = time.time()
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=log, stderr=subprocess.STDOUT)
        print(f"  {name}: {time.time() - started:.0f} s", flush=True)
        summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
        self.results["phases"][name] = {"cmd": " ".join(cmd[1:]), "summary": summary}
        self.save()
        return summary

    def sweep(self, url: str, name: str, *extra: str) -> None:
        out = self.out / name
        cmd = [PY, "-m", "loadtest", "--url", url, "--sweep-rps", SWEEP_RPS, "--duration", "20",
               "--timeout-s", "60", *self.workload(out), *self.slos(), *extra]
        log = (self.out / f"{name}.loadtest.log").open("wb")
        started = time.time()
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=log, stderr=subprocess.STDOUT)
        print(f"  {name}: {time.time() - started:.0f} s", flush=True)
        self.results["phases"][name] = {"cmd": " ".join(cmd[1:]),
                                        "sweep": json.loads((out / "sweep.json").read_text())}
        self.save()


def gpu_name() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                               "--format=csv,noheader"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def gpu_memory_used_mib() -> int:
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, check=False).stdout
    return int(out.split()[0]) if out.strip() else 0


def wait_gpu_free(timeout: float = 90) -> None:
    """A stopped server's engine processes can outlive it for a moment: the next one's
    memory check must see the card empty."""
    deadline = time.time() + timeout
    while time.time() < deadline and gpu_memory_used_mib() > 2048:
        time.sleep(1)


def stop(server: Server) -> None:
    code = server.stop()
    print(f"  {server.name} stopped ({code})", flush=True)
    wait_gpu_free()


def plain_vllm(run: Run, name: str, *extra: str) -> Server:
    cmd = [PY, "-m", "vllm.entrypoints.openai.api_server", "--model", run.model,
           "--load-format", "dummy", "--dtype", "bfloat16", "--max-model-len", "4096",
           "--served-model-name", SERVED, "--gpu-memory-utilization", "0.85",
           "--disable-uvicorn-access-log", "--port", str(VLLM_PORT), *extra]
    server = start(name, cmd, VLLM_PORT, "/v1/models", run.out, timeout=420)
    print(f"  {name} ready in {server.ready_s:.0f} s", flush=True)
    run.results.setdefault("ready_s", {})[name] = server.ready_s
    return server


def gateway(run: Run, name: str, template: str,
            controller: dict[str, Any] | None = None,
            scheduler: dict[str, Any] | None = None) -> Server:
    """Start the gateway on the run's copy of ``benchmarks/gpu/<template>`` (with
    ``controller`` and ``scheduler`` settings overridden, for a variant; a scheduler key
    ``args.NAME`` sets every engine's vLLM argument NAME instead)."""
    config = yaml.safe_load((ROOT / "benchmarks" / "gpu" / template).read_text())
    settings = dict(scheduler or {})
    engine_args = {key.removeprefix("args."): settings.pop(key)
                   for key in list(settings) if key.startswith("args.")}
    config["scheduler"]["controller"].update(controller or {})
    config["scheduler"].update(settings)
    for engine in config["engines"]:
        engine["model"] = run.model
        engine["args"].update(engine_args)
    for c in config["classes"]:
        if c["name"] == "interactive" and run.target_ms is not None:
            c["ttft_target_ms"] = round(run.target_ms, 1)
    path = run.out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [PY, "-m", "gateway", "--config", str(path), "--port", str(GATEWAY_PORT)]
    server = start(name, cmd, GATEWAY_PORT, "/health/ready", run.out, timeout=480)
    print(f"  {name} ready in {server.ready_s:.0f} s", flush=True)
    run.results.setdefault("ready_s", {})[name] = server.ready_s
    return server


class SlaPoller:
    """Samples ``GET /v1/sla`` every ``period`` s into a CSV, on perf_counter's clock
    (the loadtest's ``run.clock_t0`` is on the same clock)."""

    FIELDS = ("t", "engine", "limit", "inflight", "target_ms", "observed_ms",
              "observed_interactive_ms", "observed_batch_ms", "action",
              "queue_interactive", "queue_batch", "p99_interactive_ms")

    def __init__(self, url: str, path: Path, period: float = 0.5) -> None:
        self.url, self.path, self.period = url, path, period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> SlaPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        with self.path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(self.FIELDS)
            while not self._stop.is_set():
                try:
                    sla = requests.get(f"{self.url}/v1/sla", timeout=5).json()
                except (requests.RequestException, ValueError):
                    self._stop.wait(self.period)
                    continue
                t = time.perf_counter()
                classes = {c["name"]: c for c in sla["classes"]}
                for e in sla["engines"]:
                    by_class = e["observed_ttft_ms_by_class"]
                    writer.writerow([
                        f"{t:.3f}", e["name"], e["concurrency_limit"], e["inflight"],
                        e["ttft_target_ms"], e["observed_ttft_ms"],
                        by_class.get("interactive"), by_class.get("batch"), e["last_action"],
                        classes["interactive"]["queue_depth"], classes["batch"]["queue_depth"],
                        classes["interactive"]["ttft_p99_ms"],
                    ])  # fmt: skip
                handle.flush()
                self._stop.wait(self.period)


# -- phases ------------------------------------------------------------------------------

def phase_fcfs(run: Run) -> None:
    server = plain_vllm(run, "vllm-fcfs")
    try:
        base = run.loadtest(server.url, "vllm-fcfs-20", 20)
        run.target_ms = 1.5 * base["overall"]["ttft_ms"]["p99"]
        run.results["interactive_target_ms"] = run.target_ms
        print(f"  interactive TTFT target: {run.target_ms:.1f} ms", flush=True)
        run.loadtest(server.url, "vllm-fcfs-50", 50, *run.slos())
    finally:
        stop(server)


def phase_priority(run: Run) -> None:
    server = plain_vllm(run, "vllm-prio", "--scheduling-policy", "priority")
    try:
        run.loadtest(server.url, "vllm-prio-50", 50, "--priority", PRIORITIES, *run.slos())
    finally:
        stop(server)


def phase_gateway(run: Run, name: str, template: str, sweep: bool,
                  controller: dict[str, Any] | None = None,
                  scheduler: dict[str, Any] | None = None) -> None:
    server = gateway(run, name, template, controller, scheduler)
    try:
        with SlaPoller(server.url, run.out / f"sla_{name}.csv"):
            run.loadtest(server.url, f"{name}-50", 50, *run.slos())
            run.results["phases"][f"{name}-50"]["sla_after"] = requests.get(
                f"{server.url}/v1/sla", timeout=10).json()
            if sweep:
                run.sweep(server.url, f"{name}-sweep")
        run.results.setdefault("metrics", {})[name] = requests.get(
            f"{server.url}/metrics", timeout=10).text[-20000:]
    finally:
        stop(server)


def overload_on(run: Run, server: Server, duration: float = 60) -> None:
    """Issue #5's overload figures where the gateway has CPU cores of its own: 2x the
    capacity plain vLLM FCFS showed at 50 req/s (40 req/s if that phase did not run),
    probed as ``benchmarks.reliability`` does (health at 10 Hz, /metrics at 1 Hz)."""
    from benchmarks.reliability import overload

    fcfs = run.results["phases"].get("vllm-fcfs-50")
    capacity = fcfs["summary"]["overall"]["request_throughput"] if fcfs else 40.0
    rps = round(2 * capacity, 1)
    report = overload(server, run.model, run.out, rps, duration, load=lambda _dir: run.loadtest(
        server.url, "overload", rps, "--warmup-s", "0", *run.slos(), duration=duration))
    report["capacity_rps"] = capacity
    run.results["overload"] = report
    run.save()
    print(json.dumps(report, indent=1), flush=True)


def phase_gateway_then_overload(run: Run) -> None:
    """The one-engine headline at 50 req/s, then the overload, on one gateway start (a
    device call's ten minutes hold one vLLM start and one gateway start, not two)."""
    server = gateway(run, "gw1", "gateway-1engine.yaml")
    try:
        with SlaPoller(server.url, run.out / "sla_gw1.csv"):
            run.loadtest(server.url, "gw1-50", 50, *run.slos())
        overload_on(run, server)
    finally:
        stop(server)


def phase_fcfs_sweep(run: Run) -> None:
    server = plain_vllm(run, "vllm-fcfs-b")
    try:
        run.sweep(server.url, "vllm-fcfs-sweep")
    finally:
        stop(server)


def smoke(run: Run) -> None:
    """Two-engine gateway up, 20 requests through it, /v1/sla and /metrics answer."""
    server = gateway(run, "smoke-gw2", "gateway-2engine.yaml")
    try:
        with SlaPoller(server.url, run.out / "sla_smoke.csv"):
            s = run.loadtest(server.url, "smoke", 5, "--num-requests", "20", "--warmup-s", "0",
                             *run.slos())
        sla = requests.get(f"{server.url}/v1/sla", timeout=10).json()
        print(json.dumps(sla["engines"], indent=1))
        overall = s["overall"]
        print(f"SMOKE ok={overall['ok']}/{overall['sent']} errors={overall['errors']} "
              f"ttft p50={overall['ttft_ms']['p50']} tpot p50={overall['tpot_ms']['p50']}")
        if overall["ok"] != 20:
            raise RuntimeError(f"smoke: {overall['ok']} of 20 ok: {s['detail']}")
    finally:
        stop(server)


CONTROLLER_KEYS = {"initial_limit", "min_limit", "increase", "decrease", "quantile",
                   "target_fraction", "min_gain", "futile_hold_s"}


def variant(spec: str) -> Callable[[Run], None]:
    """``gw1@min_limit=144+prefill_budget_tokens=1536``: the one-engine gateway with
    those controller (``CONTROLLER_KEYS``) and scheduler settings (``args.NAME=V``: the
    engine's vLLM argument), named after them."""
    head, _, body = spec.partition("@")
    if head != "gw1" or not body:
        raise KeyError(f"unknown phase {spec!r}")
    controller: dict[str, Any] = {}
    scheduler: dict[str, Any] = {}
    for item in body.split("+"):
        key, _, value = item.partition("=")
        (controller if key in CONTROLLER_KEYS else scheduler)[key] = yaml.safe_load(value)
    name = "gw1_" + "_".join(f"{k}{v}" for k, v in {**controller, **scheduler}.items())
    return lambda r: phase_gateway(r, name, "gateway-1engine.yaml", sweep=False,
                                   controller=controller, scheduler=scheduler)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, help="absolute path of the dsk7b folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--duration", type=float, default=45)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--phases", default="fcfs,prio,gw1,gw2,fcfs_sweep")
    parser.add_argument("--target-ms", type=float, default=None,
                        help="interactive TTFT target when this call runs no fcfs phase")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    run = Run(args.out, args.model, args.duration)
    if args.target_ms is not None:
        run.target_ms = args.target_ms
        run.results["interactive_target_ms"] = args.target_ms
    if args.smoke:
        smoke(run)
        return
    phases: dict[str, Callable[[Run], None]] = {
        "fcfs": phase_fcfs,
        "prio": phase_priority,
        "gw1": lambda r: phase_gateway(r, "gw1", "gateway-1engine.yaml", sweep=True),
        "gw1_nosweep": lambda r: phase_gateway(r, "gw1", "gateway-1engine.yaml", sweep=False),
        "gw2": lambda r: phase_gateway(r, "gw2", "gateway-2engine.yaml", sweep=False),
        # run 2's controller sat on its floor (96) through the overload: a higher floor
        "gw1_floor128": lambda r: phase_gateway(r, "gw1f128", "gateway-1engine.yaml",
                                                sweep=False, controller={"min_limit": 128}),
        # the same gateway with plain AIMD (no undoing of cuts that bought nothing)
        "gw1_plain": lambda r: phase_gateway(r, "gw1plain", "gateway-1engine.yaml",
                                             sweep=False, controller={"futile_hold_s": 0}),
        # the controller's engine-side aim at 0.7 / 0.8 of T instead of 0.6: a bigger batch
        "gw1_tf70": lambda r: phase_gateway(r, "gw1tf70", "gateway-1engine.yaml",
                                            sweep=False, controller={"target_fraction": 0.7}),
        "gw1_tf80": lambda r: phase_gateway(r, "gw1tf80", "gateway-1engine.yaml",
                                            sweep=False, controller={"target_fraction": 0.8}),
        # batch starts paced by the prompt tokens it has in prefill (prefill_budget_tokens)
        "gw1_pace1024": lambda r: phase_gateway(r, "gw1p1024", "gateway-1engine.yaml",
                                                sweep=False,
                                                scheduler={"prefill_budget_tokens": 1024}),
        "gw1_pace2048": lambda r: phase_gateway(r, "gw1p2048", "gateway-1engine.yaml",
                                                sweep=False,
                                                scheduler={"prefill_budget_tokens": 2048}),
        "gw1_pace512": lambda r: phase_gateway(r, "gw1p512", "gateway-1engine.yaml",
                                               sweep=False,
                                               scheduler={"prefill_budget_tokens": 512}),
        # pacing with a floor of 128 sequences (throughput ~ sequences in the engine)
        "gw1_pace1024_f128": lambda r: phase_gateway(
            r, "gw1p1024f128", "gateway-1engine.yaml", sweep=False,
            controller={"min_limit": 128}, scheduler={"prefill_budget_tokens": 1024}),
        "fcfs_sweep": phase_fcfs_sweep,
        "gw1_overload": phase_gateway_then_overload,
    }
    t0 = time.time()
    for name in args.phases.split(","):
        print(f"[{time.time() - t0:5.0f} s] phase {name}", flush=True)
        try:
            (phases[name] if name in phases else variant(name))(run)
        except Exception as exc:  # one broken phase must not cost the others
            traceback.print_exc()
            run.results["errors"][name] = repr(exc)[:2000]
            wait_gpu_free()
        run.save()
    print(f"[{time.time() - t0:5.0f} s] done", flush=True)
    (args.out / "DONE").write_text("done\n")


if __name__ == "__main__":
    main()
