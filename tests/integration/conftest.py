"""A real gateway process (``python -m gateway``) on real vLLM engines.

Started once per test session on the embedded default (two engines on the demo
model) and shared; tests that need their own process (SIGTERM) start one with
``start_gateway``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 420


@dataclass
class GatewayProcess:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples whose labels include ``labels``."""
        text = requests.get(f"{self.url}/metrics", timeout=10).text
        total, found = 0.0, False
        for line in text.splitlines():
            if not line.startswith(name) or line.startswith("#"):
                continue
            series, value = line.rsplit(" ", 1)
            if series.split("{", 1)[0] != name:
                continue
            if all(f'{k}="{v}"' in series for k, v in labels.items()):
                total += float(value)
                found = True
        if not found and not labels:
            raise KeyError(name)
        return total

    def terminate(self, timeout: float = 120) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_gateway(tmp: Path, config: Path | None = None) -> GatewayProcess:
    port = free_port()
    log = tmp / f"gateway-{port}.log"
    cmd = [sys.executable, "-m", "gateway", "--port", str(port)]
    if config is not None:
        cmd += ["--config", str(config)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            env=os.environ.copy())
    gw = GatewayProcess(proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}:\n{gw.logs()[-5000:]}")
        try:
            if requests.get(f"{gw.url}/health/ready", timeout=2).status_code == 200:
                return gw
        except requests.RequestException:  # refused, or a poll that timed out under load
            pass
        time.sleep(0.5)
    gw.terminate()
    raise RuntimeError(f"gateway not ready in {START_TIMEOUT_S}s:\n{gw.logs()[-5000:]}")


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gw = start_gateway(tmp_path_factory.mktemp("gateway"))
    yield gw
    code = gw.terminate()
    assert code == 0, gw.logs()[-5000:]


@pytest.fixture(scope="session")
def model_name(gateway: GatewayProcess) -> str:
    data = requests.get(f"{gateway.url}/v1/models", timeout=10).json()
    return str(data["data"][0]["id"])


def wait_engines_idle(gw: GatewayProcess, timeout: float = 5.0) -> float:
    """Seconds until no engine has an in-flight, running or waiting request."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if (gw.metric("gateway_engine_inflight") == 0
                and gw.metric("gateway_engine_running") == 0
                and gw.metric("gateway_engine_waiting") == 0):
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError("engines still busy after the client left")
