"""SIGTERM: readiness 503 at once, new work refused, in-flight work drains
until the timeout, the rest ends with an error event, exit code 0."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import aiohttp
import pytest
import requests

from tests.integration.conftest import start_gateway

pytestmark = pytest.mark.vllm

CONFIG = """
server:
  drain_timeout_s: 4
engines:
  - name: solo
    model: demo
    classes: [interactive, standard, batch]
    env: {VLLM_CPU_KVCACHE_SPACE: "1"}
    warmup: {ladder: [32]}
    args: {max_model_len: 2048, max_num_seqs: 8, enforce_eager: true}
"""


async def read_events(resp: aiohttp.ClientResponse) -> list[str]:
    raw = (await resp.read()).decode()
    return [e.removeprefix("data: ") for e in raw.split("\n\n") if e]


async def test_sigterm_drains_then_exits_zero(tmp_path: Path) -> None:
    config = tmp_path / "solo.yaml"
    config.write_text(CONFIG)
    gw = start_gateway(tmp_path, config)
    try:
        model = requests.get(f"{gw.url}/v1/models", timeout=10).json()["data"][0]["id"]

        def body(max_tokens: int) -> dict[str, object]:
            return {"model": model, "prompt": "drain", "max_tokens": max_tokens,
                    "ignore_eos": True, "stream": True}

        async with aiohttp.ClientSession() as s:
            short = await s.post(f"{gw.url}/v1/completions", json=body(40))
            long = await s.post(f"{gw.url}/v1/completions", json=body(2000))
            assert short.status == long.status == 200
            await long.content.readuntil(b"\n\n")
            signalled = time.monotonic()
            gw.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            ready = await s.get(f"{gw.url}/health/ready")
            assert ready.status == 503 and ready.headers["Retry-After"]
            refused = await s.post(f"{gw.url}/v1/completions", json=body(4))
            assert refused.status == 503
            assert (await refused.json())["error"]["code"] == "draining"

            short_events = await read_events(short)
            assert short_events[-1] == "[DONE]"
            usage_free = [json.loads(e) for e in short_events[:-1]]
            assert sum(1 for e in usage_free if e["choices"]) == 40

            long_events = await read_events(long)
            assert "[DONE]" not in long_events
            assert json.loads(long_events[-1])["error"]["code"] == "draining"
            assert time.monotonic() - signalled < 4 + 10
        assert gw.proc.wait(timeout=60) == 0
        log = gw.logs()
        assert "drain timeout: cancelled 1 requests" in log
    finally:
        gw.terminate()
