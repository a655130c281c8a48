"""``python -m gateway [--config FILE] [--host 127.0.0.1] [--port 8000]``.

No config: the embedded default (two vLLM engines on the locally built demo
model). SIGTERM/SIGINT: readiness goes 503 at once, in-flight work drains up
to ``server.drain_timeout_s``, the rest is aborted, engines stop, exit 0.
SIGHUP: reload the config file (see ``gateway/reload.py``); a bad file is
logged as an ERROR and the old config keeps serving.

With no API key in the config (local development mode) the gateway refuses to
listen on anything but a loopback address.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import signal
import sys
from pathlib import Path

from aiohttp import web

from gateway import reload
from gateway.config import ConfigError
from gateway.limits import runner_options
from gateway.logsafe import one_line

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
        live = reload.initial(args.config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    config = live.config
    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    if config.auth.open:
        if not is_loopback(host):
            print(f"refusing to listen on {one_line(host)!r}: no API key is configured "
                  "(local development mode listens on 127.0.0.1, ::1 or localhost only; "
                  "add auth.keys to the config to serve a network)", file=sys.stderr)
            return 2
        logger.warning("no API keys configured: local development mode, every request is "
                       "allowed, listening on loopback only")
    try:
        import uvloop

        return uvloop.run(serve(live, host, port))
    except ImportError:
        return asyncio.run(serve(live, host, port))


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (``localhost`` or a loopback address)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name or a wildcard: may reach other machines


async def serve(live: reload.LiveConfig, host: str, port: int) -> int:
    from gateway.app import STATE, build_app, reload_config
    from gateway.runner import GatewayRunner

    app = build_app(live)
    state = app[STATE]
    runner = GatewayRunner(app, handle_signals=False, handler_cancellation=True,
                           access_log=None, **runner_options(live.config.server))
    await runner.setup()
    site = web.TCPSite(runner, host, port, shutdown_timeout=1.0)
    await site.start()
    print(f"slagate listening on http://{host}:{port} (ready at /health/ready)", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def on_sighup() -> None:
        try:
            reload_config(state)
        except ConfigError as exc:
            logger.error("SIGHUP: config reload refused, the old config keeps serving: %s",
                         one_line(exc, limit=2000))

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
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
    cancelled = await state.lifecycle.drain(state.config.server.drain_timeout_s)
    logger.info("drained (%d cancelled); stopping engines", cancelled)
    await runner.cleanup()
    return code


if __name__ == "__main__":
    sys.exit(main())
