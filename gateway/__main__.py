"""``python -m gateway [--config FILE] [--host 127.0.0.1] [--port 8000]``.

No config: the embedded default (two vLLM engines on the locally built demo
model). SIGTERM/SIGINT: readiness goes 503 at once, in-flight work drains up
to ``server.drain_timeout_s``, the rest is aborted, engines stop, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from aiohttp import web

from gateway.config import ConfigError, GatewayConfig, default_config, load_config

logger = logging.getLogger("gateway")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, help="YAML config (default: embedded demo)")
    parser.add_argument("--host", help="listen address (default: server.host, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (default: server.port, 8000)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config) if args.config else default_config()
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    try:
        import uvloop

        return uvloop.run(serve(config, host, port))
    except ImportError:
        return asyncio.run(serve(config, host, port))


async def serve(config: GatewayConfig, host: str, port: int) -> int:
    from gateway.app import STATE, build_app
    from gateway.runner import GatewayRunner

    app = build_app(config)
    state = app[STATE]
    runner = GatewayRunner(app, handle_signals=False, handler_cancellation=True,
                           access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, shutdown_timeout=1.0)
    await site.start()
    print(f"slagate listening on http://{host}:{port} (ready at /health/ready)", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiter = asyncio.ensure_future(stop.wait())
    started = asyncio.ensure_future(state.started.wait())
    await asyncio.wait({waiter, started}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if state.started.is_set():
        if state.startup_error is not None:
            print(f"slagate failed to start: {state.startup_error}", file=sys.stderr, flush=True)
            code = 1
        else:
            report = state.startup
            assert report is not None
            warm = ", ".join(f"{r.engine} {r.seconds:.1f}s" for r in report.warmups)
            print(f"slagate ready: engines started in {report.start_seconds:.1f}s, "
                  f"warmup {warm}", flush=True)
            await waiter
    waiter.cancel()
    started.cancel()
    cancelled = await state.lifecycle.drain(config.server.drain_timeout_s)
    logger.info("drained (%d cancelled); stopping engines", cancelled)
    await runner.cleanup()
    return code


if __name__ == "__main__":
    sys.exit(main())
