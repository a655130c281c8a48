"""Real engine faults on a running gateway (two engines on the demo model).

Death: SIGKILL one vLLM engine-core process while streams run on both engines.

Every stream on the killed engine ends with one error event within 1 s; the
streams on the other engine finish; ``/health/ready`` says ``degraded`` and
``gateway_engine_healthy`` 0; a class both engines serve moves to the
survivor; the supervisor restarts the engine (a new engine-core process) and it
serves again; the books balance and the gateway still exits 0 on SIGTERM.

Stall: SIGSTOP both engine cores. A stream that had started ends with one
error event (504) and a non-streaming request gets 504, each after
``server.stall_timeout_s``; after SIGCONT the aborts have reached vLLM (nothing
left running) and the engines serve again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import psutil
import pytest
import requests

from tests.integration.conftest import GatewayProcess, start_gateway
from tests.reliability.fault_support import StreamResult, read_stream

pytestmark = pytest.mark.vllm

CONFIG = """
server:
  engine_restart_backoff_s: 1.0
  stall_timeout_s: 5.0
engines:
  - name: fast
    model: demo
    classes: [interactive, standard]
    env: {VLLM_CPU_KVCACHE_SPACE: "1"}
    warmup: {ladder: [32]}
    args: {max_model_len: 2048, max_num_seqs: 8, enforce_eager: true}
  - name: bulk
    model: demo
    classes: [standard, batch]
    env: {VLLM_CPU_KVCACHE_SPACE: "1"}
    warmup: {ladder: [32]}
    args: {max_model_len: 2048, max_num_seqs: 8, enforce_eager: true}
"""
CLASS_OF = {"fast": "interactive", "bulk": "batch"}  # the class only that engine serves
RESTART_TIMEOUT_S = 300
STALL_S = 5.0


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    tmp = tmp_path_factory.mktemp("engine-faults")
    config = tmp / "two.yaml"
    config.write_text(CONFIG)
    gw = start_gateway(tmp, config)
    yield gw
    assert gw.terminate() == 0, gw.logs()[-5000:]


def engine_cores(gw: GatewayProcess) -> list[psutil.Process]:
    return [p for p in psutil.Process(gw.proc.pid).children(recursive=True)
            if p.name() == "VLLM::EngineCore"]


def requests_total(gw: GatewayProcess) -> float:
    try:
        return gw.metric("gateway_requests_total")
    except KeyError:  # no request counted yet
        return 0.0


def body(sla_class: str, max_tokens: int, stream: bool = True) -> dict[str, Any]:
    return {"model": "slagate-demo", "prompt": "The engine under this stream dies.",
            "max_tokens": max_tokens, "ignore_eos": True, "stream": stream,
            "service_tier": sla_class}


def ready(gw: GatewayProcess) -> tuple[int, dict[str, Any]]:
    r = requests.get(f"{gw.url}/health/ready", timeout=5)
    return r.status_code, r.json()


async def test_killed_engine_core_fails_its_streams_fast_then_restarts(
        gateway: GatewayProcess) -> None:
    gw = gateway
    cores = engine_cores(gw)
    assert len(cores) == 2
    sent_before = requests_total(gw)
    sent = 0

    async with aiohttp.ClientSession() as session:
        started: list[asyncio.Event] = []

        async def stream(sla_class: str, max_tokens: int) -> StreamResult:
            event = asyncio.Event()
            started.append(event)
            async with session.post(f"{gw.url}/v1/completions",
                                    json=body(sla_class, max_tokens)) as r:
                assert r.status == 200, await r.text()
                return await read_stream(r, after_events=1, started=event)

        # Long streams on "fast" (interactive) and shorter ones on "bulk" (batch).
        streams = {cls: [asyncio.create_task(stream(cls, n)) for _ in range(3)]
                   for cls, n in (("interactive", 1500), ("batch", 150))}
        sent += 6
        async with asyncio.timeout(60):
            while len(started) < 6:
                await asyncio.sleep(0.01)
            await asyncio.gather(*(e.wait() for e in started))

        victim = cores[0]
        killed_at = time.monotonic()
        victim.kill()

        # Which engine was it? The one /health/ready reports unhealthy.
        async with asyncio.timeout(1.0):
            while True:
                status, state = await asyncio.to_thread(ready, gw)
                down = [n for n, e in state["engines"].items() if not e["healthy"]]
                if down:
                    break
                await asyncio.sleep(0.02)
        assert len(down) == 1
        dead = down[0]
        alive = next(n for n in CLASS_OF if n != dead)
        assert status == 200 and state["status"] == "degraded"
        assert gw.metric("gateway_engine_healthy", engine=dead) == 0
        assert gw.metric("gateway_engine_healthy", engine=alive) == 1

        error_after = []
        for task in streams[CLASS_OF[dead]]:
            result = await task
            error_after.append(result.ended_at - killed_at)
            assert result.ended_at - killed_at < 1.0, result.ended_at - killed_at
            assert result.content_events and "[DONE]" not in result.events
            assert len(result.errors) == 1 and result.events[-1] == result.errors[0]
            assert result.errors[0]["error"]["code"] == "engine_dead"
        for task in streams[CLASS_OF[alive]]:
            survivor = await task
            assert survivor.events[-1] == "[DONE]" and not survivor.errors

        # "standard" runs on the survivor meanwhile.
        served = gw.metric("gateway_engine_ttft_seconds_count", engine=alive)
        async with session.post(f"{gw.url}/v1/completions",
                                json=body("standard", 8, stream=False)) as r:
            assert r.status == 200, await r.text()
        sent += 1
        assert gw.metric("gateway_engine_ttft_seconds_count", engine=alive) == served + 1

    # The supervisor brings up a fresh engine core, warms it, and it serves again.
    deadline = time.monotonic() + RESTART_TIMEOUT_S
    while (state := ready(gw)[1])["status"] != "ready":
        assert time.monotonic() < deadline, state
        time.sleep(0.5)
    print(f"engine {dead} killed: streams ended {max(error_after) * 1000:.0f} ms after, "
          f"serving again after {time.monotonic() - killed_at:.1f} s")
    assert state["engines"][dead]["restarts"] == 1
    assert gw.metric("gateway_engine_restarts_total", engine=dead) == 1
    assert gw.metric("gateway_engine_healthy", engine=dead) == 1
    new_cores = engine_cores(gw)
    assert len(new_cores) == 2 and victim.pid not in {p.pid for p in new_cores}
    after = requests.post(f"{gw.url}/v1/completions",
                          json=body(CLASS_OF[dead], 8, stream=False), timeout=60)
    assert after.status_code == 200, after.text
    sent += 1

    # Accounting: every request counted once; nothing left running.
    assert requests_total(gw) - sent_before == sent
    assert gw.metric("gateway_requests_total", outcome="engine_dead") == 3
    assert gw.metric("gateway_engine_inflight") == 0
    assert gw.metric("gateway_engine_granted") == 0
    assert gw.metric("gateway_queue_depth") == 0
    assert f"engine {dead} restarted" in gw.logs()


async def test_stopped_engine_cores_stall_and_requests_are_aborted(
        gateway: GatewayProcess) -> None:
    gw = gateway
    assert ready(gw)[1]["status"] == "ready"
    sent_before = requests_total(gw)
    stalls_before = gw.metric("gateway_engine_stalls_total")
    cores = engine_cores(gw)
    async with aiohttp.ClientSession() as session:
        started = asyncio.Event()

        async def stream() -> StreamResult:
            async with session.post(f"{gw.url}/v1/completions",
                                    json=body("interactive", 1500)) as r:
                assert r.status == 200, await r.text()
                return await read_stream(r, after_events=2, started=started)

        streaming = asyncio.create_task(stream())
        await asyncio.wait_for(started.wait(), 60)
        for core in cores:
            core.suspend()
        stopped_at = time.monotonic()
        try:
            async with session.post(f"{gw.url}/v1/completions",
                                    json=body("batch", 8, stream=False)) as r:
                assert r.status == 504, await r.text()
                error = (await r.json())["error"]
                assert error["type"] == "server_error" and "no token" in error["message"]
            stalled = await streaming
        finally:
            for core in cores:
                core.resume()
        waited = time.monotonic() - stopped_at
        print(f"stall detected after {stalled.ended_at - stopped_at:.2f} s "
              f"(stall_timeout_s {STALL_S})")
        assert STALL_S <= stalled.ended_at - stopped_at < STALL_S + 2.5
        assert waited < STALL_S + 2.5
        assert len(stalled.errors) == 1 and stalled.events[-1] == stalled.errors[0]
        assert stalled.errors[0]["error"]["code"] == 504 and "[DONE]" not in stalled.events

    # The aborts reached vLLM: it tracks no unfinished request (its running and
    # waiting counts read 0 only then).
    deadline = time.monotonic() + 30
    while gw.metric("gateway_engine_running") + gw.metric("gateway_engine_waiting") > 0:
        assert time.monotonic() < deadline, "vLLM still runs the stalled requests"
        time.sleep(0.2)
    assert gw.metric("gateway_engine_stalls_total") - stalls_before == 2
    assert gw.metric("gateway_requests_total", outcome="stalled") == 2
    assert ready(gw)[1]["status"] == "ready"  # suspect, not out of service
    for cls in ("interactive", "batch"):
        answer = requests.post(f"{gw.url}/v1/completions", json=body(cls, 8, stream=False),
                               timeout=60)
        assert answer.status_code == 200, answer.text
    assert gw.metric("gateway_engine_suspect") == 0
    assert requests_total(gw) - sent_before == 4
    assert gw.metric("gateway_engine_inflight") == 0
    assert gw.metric("gateway_engine_granted") == 0
