"""The real Prometheus scrapes a real gateway: our series arrive and the dashboard's
queries run on them.

Prometheus is Debian's ``prometheus`` (``make tools``), started on a free port with
``deploy/prometheus/prometheus.yml`` pointed at the test's gateway and a 1 s interval.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.integration.conftest import GatewayProcess, free_port, start_gateway
from tests.observability.deploy_files import PROMETHEUS_YML, dashboard_queries, load_yaml
from tests.observability.promql import as_promql

pytestmark = pytest.mark.vllm

CLASSES = ("interactive", "standard", "batch")
ROUNDS = 2
WAIT_S = 60
# Rate window for the dashboard's queries: wide enough to hold the test's traffic.
WINDOW = "5m"
# Panels with no series after this traffic: nothing was shed; GPU gauges need a GPU.
HAS_GPU = Path("/proc/driver/nvidia/gpus").is_dir()
EMPTY_HERE = {"Shed rate by reason"} | (set() if HAS_GPU else {"GPU utilization", "GPU memory"})

Result = list[dict[str, Any]]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gw = start_gateway(tmp_path_factory.mktemp("obs-gateway"))
    yield gw
    assert gw.terminate() == 0, gw.logs()[-5000:]


@pytest.fixture(scope="module")
def traffic(gateway: GatewayProcess, prometheus: str) -> None:
    """Rounds of one request per class, a few scrapes apart: every counter and
    histogram has risen between two scrapes, so ``rate()`` sees it."""
    wait_for(prometheus, 'up{job="slagate"}', bool)
    model = requests.get(f"{gateway.url}/v1/models", timeout=10).json()["data"][0]["id"]
    for i in range(ROUNDS):
        if i:
            time.sleep(2.5)
        for sla_class in CLASSES:
            reply = requests.post(f"{gateway.url}/v1/completions", timeout=120, json={
                "model": model, "prompt": f"metrics please {i}", "max_tokens": 8,
                "ignore_eos": True, "service_tier": sla_class})
            assert reply.status_code == 200, reply.text


@pytest.fixture(scope="module")
def prometheus(gateway: GatewayProcess,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("prometheus")
    config = load_yaml(PROMETHEUS_YML)
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            static["targets"] = [gateway.url.removeprefix("http://")]
    config_path = tmp / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    log = tmp / "prometheus.log"
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={config_path}", f"--storage.tsdb.path={tmp / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + WAIT_S
        while not _ready(url):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/-/ready", timeout=2).status_code == 200
    except requests.RequestException:  # not listening yet, or slow on a loaded machine
        return False


def query(prometheus: str, expr: str) -> Result:
    reply = requests.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    body = reply.json()
    assert reply.status_code == 200 and body["status"] == "success", (expr, body)
    result: Result = body["data"]["result"]
    return result


def wait_for(prometheus: str, expr: str, done: Callable[[Result], bool]) -> Result:
    """Query until ``done(result)``: scrapes arrive every second."""
    deadline = time.monotonic() + WAIT_S
    while True:
        result = query(prometheus, expr)
        if done(result):
            return result
        assert time.monotonic() < deadline, f"{expr}: still {result}"
        time.sleep(0.5)


def values_are(expected: list[float]) -> Callable[[Result], bool]:
    return lambda result: [float(r["value"][1]) for r in result] == expected


def by_label(result: Result, label: str) -> dict[str, float]:
    return {r["metric"][label]: float(r["value"][1]) for r in result}


def test_the_gateway_target_is_up(prometheus: str) -> None:
    up = wait_for(prometheus, 'up{job="slagate"}', bool)
    assert [float(r["value"][1]) for r in up] == [1.0]
    targets = requests.get(f"{prometheus}/api/v1/targets", timeout=10).json()["data"]
    [target] = targets["activeTargets"]
    assert target["health"] == "up", target
    assert target["scrapeUrl"].endswith("/metrics")


def test_request_counts_arrive_per_class(prometheus: str, gateway: GatewayProcess,
                                         traffic: None) -> None:
    for sla_class in CLASSES:
        own = gateway.metric("gateway_requests_total", **{"class": sla_class, "outcome": "ok"})
        assert own >= ROUNDS
        expr = f'gateway_requests_total{{class="{sla_class}",outcome="ok"}}'
        wait_for(prometheus, expr, values_are([own]))


def test_engine_series_arrive_per_engine(prometheus: str, traffic: None) -> None:
    engines = {"fast", "bulk"}  # the embedded default's engines
    for name in ("gateway_engine_kv_cache_usage", "gateway_engine_running",
                 "gateway_engine_waiting", "gateway_engine_preemptions_total",
                 "gateway_engine_concurrency_limit", "gateway_engine_healthy"):
        result = wait_for(prometheus, name, lambda r: set(by_label(r, "engine")) == engines)
        if name == "gateway_engine_kv_cache_usage":
            assert all(0.0 <= v <= 1.0 for v in by_label(result, "engine").values())
        if name == "gateway_engine_healthy":
            assert set(by_label(result, "engine").values()) == {1.0}
    targets = by_label(query(prometheus, "gateway_ttft_target_seconds"), "class")
    assert set(targets) == set(CLASSES) and all(v > 0 for v in targets.values())


def test_every_dashboard_query_runs_and_has_data(prometheus: str, traffic: None) -> None:
    queries = dashboard_queries()
    for title, expr in queries:
        promql = as_promql(expr, WINDOW)
        if title in EMPTY_HERE:
            assert query(prometheus, promql) == [], title  # parsed, evaluated, no series
        else:
            wait_for(prometheus, promql, bool)
    ttft_p99 = next(e for t, e in queries if t == "TTFT p99 by class vs target" and "quantile" in e)
    ttft = by_label(query(prometheus, as_promql(ttft_p99, WINDOW)), "class")
    assert set(ttft) == set(CLASSES)
    assert all(0 < v < 60 for v in ttft.values())

