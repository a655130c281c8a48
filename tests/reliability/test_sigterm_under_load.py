"""SIGTERM while a load of concurrent streams runs (real vLLM).

Readiness turns 503 at once; new requests get 503 ``draining``; every request
that was in flight, running or still queued, ends in exactly one way: a
finished stream (``[DONE]``, every token there), or, at the drain timeout, a
stream ended by one ``draining`` error event, or a 503 ``draining`` answer if
it never started; the process exits 0 and its log holds no traceback.
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import pytest
import requests

from tests.integration.conftest import GatewayProcess, start_gateway
from tests.reliability.conftest import CONFIG, write_config

pytestmark = pytest.mark.vllm

DRAIN_TIMEOUT_S = 3
SHORT, LONG = 48, 2000  # tokens: done within the drain timeout; cut by it
STREAMS = 12  # three times the engine's four sequences: a queue forms

SIGTERM_CONFIG = CONFIG.replace("drain_timeout_s: 4", f"drain_timeout_s: {DRAIN_TIMEOUT_S}")


@dataclass
class Ending:
    status: int
    tokens: int  # completion tokens received
    done: bool  # ended with [DONE]
    error_code: str | None  # the error event's or body's code
    ended_at: float = 0.0  # time.monotonic() when the response was complete


async def run_stream(session: aiohttp.ClientSession, url: str, model: str,
                     max_tokens: int) -> Ending:
    # logprobs 0: each event lists its tokens (under load one event may carry several).
    body = {"model": model, "prompt": "drain me", "max_tokens": max_tokens, "logprobs": 0,
            "ignore_eos": True, "stream": True, "service_tier": "batch"}
    async with session.post(f"{url}/v1/completions", json=body) as resp:
        if resp.status != 200:
            code = (await resp.json())["error"]["code"]
            return Ending(resp.status, 0, False, code, time.monotonic())
        raw = (await resp.read()).decode()
    ended_at = time.monotonic()
    events = [e.removeprefix("data: ") for e in raw.split("\n\n") if e]
    done = events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in (events[:-1] if done else events)]
    errors = [c["error"]["code"] for c in chunks if "error" in c]
    assert len(errors) <= 1 and (not errors or "error" in chunks[-1]), events[-3:]
    tokens = sum(len(c["choices"][0]["logprobs"]["tokens"]) for c in chunks if c.get("choices"))
    return Ending(200, tokens, done, errors[0] if errors else None, ended_at)


@pytest.fixture
def draining_gateway(tmp_path: Path) -> GatewayProcess:
    return start_gateway(tmp_path, write_config(tmp_path, SIGTERM_CONFIG))


async def test_sigterm_under_load(draining_gateway: GatewayProcess) -> None:
    gw = draining_gateway
    try:
        model = requests.get(f"{gw.url}/v1/models", timeout=10).json()["data"][0]["id"]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as s:
            # Past the cold first requests (sampling with logprobs, a full batch),
            # so that short streams finish well inside the drain timeout.
            warm = await asyncio.gather(*(run_stream(s, gw.url, model, SHORT)
                                          for _ in range(4)))
            assert all(e.done for e in warm)
            lengths = [SHORT if i % 2 else LONG for i in range(STREAMS)]
            streams = [asyncio.create_task(run_stream(s, gw.url, model, n)) for n in lengths]
            await _wait_until_queued(gw)

            gw.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            ready = await _first_not_ready(s, gw.url)
            assert ready.status == 503 and ready.headers["Retry-After"]
            assert time.monotonic() - signalled < 1.0, "readiness did not drop at once"
            refused = await run_stream(s, gw.url, model, SHORT)
            assert (refused.status, refused.error_code) == (503, "draining")

            endings = await asyncio.gather(*streams)
            drained_in = time.monotonic() - signalled
        code = gw.proc.wait(timeout=60)
    finally:
        gw.terminate()

    assert code == 0
    for n, ending in zip(lengths, endings, strict=True):
        if ending.done:  # finished in the drain: every token is there
            assert (ending.status, ending.tokens, ending.error_code) == (200, n, None)
        elif ending.status == 200:  # cut at the drain timeout by one error event
            assert ending.error_code == "draining" and ending.tokens < n
        else:  # still queued at the drain timeout
            assert (ending.status, ending.error_code) == (503, "draining"), ending
    assert any(e.done and e.ended_at > signalled for e in endings), (
        f"no stream in flight at the signal finished during the drain: {endings}")
    assert not all(e.done for e in endings), "the drain timeout was never reached"
    assert drained_in < DRAIN_TIMEOUT_S + 8
    log = gw.logs()
    assert "Traceback" not in log, log[-5000:]
    # The gateway's own count of what the drain timeout cut matches the clients'.
    cut = sum(1 for e in endings if not e.done)
    assert f"drain timeout: cancelled {cut} requests" in log


async def _wait_until_queued(gw: GatewayProcess, timeout: float = 60.0) -> None:
    """Until the engine is full and a queue has formed behind it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        depth = await asyncio.to_thread(gw.metric, "gateway_queue_depth")
        if depth > 0 and await asyncio.to_thread(gw.metric, "gateway_engine_inflight") == 4:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no queue formed")


async def _first_not_ready(s: aiohttp.ClientSession, url: str) -> aiohttp.ClientResponse:
    deadline = time.monotonic() + 5
    while True:
        resp = await s.get(f"{url}/health/ready")
        if resp.status != 200 or time.monotonic() > deadline:
            return resp
        await asyncio.sleep(0.005)
