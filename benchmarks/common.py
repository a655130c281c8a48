"""Shared pieces of the benchmark scripts: start/stop servers, run the loadtest.

Servers run one at a time (the box has 2 cores): each benchmark starts a server,
measures, stops it, then starts the next, all within one script run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def demo_model() -> str:
    out = subprocess.run([PY, "-m", "engines.demo_model"], cwd=ROOT, check=True,
                         capture_output=True, text=True)
    return out.stdout.strip()


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    started: float  # perf_counter at spawn
    ready_s: float = 0.0

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def start(name: str, cmd: list[str], port: int, ready_path: str, out: Path,
          env: dict[str, str] | None = None, timeout: float = 600) -> Server:
    log = out / f"{name}.log"
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})})
    server = Server(name, proc, f"http://127.0.0.1:{port}", log, started)
    while time.perf_counter() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {log.read_text()[-3000:]}")
        try:
            if requests.get(server.url + ready_path, timeout=2).status_code == 200:
                server.ready_s = time.perf_counter() - started
                return server
        except (requests.ConnectionError, requests.Timeout):
            pass  # not listening yet, or too busy starting to answer within 2 s
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"{name} not ready in {timeout}s")


def plain_vllm(model: str, port: int, out: Path, *extra: str, kv_gib: int = 2) -> Server:
    cmd = [PY, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
           "--served-model-name", "slagate-demo", "--max-model-len", "2048", "--enforce-eager",
           "--dtype", "float32", "--port", str(port), *extra]
    return start("vllm" + "-".join(("", *[e.lstrip("-") for e in extra if e.startswith("--")])),
                 cmd, port, "/v1/models", out, env={"VLLM_CPU_KVCACHE_SPACE": str(kv_gib)})


def gateway(port: int, out: Path, config: Path | None = None, name: str = "gateway") -> Server:
    cmd = [PY, "-m", "gateway", "--port", str(port)]
    if config is not None:
        cmd += ["--config", str(config)]
    return start(name, cmd, port, "/health/ready", out)


def first_token_s(url: str, prompt: str = "Hello there, how are you today?",
                  max_tokens: int = 16) -> float:
    """Send one streaming completion; seconds until the first content event."""
    sent = time.perf_counter()
    with requests.post(f"{url}/v1/completions", stream=True, timeout=120, json={
            "model": "slagate-demo", "prompt": prompt, "max_tokens": max_tokens,
            "stream": True, "ignore_eos": True}) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith(b"data: {"):
                return time.perf_counter() - sent
    raise RuntimeError("no token")


def loadtest(url: str, out: Path, rps: float, duration: float, model_dir: str,
             mix: str = "interactive=0.2,batch=0.8", *extra: str) -> dict[str, Any]:
    cmd = [PY, "-m", "loadtest", "--url", url, "--rps", str(rps), "--duration", str(duration),
           "--mix", mix, "--dataset", "random", "--input-len", "256", "--output-len", "64",
           "--tokenizer", model_dir, "--out", str(out), "--no-progress", "--seed", "1", *extra]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return summary
