"""Engine faults through the real app: a request's engine error, an engine that
dies (terminal error in under 1 s, degraded readiness, classes moved, restart),
an engine that stalls (504 / error event, abort, suspect, restart after
several). Engines are simulated, wrapped in ``FaultyEngine``; every test ends
with the accounting check.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway import reload
from tests.reliability.fault_support import (
    ONE_SLOT,
    LocalGateway,
    assert_settled,
    completion,
    counts,
    fault_config,
    hold_and_queue,
    open_stream,
    start_local_gateway,
)

# "a" alone serves interactive, "b" alone batch; both serve standard.
ENGINES = {"a": ("interactive", "standard"), "b": ("standard", "batch")}
ERROR_KEYS = {"message", "type", "param", "code"}


@pytest.fixture
async def gw() -> AsyncIterator[LocalGateway]:
    gateway = await start_local_gateway(fault_config(
        ENGINES, stall_timeout_s=0.5, engine_restart_backoff_s=1.0,
        engine_restart_backoff_max_s=5.0))
    yield gateway
    await gateway.stop()


# -- one request's engine error ------------------------------------------------------


async def test_engine_error_fails_only_that_request(gw: LocalGateway) -> None:
    before = await counts(gw)
    gw.engine("a").fail_next()
    status, body = await gw.post(completion(tier="interactive"))
    assert status == 502
    assert set(body["error"]) == ERROR_KEYS and body["error"]["type"] == "server_error"
    assert gw.engine("a").healthy
    assert (await gw.ready())[0] == 200
    status, body = await gw.post(completion(tier="interactive"))
    assert status == 200 and body["choices"][0]["finish_reason"] == "length"
    assert await gw.metric("gateway_requests_total", outcome="engine_error") == 1
    await assert_settled(gw, 2, before)


async def test_engine_error_before_first_token_of_stream_is_a_status(gw: LocalGateway) -> None:
    before = await counts(gw)
    gw.engine("a").fail_next()
    task, _ = await open_stream(gw, completion(stream=True, tier="interactive"))
    result = await task
    assert result.status == 502 and set(result.events[0]["error"]) == ERROR_KEYS
    await assert_settled(gw, 1, before)


async def test_engine_error_mid_stream_is_one_error_event(gw: LocalGateway) -> None:
    before = await counts(gw)
    gw.engine("a").fail_next(after_tokens=3)
    task, _ = await open_stream(gw, completion(max_tokens=32, stream=True, tier="interactive"))
    result = await task
    assert result.status == 200
    assert len(result.content_events) == 3
    assert result.events[-1] == result.errors[0] and len(result.errors) == 1
    assert result.errors[0]["error"]["code"] == 502 and "[DONE]" not in result.events
    assert gw.engine("a").healthy
    status, _ = await gw.post(completion(tier="interactive"))
    assert status == 200
    await assert_settled(gw, 2, before)


# -- an engine that dies ----------------------------------------------------------------


async def test_engine_death_ends_its_streams_fast_and_restarts(gw: LocalGateway) -> None:
    before = await counts(gw)
    dead = gw.engine("a")
    on_a = [await open_stream(gw, completion(max_tokens=500, stream=True, tier="interactive"))
            for _ in range(3)]
    on_b = await open_stream(gw, completion(max_tokens=40, stream=True, tier="batch"))
    await asyncio.gather(*(started.wait() for _, started in [*on_a, on_b]))

    killed_at = time.monotonic()
    dead.kill()
    # Readiness and metrics say so at once; the restart waits out its backoff.
    status, ready = await gw.ready()
    assert status == 200 and ready["status"] == "degraded"
    assert ready["engines"]["a"]["healthy"] is False and ready["engines"]["b"]["healthy"]
    assert await gw.metric("gateway_engine_healthy", engine="a") == 0
    assert await gw.metric("gateway_engine_healthy", engine="b") == 1

    for task, _ in on_a:
        result = await task
        assert result.ended_at - killed_at < 1.0
        assert result.content_events and "[DONE]" not in result.events
        assert len(result.errors) == 1 and result.events[-1] == result.errors[0]
        assert result.errors[0]["error"]["code"] == "engine_dead"
    survivor = await on_b[0]
    assert survivor.events[-1] == "[DONE]" and not survivor.errors

    # While "a" is down: standard moves to "b"; interactive (only "a") is refused.
    served_by_b = await gw.metric("gateway_engine_ttft_seconds_count", engine="b")
    status, _ = await gw.post(completion(tier="standard"))
    assert status == 200
    assert await gw.metric("gateway_engine_ttft_seconds_count", engine="b") == served_by_b + 1
    status, body = await gw.post(completion(tier="interactive"))
    assert status == 503 and body["error"]["code"] == "no_engine"

    ready = await gw.wait_ready_status("ready", timeout=10)
    assert ready["engines"]["a"] == {"healthy": True, "inflight": 0, "state": "serving",
                                     "restarts": 1}
    assert gw.engine("a") is not dead
    assert await gw.metric("gateway_engine_restarts_total", engine="a") == 1
    assert await gw.metric("gateway_engine_healthy", engine="a") == 1
    status, _ = await gw.post(completion(tier="interactive"))
    assert status == 200
    assert await gw.metric("gateway_requests_total", outcome="engine_dead") == 3
    await assert_settled(gw, 4 + 3, before)


async def test_queued_ticket_of_a_dead_class_expires_with_503() -> None:
    """A ticket queued for a class whose only engine died waits for the restart
    or its deadline: here the restart is slower than interactive's 3 s queue
    timeout, so it answers 503 at the deadline. It never hangs."""
    gw = await start_local_gateway(fault_config(
        ENGINES, ONE_SLOT, engine_restart_backoff_s=6.0, engine_restart_backoff_max_s=6.0))
    try:
        before = await counts(gw)
        holder, queued = await hold_and_queue(gw, "interactive", max_tokens=1000)
        gw.engine("a").kill()
        assert (await holder).errors[0]["error"]["code"] == "engine_dead"
        status, body = await queued
        assert status == 503 and body["error"]["code"] == "queue_timeout"
        assert await gw.metric("gateway_requests_total", outcome="expired") == 1
        await assert_settled(gw, 2, before)
    finally:
        await gw.stop()


# -- an engine that stalls --------------------------------------------------------------


async def test_stall_before_first_token_is_504_and_aborts(gw: LocalGateway) -> None:
    before = await counts(gw)
    engine = gw.engine("a")
    engine.stall(30)
    started = time.monotonic()
    status, body = await gw.post(completion(tier="interactive"))
    assert status == 504 and set(body["error"]) == ERROR_KEYS
    assert 0.5 <= time.monotonic() - started < 2.0
    assert len(engine.aborted) == 1
    assert engine.inner.stats().inflight == 0
    assert await gw.metric("gateway_requests_total", outcome="stalled") == 1
    assert await gw.metric("gateway_engine_stalls_total", engine="a") == 1
    assert await gw.metric("gateway_engine_suspect", engine="a") == 1
    _, ready = await gw.ready()
    assert ready["engines"]["a"]["state"] == "suspect"
    engine.resume()
    status, _ = await gw.post(completion(tier="interactive"))
    assert status == 200
    assert await gw.metric("gateway_engine_suspect", engine="a") == 0
    await assert_settled(gw, 2, before)


async def test_stall_mid_stream_is_one_error_event(gw: LocalGateway) -> None:
    before = await counts(gw)
    engine = gw.engine("a")
    task, started = await open_stream(gw, completion(max_tokens=500, stream=True,
                                                     tier="interactive"), after_events=2)
    await started.wait()
    engine.stall(30)
    stalled_at = time.monotonic()
    result = await task
    assert 0.4 <= result.ended_at - stalled_at < 2.0
    assert len(result.errors) == 1 and result.events[-1] == result.errors[0]
    assert result.errors[0]["error"]["code"] == 504 and "[DONE]" not in result.events
    assert len(engine.aborted) == 1 and engine.inner.stats().inflight == 0
    engine.resume()
    await assert_settled(gw, 1, before)


async def test_repeated_stalls_restart_the_engine() -> None:
    gw = await start_local_gateway(fault_config(
        ENGINES, stall_timeout_s=0.3, stalls_before_restart=2, engine_restart_backoff_s=0.1))
    try:
        before = await counts(gw)
        stalled = gw.engine("a")
        stalled.stall(60)
        for _ in range(2):
            status, _ = await gw.post(completion(tier="interactive"))
            assert status == 504
        # The second stall in a row retires "a" at once; a fresh one replaces it.
        status, ready = await gw.ready()
        assert ready["engines"]["a"]["healthy"] is False and ready["status"] == "degraded"
        await gw.wait_ready_status("ready", timeout=10)
        assert gw.engine("a") is not stalled
        assert await gw.metric("gateway_engine_restarts_total", engine="a") == 1
        status, _ = await gw.post(completion(tier="interactive"))
        assert status == 200
        await assert_settled(gw, 3, before)
    finally:
        await gw.stop()


async def test_no_serving_engine_is_503_until_the_restart() -> None:
    gw = await start_local_gateway(fault_config(
        {"solo": ("interactive", "standard", "batch")}, engine_restart_backoff_s=0.5))
    try:
        before = await counts(gw)
        gw.engine("solo").kill()
        status, ready = await gw.ready()
        assert status == 503 and ready["status"] == "unavailable"
        # The scheduler learns of it at the supervisor's next look (0.1 s); a
        # request placed in between gets 503 engine_dead from the engine.
        async with asyncio.timeout(1):
            while "solo" in gw.state.dispatcher.scheduler.healthy:
                await asyncio.sleep(0.01)
        status, body = await gw.post(completion())
        assert status == 503 and body["error"]["code"] == "no_engine"
        await gw.wait_ready_status("ready", timeout=10)
        assert (await gw.ready())[0] == 200
        status, _ = await gw.post(completion())
        assert status == 200
        await assert_settled(gw, 2, before)
    finally:
        await gw.stop()


async def test_a_reload_applies_the_stall_timeout_to_new_requests(tmp_path: Path) -> None:
    """``server.stall_timeout_s`` is a per-request limit: a reload applies it to the
    requests that start after it (the watchdog read it once, at start-up, before)."""
    path = tmp_path / "gateway.yaml"
    text = """\
server: {stall_timeout_s: STALL}
engines:
  - name: a
    model: demo
    served_model_name: slagate-demo
    classes: [interactive, standard, batch]
    warmup: {ladder: [32]}
"""
    path.write_text(text.replace("STALL", "30"))
    gw = await start_local_gateway(reload.initial(path))
    try:
        before = await counts(gw)
        path.write_text(text.replace("STALL", "0.5"))
        async with gw.session.post(f"{gw.url}/admin/reload") as r:
            assert r.status == 200, await r.text()
        engine = gw.engine("a")
        engine.stall(30)
        started = time.monotonic()
        status, body = await gw.post(completion(tier="interactive"))
        assert status == 504 and set(body["error"]) == ERROR_KEYS
        assert time.monotonic() - started < 2.0  # the new 0.5 s, not the old 30 s
        assert await gw.metric("gateway_requests_total", outcome="stalled") == 1
        engine.resume()
        await assert_settled(gw, 1, before)
    finally:
        await gw.stop()
