"""The full gateway path over the simulated engine, as one server process.

    [SLAGATE_COALESCE=0] python -m benchmarks.sim_gateway --port 8401 [--zero-cost | --null-engine]

Everything a real request goes through — validation, the model's own tokenizer
(the demo model's), admission, the SLA scheduler, the dispatcher, the wire format,
metrics — with a ``SimulatedEngine`` in place of vLLM. ``--zero-cost`` makes engine
steps free, so what is measured is the gateway's own CPU per request and per token.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
from collections.abc import AsyncGenerator

import uvloop
from aiohttp import web

from engines.demo_model import ensure_demo_model
from engines.pool import EnginePool, PoolMember
from engines.protocol import EngineInfo, FinishReason, GenerationRequest, TokenDelta
from engines.sim_batch import token_text
from engines.sim_profile import DEFAULT_PROFILE
from engines.simulated import SimulatedEngine
from gateway.app import STATE, build_app
from gateway.config import (
    ControllerConfig,
    EngineSpec,
    GatewayConfig,
    SchedulerConfig,
    WarmupSpec,
)

CLASSES = ("interactive", "standard", "batch")


class _DemoSimEngine(SimulatedEngine):
    """A simulated engine that reports the demo model's directory, so the gateway
    loads the real tokenizer for it (the simulated engine has no model files)."""

    model_dir = ""

    async def start(self) -> EngineInfo:
        info = await super().start()
        return dataclasses.replace(info, model_path=self.model_dir)


class NullEngine(_DemoSimEngine):
    """Less than zero-cost: ``generate`` yields every token at once, no batch, no step
    loop, no per-token wake-up. What is left is the gateway's own cost alone (the
    zero-cost simulated engine still schedules a batch and wakes each stream once
    per token, as a real engine's output handler does)."""

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[TokenDelta, None]:
        spec = request.sampling
        for i in range(spec.max_tokens):
            finish = FinishReason.LENGTH if i == spec.max_tokens - 1 else None
            for index in range(spec.n):
                yield TokenDelta(index, token_text(100 + i), (100 + i,), finish)


def make_app(zero_cost: bool, max_num_seqs: int = 256, null: bool = False) -> web.Application:
    model_dir = str(ensure_demo_model())
    # No concurrency controller and no reserved slots: it would size the batch from
    # engine-side TTFT, which here measures only how busy the loop is, and queue
    # requests in the gateway; the floor is about CPU per request, not about that.
    config = GatewayConfig(
        engines=(EngineSpec(name="main", model="demo", served_model_name="slagate-demo",
                            classes=CLASSES, warmup=WarmupSpec(ladder=(32, 64)),
                            args={"max_num_seqs": max_num_seqs}),),
        scheduler=SchedulerConfig(reserved_slots=0, top_class_headroom=0,
                                  controller=ControllerConfig(enabled=False)))
    profile = dataclasses.replace(DEFAULT_PROFILE, zero_cost=zero_cost,
                                  max_num_seqs=max_num_seqs)
    engine = (NullEngine if null else _DemoSimEngine)("main", "slagate-demo", profile)
    engine.model_dir = model_dir
    pool = EnginePool([PoolMember(engine=engine, classes=frozenset(CLASSES))])
    return build_app(config, pool)


async def serve(host: str, port: int, zero_cost: bool, null: bool) -> None:
    app = make_app(zero_cost, null=null)
    runner = web.AppRunner(app, handle_signals=False, handler_cancellation=True,
                           access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    await app[STATE].started.wait()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8401)
    parser.add_argument("--zero-cost", action="store_true")
    parser.add_argument("--null-engine", action="store_true",
                        help="an engine that yields all tokens at once (gateway cost alone)")
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port, args.zero_cost, args.null_engine))


if __name__ == "__main__":
    main()
