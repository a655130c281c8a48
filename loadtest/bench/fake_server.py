"""A fake OpenAI-compatible streaming server, for the instrument's own tests and benchmarks.

Not a model of an LLM server: it streams ``max_tokens`` one-token events after a fixed
TTFT and ITL (zero by default: the overhead benchmark's "zero-latency server"), and can be
told to reject classes with 429/503 + ``Retry-After`` + ``X-Reject-Reason``, to reject the
first N requests, to omit usage, to send vLLM's role-only first chat event, or to publish
``/v1/sla`` and ``/metrics``. It logs, per ``x-request-id``, when each request arrived and
when its first and last events were written (``time.perf_counter_ns``: CLOCK_MONOTONIC,
comparable across processes), served at ``GET /fake/log``, so a benchmark can measure
the client's timing error against the server's own clock.

    python -m loadtest.bench.fake_server --port 8100 [--ttft-ms 0] [--itl-ms 0] [--sla]
        [--config GATEWAY.yaml]   # accepted (and checked) so the tuner can launch it
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiohttp import web

SLA_EXAMPLE = {
    "classes": [
        {"name": "interactive", "ttft_target_ms": 1000, "tpot_target_ms": 200},
        {"name": "batch", "ttft_target_ms": 30000, "tpot_target_ms": 1000},
    ],
    "default_class": "interactive",
}


@dataclass(slots=True)
class Behaviour:
    """How the fake answers; mutable so a test can change it between runs."""

    model: str = "fake-model"
    ttft_s: float = 0.0
    itl_s: float = 0.0
    sla: dict[str, Any] | None = None
    metrics: bool = False
    usage: bool = True
    chat_role_first: bool = False  # vLLM sends {"delta": {"role": "assistant"}} first
    reject: dict[str, tuple[int, str, str]] = field(default_factory=dict)  # class -> status...
    reject_first: int = 0  # the first N streamed requests get 429 Retry-After: 0
    fail_after_tokens: int | None = None  # end with an in-stream error after N tokens
    keep_bodies: bool = True  # record bodies in ``seen`` (tests); off for benchmarks
    seen: list[dict[str, Any]] = field(default_factory=list)  # request bodies received
    log: list[tuple[str, int, int, int]] = field(default_factory=list)


BEHAVIOUR = web.AppKey("behaviour", Behaviour)


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


async def _stream(request: web.Request, body: dict[str, Any], chat: bool) -> web.StreamResponse:
    b = request.app[BEHAVIOUR]
    recv = time.perf_counter_ns()
    tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    base = {"id": "cmpl-fake", "created": 0, "model": b.model}
    if chat:
        template = {**base, "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": {"content": "tok "}, "finish_reason": None}]}
    else:
        template = {**base, "object": "text_completion",
                    "choices": [{"index": 0, "text": "tok ", "finish_reason": None}]}
    token_event = _event(template)
    if chat and b.chat_role_first:
        await response.write(_event({**template, "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": ""}}]}))
    if b.ttft_s:
        await asyncio.sleep(b.ttft_s)
    first = last = 0
    for i in range(tokens):
        if i and b.itl_s:
            await asyncio.sleep(b.itl_s)
        if b.fail_after_tokens is not None and i == b.fail_after_tokens:
            await response.write(_event({"error": {"message": "engine died", "code": 500}}))
            return response
        await response.write(token_event)
        last = time.perf_counter_ns()
        first = first or last
    if b.usage and (body.get("stream_options") or {}).get("include_usage"):
        usage = {"prompt_tokens": 7, "completion_tokens": tokens, "total_tokens": tokens + 7}
        await response.write(_event({**base, "choices": [], "usage": usage}))
    await response.write(b"data: [DONE]\n\n")
    b.log.append((request.headers.get("x-request-id", ""), recv, first, last))
    return response


async def _generate(request: web.Request, chat: bool) -> web.StreamResponse:
    b = request.app[BEHAVIOUR]
    body = orjson.loads(await request.read())
    if b.keep_bodies:
        b.seen.append(body)
    if body.get("model") != b.model:
        return web.json_response({"error": {"message": f"model {body.get('model')!r} not found"}},
                                 status=404)
    tier = body.get("service_tier")
    if tier in b.reject:
        status, retry_after, reason = b.reject[tier]
        return web.Response(
            status=status, headers={"Retry-After": retry_after, "X-Reject-Reason": reason},
            body=b'{"error": {"message": "shed by the fake"}}', content_type="application/json",
        )
    if not body.get("stream"):
        return web.json_response({"id": "x", "choices": [{"text": "tok", "index": 0}]})
    if b.reject_first > 0:
        b.reject_first -= 1
        return web.Response(status=429, headers={"Retry-After": "0", "X-Reject-Reason": "queue"})
    return await _stream(request, body, chat)


async def completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, chat=False)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, chat=True)


async def models(request: web.Request) -> web.Response:
    name = request.app[BEHAVIOUR].model
    return web.json_response({"object": "list", "data": [{"id": name, "object": "model"}]})


async def sla(request: web.Request) -> web.Response:
    data = request.app[BEHAVIOUR].sla
    return web.json_response(data) if data is not None else web.Response(status=404)


async def metrics(request: web.Request) -> web.Response:
    if not request.app[BEHAVIOUR].metrics:
        return web.Response(status=404)
    text = ('# TYPE gateway_queue_depth gauge\ngateway_queue_depth{class="batch"} 3\n'
            'gateway_engine_inflight{engine="e0"} 5\nunrelated_metric 1\n')
    return web.Response(text=text)


async def ready(request: web.Request) -> web.Response:
    return web.json_response({"ready": True})


async def fake_log(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(request.app[BEHAVIOUR].log),
                        content_type="application/json")


def make_app(behaviour: Behaviour | None = None) -> web.Application:
    app = web.Application()
    app[BEHAVIOUR] = behaviour or Behaviour()
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/v1/sla", sla)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/fake/log", fake_log)
    return app


def _check_config(path: Path) -> str:
    """What the tuner's generated gateway config asks for; a way to fake a failing start."""
    config = yaml.safe_load(path.read_text())
    args = config["engines"][0].get("args", {})
    if args.get("max_num_seqs", 1) > 512:
        sys.exit(f"fake gateway: max_num_seqs={args['max_num_seqs']} does not fit in memory")
    return str(config["engines"][0].get("model", "fake-model"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--ttft-ms", type=float, default=0.0)
    parser.add_argument("--itl-ms", type=float, default=0.0)
    parser.add_argument("--sla", action="store_true", help="serve an example GET /v1/sla")
    parser.add_argument("--config", type=Path, help="a gateway config (the tuner passes one)")
    parser.add_argument("--reuse-port", action="store_true",
                        help="share the port with other instances (SO_REUSEPORT)")
    parser.add_argument("--log-file", type=Path,
                        help="write the timing log here on exit (with --reuse-port, "
                             "GET /fake/log reaches only one instance)")
    args = parser.parse_args()
    behaviour = Behaviour(ttft_s=args.ttft_ms / 1000, itl_s=args.itl_ms / 1000,
                          sla=SLA_EXAMPLE if args.sla else None, metrics=True, keep_bodies=False)
    # a measurement fixture: no collector pauses in the server's own timings (it keeps only
    # its small timing log, and makes no cyclic garbage worth collecting in a benchmark)
    gc.disable()
    if args.config:
        behaviour.model = _check_config(args.config)
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    app = make_app(behaviour)
    if args.log_file:
        async def dump_log(app: web.Application) -> None:
            args.log_file.write_bytes(orjson.dumps(app[BEHAVIOUR].log))

        app.on_shutdown.append(dump_log)
    web.run_app(app, host=args.host, port=args.port, access_log=None, reuse_port=args.reuse_port,
                print=lambda *_: print(f"fake server on http://{args.host}:{args.port}",
                                       flush=True))


if __name__ == "__main__":
    main()
