"""CPU per request and per streamed token of the gateway's request path, in process.

    python -m benchmarks.request_path [--engine zero-cost|null] [--server gateway|bare] \
        [--requests 20000] [--streams 200] [--connections 32] [--profile FILE]

No sockets and no second process: the real app (``benchmarks.sim_gateway.make_app``,
or ``benchmarks.bare_server`` for the floor) is served by aiohttp's own
``RequestHandler`` over an in-memory transport. Each of ``--connections`` keep-alive
"connections" feeds raw HTTP request bytes to its handler and the next request as
soon as the previous response is complete (closed loop, as ``wrk`` does), so
everything a server does runs — HTTP parsing, middlewares, validation, the demo
tokenizer, admission, scheduler, dispatcher, engine, wire format, metrics — except
the kernel's socket calls, the same for every server. The client's own share is a
few byte comparisons per write.

What is measured: ``time.process_time()`` over the measured phase (after a warm-up),
divided by requests (non-streaming: 8 tokens each, ``wrk``'s body in
``frontend_floor``) and by tokens (streaming: 512 tokens per stream). Robust to a
noisy box, unlike a rate. ``--profile`` writes cProfile stats of the measured phases.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import time
from collections.abc import Callable
from typing import Any

import uvloop
from aiohttp import web

PROMPT = "Hello there, how are you today?"


def _request(stream: bool, max_tokens: int) -> bytes:
    extra = ', "stream": true' if stream else ""
    body = (f'{{"model": "slagate-demo", "prompt": "{PROMPT}", "max_tokens": {max_tokens}, '
            f'"ignore_eos": true{extra}}}').encode()
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


class _Transport(asyncio.Transport):
    """One keep-alive connection's socket: writes go to the client, nothing is sent."""

    def __init__(self, client: _Connection) -> None:
        super().__init__()
        self._client = client
        self._closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._client.received(bytes(data))

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def abort(self) -> None:
        self._closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8401)}.get(
            name, default)

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_reading(self) -> bool:
        return True


class _Connection:
    """A closed-loop client on one connection: the next request once a response ends."""

    def __init__(self, make_protocol: Callable[[], asyncio.Protocol], request: bytes,
                 stream: bool, on_done: Callable[[bool], None]) -> None:
        self._request = request
        self._stream = stream
        self._on_done = on_done
        self._buffer = b""
        self._loop = asyncio.get_running_loop()
        self.transport = _Transport(self)
        self.protocol = make_protocol()
        self.protocol.connection_made(self.transport)
        self.stopped = False

    def send(self) -> None:
        self._buffer = b""
        self._loop.call_soon(self.protocol.data_received, self._request)

    def received(self, data: bytes) -> None:
        buffer = self._buffer = self._buffer + data
        if self._stream:
            # A chunked response ends with the zero-length chunk; a data chunk
            # (an event ends with a blank line) cannot end with those bytes.
            if not buffer.endswith(b"0\r\n\r\n"):
                if len(buffer) > 4096:
                    self._buffer = buffer[:64] + buffer[-64:]  # the status and the end
                return
            ok = buffer.startswith(b"HTTP/1.1 200")
        else:
            head_end = buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = buffer[:head_end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15:head.find(b"\r\n", at)].strip())
            if len(buffer) - head_end - 4 < length:
                return
            ok = head.startswith(b"http/1.1 200")
        self._on_done(ok)
        if not self.stopped:
            self.send()

    def close(self) -> None:
        self.stopped = True
        self.protocol.connection_lost(None)


async def _phase(make_protocol: Callable[[], asyncio.Protocol], stream: bool, max_tokens: int,
                 total: int, connections: int) -> tuple[float, int]:
    """Run ``total`` requests over ``connections`` closed-loop connections; CPU seconds."""
    done = asyncio.Event()
    count = errors = 0

    def on_done(ok: bool) -> None:
        nonlocal count, errors
        count += 1
        errors += not ok
        if count >= total:
            for c in conns:
                c.stopped = True
            done.set()

    request = _request(stream, max_tokens)
    conns = [_Connection(make_protocol, request, stream, on_done)
             for _ in range(connections)]
    started = time.process_time()
    for c in conns:
        c.send()
    await done.wait()
    cpu = time.process_time() - started
    # Let the last handlers finish (they end after their response is written).
    await asyncio.sleep(0.05)
    for c in conns:
        c.close()
    await asyncio.sleep(0.01)
    return cpu, errors


async def run(args: argparse.Namespace) -> dict[str, float]:
    if args.server == "bare":
        from benchmarks.bare_server import build
        app = build()
        state = None
    else:
        from benchmarks.sim_gateway import make_app
        from gateway.app import STATE
        app = make_app(zero_cost=args.engine == "zero-cost", null=args.engine == "null")
        state = app[STATE]
    runner = web.AppRunner(app, handle_signals=False, handler_cancellation=True,
                           access_log=None)
    await runner.setup()
    if state is not None:
        await state.started.wait()
        if state.startup_error is not None:
            raise state.startup_error
    server = runner.server
    assert server is not None

    if args.gc_off:
        gc.disable()  # diagnostic: what the cyclic collector costs on this path
    profile = cProfile.Profile() if args.profile else None
    results: dict[str, float] = {}
    phases = [("request", False, 8, args.requests), ("stream", True, 512, args.streams)]
    for name, stream, tokens, total in phases:
        if args.only not in (None, name):
            continue
        await _phase(server, stream, tokens, max(args.connections, total // 10),
                     args.connections)  # warm-up
        gc.collect()
        if profile is not None:
            profile.enable()
        cpu, errors = await _phase(server, stream, tokens, total, args.connections)
        if profile is not None:
            profile.disable()
        if errors:
            raise RuntimeError(f"{errors} of {total} {name} phase responses were not 200")
        per = total * (tokens if stream else 1)
        results[f"cpu_us_per_{'token' if stream else 'request'}"] = cpu * 1e6 / per
    await runner.cleanup()
    if profile is not None:
        profile.dump_stats(args.profile)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=("gateway", "bare"), default="gateway")
    parser.add_argument("--engine", choices=("zero-cost", "null"), default="zero-cost")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--gc-off", action="store_true",
                        help="disable the cyclic garbage collector (to see its share)")
    parser.add_argument("--only", choices=("request", "stream"), help="run one phase only")
    parser.add_argument("--repeat", type=int, default=1, help="runs; prints each and the best")
    parser.add_argument("--profile", help="write cProfile stats of the measured phases here")
    args = parser.parse_args()
    best: dict[str, float] = {}
    for _ in range(args.repeat):
        result = uvloop.run(run(args))
        print({k: round(v, 2) for k, v in result.items()}, flush=True)
        best = {k: min(v, best.get(k, v)) for k, v in result.items()}
    coalesce = os.environ.get("SLAGATE_COALESCE", "1")
    print(f"best of {args.repeat}: server={args.server} engine={args.engine} "
          f"coalesce={coalesce} " + " ".join(f"{k}={v:.1f}" for k, v in best.items()))


if __name__ == "__main__":
    main()
