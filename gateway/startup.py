"""From a ``GatewayConfig`` to serving engines: build, start, warm, hand over.

Runs as a background task owned by the app, so the HTTP server listens (and
answers ``/health/live``, and ``/health/ready`` with 503) while engines load.
``engine_factory`` and ``rewarmer`` give the engine supervisor the same two
steps for one engine, to bring a fresh instance up after one died.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass

from engines.demo_model import ensure_demo_model
from engines.pool import EnginePool, PoolMember
from engines.protocol import Engine, EngineInfo, WarmupReport
from engines.supervisor import EngineFactory, Prepare
from engines.vllm_engine import VLLMEngine
from engines.warmup import warmup_requests
from gateway.config import GatewayConfig
from gateway.serving import ServedModel
from gateway.validate import ChatMessage
from scheduler.placement import Affinity, prefix_key

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StartupReport:
    start_seconds: float
    warmups: tuple[WarmupReport, ...]


def build_pool(config: GatewayConfig) -> EnginePool:
    """One ``VLLMEngine`` per configured engine (nothing started yet)."""
    # Engine env vars are process-wide (each engine core is a child process that
    # inherits them); the config has already refused engines that disagree.
    for spec in config.engines:
        os.environ.update(spec.env)
    make = engine_factory(config)
    return EnginePool([PoolMember(engine=make(spec.name), classes=frozenset(spec.classes))
                       for spec in config.engines])


def engine_factory(config: GatewayConfig) -> EngineFactory:
    """A fresh, unstarted ``VLLMEngine`` for the configured engine of a name."""
    specs = {spec.name: spec for spec in config.engines}

    def make(name: str) -> Engine:
        spec = specs[name]
        path = str(ensure_demo_model()) if spec.is_demo else spec.model
        assert spec.served_model_name is not None  # filled in by the config loader
        return VLLMEngine(spec.name, path, spec.served_model_name, spec.args)

    return make


def rewarmer(config: GatewayConfig, models: dict[str, ServedModel],
             affinity: Affinity) -> Prepare:
    """Warm a restarted engine as start-up did, re-pinning its warmup prefixes."""
    specs = {spec.name: spec for spec in config.engines}

    async def prepare(engine: Engine, info: EngineInfo) -> WarmupReport:
        spec = specs[engine.name]
        report = await _warm(engine, spec.warmup.prompts, spec.warmup.ladder,
                             models[info.served_model_name], affinity,
                             config.scheduler.prefix_tokens)
        logger.info("engine %s re-warmed: %d requests in %.1f s", engine.name, report.requests,
                    report.seconds)
        return report

    return prepare


async def start_and_warm(config: GatewayConfig, pool: EnginePool, affinity: Affinity
                         ) -> tuple[dict[str, ServedModel], StartupReport]:
    """Start every engine, load each served model's tokenizer, warm every engine,
    and pin each warmup prompt's prefix to the engine that cached it."""
    from gateway.prompts import PromptEncoder

    started = time.perf_counter()
    await pool.start()
    start_seconds = time.perf_counter() - started
    models: dict[str, ServedModel] = {}
    for name, info in pool.infos.items():
        if info.served_model_name not in models:
            encoder = await asyncio.to_thread(PromptEncoder.from_model_dir, info.model_path)
            models[info.served_model_name] = ServedModel(
                info.served_model_name, encoder, info.max_model_len)
        elif models[info.served_model_name].max_model_len != info.max_model_len:
            logger.warning("engine %s serves %s with a different max_model_len", name,
                           info.served_model_name)
    reports = await asyncio.gather(*(
        _warm(pool.engine(spec.name), spec.warmup.prompts, spec.warmup.ladder,
              models[pool.infos[spec.name].served_model_name], affinity,
              config.scheduler.prefix_tokens)
        for spec in config.engines
    ))
    for r in reports:
        logger.info("engine %s warmed: %d requests, %d output tokens in %.1f s", r.engine,
                    r.requests, r.output_tokens, r.seconds)
    return models, StartupReport(start_seconds, tuple(reports))


async def _warm(engine: Engine, prompts: tuple[str, ...], ladder: tuple[int, ...],
                model: ServedModel, affinity: Affinity, prefix_tokens: int) -> WarmupReport:
    name = engine.name
    encoder = model.encoder
    # Each prompt in both forms clients send it: as raw completion text, and as
    # a chat system message (the chat template puts other tokens before it).
    forms = [encoder.encode_text(p) for p in prompts]
    forms += [encoder.encode_chat([ChatMessage("system", p)]) for p in prompts]
    for ids in forms:
        affinity.remember(prefix_key(ids, prefix_tokens), name)
    requests = warmup_requests(name, forms, ladder, encoder.encode_text, model.max_model_len)
    return await engine.warmup(requests)
