"""Shared pieces of the engine-fault tests: an in-process gateway on simulated
engines wrapped in ``FaultyEngine``, SSE reading, metric scraping, and the
accounting check every fault test ends with.

The app is the real one (``gateway.app.build_app``) on a real socket
(``web.AppRunner`` on a free port); only the engines are simulated. They load
the demo model's tokenizer, so prompts are tokenized exactly as in production.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from engines.demo_model import ensure_demo_model
from engines.faulty import FaultyEngine
from engines.pool import EnginePool, PoolMember
from engines.protocol import Engine
from engines.sim_profile import DEFAULT_PROFILE, SimulatedProfile
from engines.simulated import SimulatedEngine
from gateway.app import STATE, GatewayState, build_app
from gateway.config import (
    ControllerConfig,
    EngineSpec,
    GatewayConfig,
    SchedulerConfig,
    ServerConfig,
    WarmupSpec,
)
from gateway.reload import LiveConfig
from tests.integration.conftest import free_port

MODEL = "slagate-demo"
# Fast steps, so a 64-token answer takes ~100 ms.
FAST_PROFILE = dataclasses.replace(DEFAULT_PROFILE, time_scale=0.1)


def fault_config(engines: Mapping[str, Sequence[str]], scheduler: SchedulerConfig | None = None,
                 **server: Any) -> GatewayConfig:
    """The default classes on simulated engines named in ``engines`` (name ->
    classes); ``server`` overrides ``ServerConfig`` fields."""
    specs = tuple(
        EngineSpec(name=name, model="demo", served_model_name=MODEL, classes=tuple(classes),
                   warmup=WarmupSpec(ladder=(32,)))
        for name, classes in engines.items()
    )
    return GatewayConfig(server=ServerConfig(port=0, **server), engines=specs,
                         scheduler=scheduler or SchedulerConfig())


@dataclass
class LocalGateway:
    url: str
    runner: web.AppRunner
    state: GatewayState
    session: aiohttp.ClientSession

    def engine(self, name: str) -> FaultyEngine:
        """The engine now serving under ``name`` (a restart replaces it)."""
        engine = self.state.pool.engine(name)
        assert isinstance(engine, FaultyEngine)
        return engine

    async def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples whose labels include ``labels``."""
        async with self.session.get(f"{self.url}/metrics") as r:
            text = await r.text()
        total = 0.0
        for line in text.splitlines():
            if line.startswith("#") or " " not in line:
                continue
            series, value = line.rsplit(" ", 1)
            if series.split("{", 1)[0] != name:
                continue
            if all(f'{k}="{v}"' in series for k, v in labels.items()):
                total += float(value)
        return total

    async def ready(self) -> tuple[int, dict[str, Any]]:
        async with self.session.get(f"{self.url}/health/ready") as r:
            return r.status, await r.json()

    async def wait_ready_status(self, status: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            _, body = await self.ready()
            if body["status"] == status:
                return body
            assert time.monotonic() < deadline, f"never {status!r}: {body}"
            await asyncio.sleep(0.02)

    async def post(self, body: dict[str, Any], path: str = "/v1/completions",
                   **headers: str) -> tuple[int, dict[str, Any]]:
        async with self.session.post(f"{self.url}{path}", json=body, headers=headers) as r:
            return r.status, await r.json()

    async def stop(self) -> None:
        await self.session.close()
        await self.runner.cleanup()


def make_engine(name: str, profile: SimulatedProfile = FAST_PROFILE) -> FaultyEngine:
    return FaultyEngine(SimulatedEngine(name, MODEL, profile,
                                        model_path=str(ensure_demo_model())))


async def start_local_gateway(config: GatewayConfig | LiveConfig,
                              profile: SimulatedProfile = FAST_PROFILE,
                              restartable: bool = True) -> LocalGateway:
    """The real app on a free port, on ``FaultyEngine(SimulatedEngine)``s; ready.
    A ``LiveConfig`` (``reload.initial(path)``) makes its file reloadable."""

    def factory(name: str) -> Engine:
        return make_engine(name, profile)

    specs = (config.config if isinstance(config, LiveConfig) else config).engines
    pool = EnginePool([PoolMember(make_engine(spec.name, profile), frozenset(spec.classes))
                       for spec in specs])
    app = build_app(config, pool, factory if restartable else None)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    state = app[STATE]
    await asyncio.wait_for(state.started.wait(), 60)
    assert state.startup_error is None, state.startup_error
    session = aiohttp.ClientSession()
    return LocalGateway(f"http://127.0.0.1:{port}", runner, state, session)


def completion(max_tokens: int = 16, stream: bool = False, tier: str | None = None,
               **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "prompt": "Tell me about schedulers.",
                            "max_tokens": max_tokens, "stream": stream, "ignore_eos": True}
    if tier is not None:
        body["service_tier"] = tier
    return body | extra


@dataclass
class StreamResult:
    status: int
    events: list[Any]  # parsed JSON events, "[DONE]" as the string
    ended_at: float  # loop-independent monotonic time the stream closed

    @property
    def content_events(self) -> list[Any]:
        return [e for e in self.events if isinstance(e, dict) and "choices" in e]

    @property
    def errors(self) -> list[Any]:
        return [e for e in self.events if isinstance(e, dict) and "error" in e]


async def read_stream(response: aiohttp.ClientResponse,
                      after_events: int | None = None,
                      started: asyncio.Event | None = None) -> StreamResult:
    """All SSE events of a response; ``started`` is set after ``after_events``."""
    events: list[Any] = []
    buffer = b""
    async for chunk in response.content.iter_any():
        buffer += chunk
        while b"\n\n" in buffer:
            raw, buffer = buffer.split(b"\n\n", 1)
            assert raw.startswith(b"data: "), raw
            data = raw[len(b"data: "):]
            events.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
            if started is not None and after_events is not None and len(events) >= after_events:
                started.set()
    assert buffer == b"", buffer
    return StreamResult(response.status, events, time.monotonic())


async def open_stream(gw: LocalGateway, body: dict[str, Any], after_events: int = 1
                      ) -> tuple[asyncio.Task[StreamResult], asyncio.Event]:
    """Start a streaming request in a task; the event is set once it has
    received ``after_events`` events."""
    started = asyncio.Event()

    async def run() -> StreamResult:
        async with gw.session.post(f"{gw.url}/v1/completions", json=body) as r:
            if r.status != 200:
                started.set()
                return StreamResult(r.status, [await r.json()], time.monotonic())
            return await read_stream(r, after_events, started)

    return asyncio.create_task(run()), started


# One slot per engine, no headroom: a second request of any class queues.
ONE_SLOT = SchedulerConfig(reserved_slots=0, top_class_headroom=0,
                           controller=ControllerConfig(enabled=False, initial_limit=1,
                                                       min_limit=1))


async def hold_and_queue(gw: LocalGateway, tier: str, max_tokens: int
                         ) -> tuple[asyncio.Task[StreamResult], asyncio.Task[tuple[int, Any]]]:
    """Under ``ONE_SLOT``: a stream of ``max_tokens`` holding the slot of ``tier``'s
    engine (streaming already) and a request of ``tier`` queued behind it."""
    holder, started = await open_stream(
        gw, completion(max_tokens=max_tokens, stream=True, tier=tier))
    await started.wait()
    queued = asyncio.create_task(gw.post(completion(tier=tier)))
    async with asyncio.timeout(5):
        while await gw.metric("gateway_queue_depth", **{"class": tier}) < 1:
            await asyncio.sleep(0.01)
    return holder, queued


# Outcomes of requests refused before they reached an engine (each also counted,
# once, in gateway_rejections_total). In these tests no request arrives while
# the gateway is starting or draining, so every "unavailable" is a no_engine refusal.
REFUSED = ("rejected", "expired", "unavailable")


@dataclass(frozen=True)
class Counts:
    requests: float  # sum of gateway_requests_total
    refused: float  # of which with an outcome in REFUSED
    rejections: float  # sum of gateway_rejections_total


async def counts(gw: LocalGateway) -> Counts:
    refused = 0.0
    for outcome in REFUSED:
        refused += await gw.metric("gateway_requests_total", outcome=outcome)
    return Counts(await gw.metric("gateway_requests_total"), refused,
                  await gw.metric("gateway_rejections_total"))


async def assert_settled(gw: LocalGateway, sent: int, before: Counts,
                         timeout: float = 5.0) -> None:
    """Every request ended in exactly one outcome and nothing is left running.

    ``sent`` requests went out since ``before``: received (each counted once
    in ``gateway_requests_total``) = refused (each counted once in
    ``gateway_rejections_total``) + admitted; the queues, the granted slots,
    the gateway's in-flight set and every engine's own in-flight and running
    counts are back to zero.
    """
    deadline = time.monotonic() + timeout
    while True:
        now = await counts(gw)
        inflight = await gw.metric("gateway_engine_inflight")
        granted = await gw.metric("gateway_engine_granted")
        queued = await gw.metric("gateway_queue_depth")
        engine_side = sum(m.engine.inner.stats().inflight + m.engine.inner.stats().running
                          for m in gw.state.pool if isinstance(m.engine, FaultyEngine))
        received = now.requests - before.requests
        settled = (received == sent and inflight == granted == queued == engine_side == 0
                   and gw.state.lifecycle.inflight == 0)
        if settled:
            break
        assert time.monotonic() < deadline, (
            f"not settled: received {received} of {sent}, engine inflight {inflight}, "
            f"granted {granted}, queued {queued}, engine-side {engine_side}, "
            f"gateway inflight {gw.state.lifecycle.inflight}")
        await asyncio.sleep(0.02)
    refused = now.refused - before.refused
    assert now.rejections - before.rejections == refused
    admitted = received - refused
    assert admitted >= 0
