"""A client that goes away, at any stage, aborts its request in the engine."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.integration.conftest import GatewayProcess

pytestmark = pytest.mark.vllm


def wait_engines_idle(gw: GatewayProcess, timeout: float = 5.0) -> float:
    """Seconds until no engine has an in-flight or running request."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if (gw.metric("gateway_engine_inflight") == 0
                and gw.metric("gateway_engine_running") == 0
                and gw.metric("gateway_engine_waiting") == 0):
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError("engines still busy after the client left")


def long_request(model: str, stream: bool, prompt: object = "Go on",
                 max_tokens: int = 1500) -> dict[str, object]:
    return {"model": model, "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True,
            "stream": stream, "temperature": 0}


async def test_disconnect_mid_stream_aborts(gateway: GatewayProcess, model_name: str) -> None:
    gone = gateway.metric("gateway_requests_total", outcome="client_gone")
    async with aiohttp.ClientSession() as s:
        resp = await s.post(f"{gateway.url}/v1/completions", json=long_request(model_name, True))
        assert resp.status == 200
        await resp.content.readuntil(b"\n\n")  # the first token event
        await resp.content.readuntil(b"\n\n")
        assert gateway.metric("gateway_engine_inflight") == 1
        resp.close()  # drop the connection mid-stream
    wait_engines_idle(gateway)
    await asyncio.sleep(0.2)
    assert gateway.metric("gateway_requests_total", outcome="client_gone") == gone + 1


async def test_disconnect_non_streaming_aborts(gateway: GatewayProcess, model_name: str) -> None:
    timeout = aiohttp.ClientTimeout(total=1.0)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        with pytest.raises(TimeoutError):
            await s.post(f"{gateway.url}/v1/completions", json=long_request(model_name, False))
    wait_engines_idle(gateway)


async def test_disconnect_before_first_token_aborts(gateway: GatewayProcess,
                                                     model_name: str) -> None:
    # A long prompt keeps the request in prefill when the client leaves.
    prompt = list(range(10, 1010)) + list(range(10, 410))
    timeout = aiohttp.ClientTimeout(total=0.01)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        with pytest.raises(TimeoutError):
            await s.post(f"{gateway.url}/v1/completions",
                         json=long_request(model_name, True, prompt, max_tokens=600))
    wait_engines_idle(gateway)
