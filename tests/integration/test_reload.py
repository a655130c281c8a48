"""Config hot reload on a real gateway process (real vLLM on the demo model): SIGHUP
and POST /admin/reload swap classes and keys atomically, a bad file is refused while
the old config keeps serving, and a stream in flight across a reload is unaffected."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from gateway.auth import hash_key
from tests.integration.conftest import GatewayProcess, start_gateway

pytestmark = pytest.mark.vllm

CLIENT, ADMIN, LATER = "sk-reload-client", "sk-reload-admin", "sk-reload-later"


def config_text(interactive_ttft_ms: int = 1000, *, keys: tuple[str, ...] = (CLIENT,),
                max_num_seqs: int = 8) -> str:
    key_list = "".join(f'    - {{hash: "{hash_key(k)}", tenant: t{i}}}\n'
                       for i, k in enumerate(keys))
    return f"""\
classes:
  - {{name: interactive, rank: 0, ttft_target_ms: {interactive_ttft_ms}}}
  - {{name: standard, rank: 1, ttft_target_ms: 3000}}
  - {{name: batch, rank: 2, ttft_target_ms: 30000}}
engines:
  - name: solo
    model: demo
    classes: [interactive, standard, batch]
    env: {{VLLM_CPU_KVCACHE_SPACE: "1"}}
    warmup: {{ladder: [32]}}
    args: {{max_model_len: 2048, max_num_seqs: {max_num_seqs}, enforce_eager: true}}
auth:
  keys:
{key_list}  admin_keys: ["{hash_key(ADMIN)}"]
  metrics_public: true
"""


@pytest.fixture(scope="module")
def gw_and_config(tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[tuple[GatewayProcess, Path]]:
    tmp = tmp_path_factory.mktemp("reload")
    config = tmp / "reload.yaml"
    config.write_text(config_text())
    gateway = start_gateway(tmp, config)
    yield gateway, config
    assert gateway.terminate() == 0, gateway.logs()[-5000:]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def sla(gw: GatewayProcess) -> dict[str, object]:
    data: dict[str, object] = requests.get(f"{gw.url}/v1/sla", headers=auth(ADMIN),
                                           timeout=10).json()
    return data


def interactive_target(gw: GatewayProcess) -> float:
    classes = sla(gw)["classes"]
    assert isinstance(classes, list)
    return float(next(c for c in classes if c["name"] == "interactive")["ttft_target_ms"])


def generation(gw: GatewayProcess) -> int:
    config = sla(gw)["config"]
    assert isinstance(config, dict)
    return int(config["generation"])


def wait_generation(gw: GatewayProcess, wanted: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while generation(gw) != wanted:
        assert time.monotonic() < deadline, f"generation never became {wanted}"
        time.sleep(0.1)


def complete(gw: GatewayProcess, key: str, **fields: object) -> requests.Response:
    return requests.post(f"{gw.url}/v1/completions", headers=auth(key), timeout=120,
                         json={"model": "slagate-demo", "prompt": "reload", "max_tokens": 4,
                               **fields})


def test_sighup_reloads_classes_and_keys(gw_and_config: tuple[GatewayProcess, Path]) -> None:
    gw, config = gw_and_config
    assert interactive_target(gw) == 1000 and generation(gw) == 1
    config.write_text(config_text(250, keys=(CLIENT, LATER)))
    gw.proc.send_signal(signal.SIGHUP)
    wait_generation(gw, 2)
    assert interactive_target(gw) == 250
    assert complete(gw, LATER).status_code == 200  # the new key works at once
    assert gw.metric("gateway_config_reloads_total", result="ok") == 1
    assert gw.metric("gateway_config_info", generation="2") == 1
    assert "config reloaded (generation 2)" in gw.logs()


def test_a_bad_file_is_refused_and_the_old_config_keeps_serving(
        gw_and_config: tuple[GatewayProcess, Path]) -> None:
    gw, config = gw_and_config
    before = generation(gw)
    good = config.read_text()
    config.write_text(good.replace("ttft_target_ms: 3000", "ttft_target_ms: soon"))
    r = requests.post(f"{gw.url}/admin/reload", headers=auth(ADMIN), timeout=10)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "config_invalid"
    assert f"{config}:3: classes[1].ttft_target_ms" in error["message"]
    assert requests.post(f"{gw.url}/admin/reload", headers=auth(CLIENT),
                         timeout=10).status_code == 403
    gw.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "SIGHUP: config reload refused" not in gw.logs():
        assert time.monotonic() < deadline, gw.logs()[-3000:]
        time.sleep(0.1)
    assert any(" ERROR " in line and "SIGHUP: config reload refused" in line
               for line in gw.logs().splitlines())
    assert generation(gw) == before and interactive_target(gw) == 250
    assert complete(gw, CLIENT).status_code == 200
    assert gw.metric("gateway_config_reloads_total", result="error") == 2
    config.write_text(good)


def test_engine_changes_wait_for_a_restart(gw_and_config: tuple[GatewayProcess, Path]) -> None:
    gw, config = gw_and_config
    config.write_text(config_text(300, keys=(CLIENT, LATER), max_num_seqs=4))
    r = requests.post(f"{gw.url}/admin/reload", headers=auth(ADMIN), timeout=10)
    assert r.status_code == 200
    assert r.json()["restart_required"] == ["engines[0].args"]
    assert interactive_target(gw) == 300  # the rest applied
    engines = sla(gw)["engines"]
    assert isinstance(engines, list) and engines[0]["concurrency_limit"] > 4


def test_a_stream_in_flight_survives_a_reload(gw_and_config: tuple[GatewayProcess, Path]
                                              ) -> None:
    gw, config = gw_and_config
    before = gw.metric("gateway_requests_total", outcome="ok", **{"class": "interactive"})
    body = {"model": "slagate-demo", "prompt": "reload", "max_tokens": 120,
            "ignore_eos": True, "stream": True, "service_tier": "interactive",
            "stream_options": {"include_usage": True}}
    with requests.post(f"{gw.url}/v1/completions", headers=auth(CLIENT), json=body,
                       stream=True, timeout=120) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        first = next(line for line in lines if line)
        assert first.startswith(b"data: {")
        # Mid-stream: swap classes and drop this very key.
        config.write_text(config_text(700, keys=(LATER,)))
        reload = requests.post(f"{gw.url}/admin/reload", headers=auth(ADMIN), timeout=10)
        assert reload.status_code == 200
        events = [first, *(line for line in lines if line)]
    assert events[-1] == b"data: [DONE]"
    usage = json.loads(events[-2].removeprefix(b"data: "))["usage"]
    assert usage["completion_tokens"] == 120
    assert not any(b'"error"' in e for e in events)
    assert gw.metric("gateway_requests_total", outcome="ok",
                     **{"class": "interactive"}) == before + 1
    assert interactive_target(gw) == 700
    assert complete(gw, CLIENT).status_code == 401  # the dropped key is refused from now on
