"""API keys, class clamping and tenant quotas on a real gateway process (real vLLM on
the demo model): 401/403, 429 by tenant with Retry-After and X-Reject-Reason, metrics
protection, no key or prompt in the log; and no open gateway beyond loopback."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import requests

from gateway.auth import hash_key
from tests.integration.conftest import ROOT, GatewayProcess, free_port, start_gateway

pytestmark = pytest.mark.vllm

ACME = "sk-acme-integration"  # interactive + standard, default interactive
RATE = "sk-rate-integration"  # 3 requests/min
TOKENS = "sk-tokens-integration"  # 400 tokens/min
SOLO = "sk-solo-integration"  # one request at a time
ADMIN = "sk-admin-integration"
SECRET_PROMPT = "PROMPT-SECRET-7f3a"

ENGINE = """\
engines:
  - name: solo
    model: demo
    classes: [interactive, standard, batch]
    env: {VLLM_CPU_KVCACHE_SPACE: "1"}
    warmup: {ladder: [32]}
    args: {max_model_len: 2048, max_num_seqs: 8, enforce_eager: true}
"""

CONFIG = ENGINE + f"""\
auth:
  keys:
    - hash: "{hash_key(ACME)}"
      tenant: acme
      classes: [interactive, standard]
      default_class: interactive
    - hash: "{hash_key(RATE)}"
      tenant: rate
      requests_per_min: 3
    - hash: "{hash_key(TOKENS)}"
      tenant: tokens
      tokens_per_min: 400
    - hash: "{hash_key(SOLO)}"
      tenant: solo
      max_concurrent: 1
  admin_keys: ["{hash_key(ADMIN)}"]
"""


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    tmp = tmp_path_factory.mktemp("auth")
    config = tmp / "auth.yaml"
    config.write_text(CONFIG)
    gateway = start_gateway(tmp, config)
    yield gateway
    assert gateway.terminate() == 0, gateway.logs()[-5000:]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def metric(gw: GatewayProcess, name: str, **labels: str) -> float:
    text = requests.get(f"{gw.url}/metrics", headers=auth(ADMIN), timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def complete(gw: GatewayProcess, key: str | None, **fields: object) -> requests.Response:
    body: dict[str, object] = {"model": "slagate-demo", "prompt": SECRET_PROMPT,
                               "max_tokens": 4, **fields}
    return requests.post(f"{gw.url}/v1/completions", json=body,
                         headers=auth(key) if key else {}, timeout=120)


def test_missing_or_bad_key_is_401_and_counted(gw: GatewayProcess) -> None:
    before = metric(gw, "gateway_requests_total", outcome="unauthorized")
    for key in (None, "sk-not-a-key"):
        r = complete(gw, key)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "invalid_api_key"
        assert r.json()["error"]["type"] == "authentication_error"
    assert metric(gw, "gateway_requests_total", outcome="unauthorized") == before + 2
    assert requests.get(f"{gw.url}/v1/models", timeout=10).status_code == 401


def test_probes_are_open_and_metrics_need_the_admin_key(gw: GatewayProcess) -> None:
    assert requests.get(f"{gw.url}/health/live", timeout=10).status_code == 200
    assert requests.get(f"{gw.url}/health/ready", timeout=10).status_code == 200
    assert requests.get(f"{gw.url}/metrics", timeout=10).status_code == 401
    r = requests.get(f"{gw.url}/metrics", headers=auth(ACME), timeout=10)
    assert r.status_code == 403 and r.json()["error"]["code"] == "admin_key_required"
    r = requests.get(f"{gw.url}/metrics", headers=auth(ADMIN), timeout=10)
    assert r.status_code == 200 and "gateway_requests_total" in r.text


def test_the_key_picks_the_default_class_and_clamps_the_rest(gw: GatewayProcess) -> None:
    r = complete(gw, ACME)
    assert r.status_code == 200, r.text
    assert r.headers["X-SLA-Class"] == "interactive" and r.json()["service_tier"] == "interactive"
    r = complete(gw, ACME, service_tier="standard")
    assert r.status_code == 200 and r.headers["X-SLA-Class"] == "standard"
    before = metric(gw, "gateway_requests_total", outcome="forbidden")
    r = complete(gw, ACME, service_tier="batch")
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "class_not_allowed"
    assert r.json()["error"]["param"] == "service_tier"
    r = requests.post(f"{gw.url}/v1/completions", headers={**auth(ACME), "X-SLA-Class": "batch"},
                      json={"model": "slagate-demo", "prompt": "x", "max_tokens": 2}, timeout=60)
    assert r.status_code == 403
    assert metric(gw, "gateway_requests_total", outcome="forbidden") == before + 2
    r = complete(gw, ADMIN)
    assert r.status_code == 403 and r.json()["error"]["code"] == "client_key_required"


def test_requests_per_minute_is_429_with_retry_after(gw: GatewayProcess) -> None:
    for _ in range(3):
        assert complete(gw, RATE).status_code == 200
    r = complete(gw, RATE)
    assert r.status_code == 429
    assert r.headers["X-Reject-Reason"] == "tenant_rate"
    # 3/min refills one request every 20 s; a few seconds went by serving the three.
    assert 5 <= int(r.headers["Retry-After"]) <= 20
    assert r.json()["error"]["code"] == "tenant_rate"
    assert metric(gw, "gateway_rejections_total", reason="tenant_rate",
                  **{"class": "standard"}) == 1
    assert metric(gw, "gateway_requests_total", outcome="rejected",
                  **{"class": "standard"}) >= 1
    assert complete(gw, ACME).status_code == 200  # other tenants are unaffected


def test_tokens_per_minute_charges_prompt_plus_max_tokens(gw: GatewayProcess) -> None:
    r = complete(gw, TOKENS, max_tokens=300, ignore_eos=True)  # ~310 of 400 tokens
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 300
    r = complete(gw, TOKENS, max_tokens=350)
    assert r.status_code == 429 and r.headers["X-Reject-Reason"] == "tenant_tokens"
    # ~275 tokens missing at 400/min: about 40 s, less the time already spent.
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert metric(gw, "gateway_rejections_total", reason="tenant_tokens") == 1


async def test_max_concurrent_is_released_exactly_once(gw: GatewayProcess) -> None:
    body = {"model": "slagate-demo", "prompt": "long", "max_tokens": 200, "ignore_eos": True,
            "stream": True}
    async with aiohttp.ClientSession(headers=auth(SOLO)) as s:
        async with s.post(f"{gw.url}/v1/completions", json=body) as first:
            assert first.status == 200
            await first.content.readline()  # streaming: it holds the tenant's one slot
            async with s.post(f"{gw.url}/v1/completions", json=body) as second:
                assert second.status == 429
                assert second.headers["X-Reject-Reason"] == "tenant_concurrency"
                assert int(second.headers["Retry-After"]) >= 1
            raw = await first.read()
            assert raw.rstrip().endswith(b"data: [DONE]")
        # The slot came back when the stream ended, once: two in a row both succeed.
        for _ in range(2):
            async with s.post(f"{gw.url}/v1/completions", json={**body, "max_tokens": 4}) as r:
                assert r.status == 200
                await r.read()
    assert metric(gw, "gateway_rejections_total", reason="tenant_concurrency") == 1
    # A client that leaves mid-stream frees the slot too (once the gateway notices).
    async with aiohttp.ClientSession(headers=auth(SOLO)) as s:
        resp = await s.post(f"{gw.url}/v1/completions", json=body)
        await resp.content.readline()
        resp.close()
        status = 0
        for _ in range(40):
            async with s.post(f"{gw.url}/v1/completions", json={**body, "max_tokens": 4}) as r:
                status = r.status
                await r.read()
            if status != 429:
                break
            await asyncio.sleep(0.25)
        assert status == 200


def test_neither_keys_nor_prompts_reach_the_log(gw: GatewayProcess) -> None:
    assert complete(gw, ACME, model="evil\r\nERROR forged\x1b[2J").status_code == 404
    logs = gw.logs()
    for secret in (ACME, RATE, TOKENS, SOLO, ADMIN, SECRET_PROMPT, "sk-not-a-key"):
        assert secret not in logs
    assert "\x1b" not in logs
    assert not any(line.startswith("ERROR forged") for line in logs.splitlines())


def test_no_keys_means_loopback_only(tmp_path: Path) -> None:
    config = tmp_path / "open.yaml"
    config.write_text(ENGINE)
    for host in ("0.0.0.0", "::", "example.com"):
        out = subprocess.run([sys.executable, "-m", "gateway", "--config", str(config),
                              "--host", host, "--port", str(free_port())],
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert out.returncode == 2, out.stderr
        assert "no API key is configured" in out.stderr and "listening" not in out.stdout
