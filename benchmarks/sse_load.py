"""A lean closed-loop SSE load client: streams per second, events per second.

    python -m benchmarks.sse_load --url http://127.0.0.1:8401 --concurrency 32 \
        --max-tokens 512 --duration 10

Each of ``--concurrency`` connections sends one streaming ``/v1/completions``
request at a time (``Connection: close``, so a response ends at EOF) and counts
SSE events by their ``\\n\\n`` terminators, without parsing JSON: on one core it
reads far more events per second than the servers it measures can write, which
is the point (the Python loadtest parses every event and would be the
bottleneck). TTFT is send to the first bytes of the first event,
connect included. Tokens per stream are ``max_tokens`` (``ignore_eos``), so a
coalescing server shows fewer events for the same tokens. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from urllib.parse import urlsplit

import orjson
import uvloop


class _Stats:
    __slots__ = ("bytes", "errors", "events", "streams", "ttft")

    def __init__(self) -> None:
        self.streams = self.events = self.bytes = self.errors = 0
        self.ttft: list[float] = []


async def _one(host: str, port: int, request: bytes, stats: _Stats) -> None:
    sent = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        events = size = 0
        last = b""
        ok = None
        first = 0.0
        while data := await reader.read(1 << 16):
            if not first and b"data: " in data:
                first = time.perf_counter() - sent
            if ok is None:
                ok = data.startswith(b"HTTP/1.1 200")
            size += len(data)
            # An event ends with a blank line; count across read boundaries too.
            events += (last[-1:] + data[:1]).count(b"\n\n") + data.count(b"\n\n")
            last = (last + data)[-64:]
        if ok and b"data: [DONE]" in last:
            stats.streams += 1
            stats.events += events - 1  # not the [DONE] marker
            stats.bytes += size
            stats.ttft.append(first)
        else:
            stats.errors += 1
    finally:
        writer.close()


async def run(url: str, concurrency: int, max_tokens: int, duration: float,
              path: str) -> dict[str, float]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    body = orjson.dumps({"model": "slagate-demo", "prompt": "Hello there, how are you today?",
                         "max_tokens": max_tokens, "stream": True, "ignore_eos": True})
    request = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
               "Connection: close\r\n\r\n").encode() + body
    stats = _Stats()
    stop_at = time.perf_counter() + duration

    async def worker() -> None:
        while time.perf_counter() < stop_at:
            try:
                await _one(host, port, request, stats)
            except OSError:
                stats.errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    ttft = sorted(stats.ttft) or [float("nan")]
    return {"ttft_p50_ms": ttft[len(ttft) // 2] * 1000,
            "ttft_p99_ms": ttft[min(len(ttft) - 1, int(len(ttft) * 0.99))] * 1000,
            "streams_per_s": stats.streams / elapsed, "events_per_s": stats.events / elapsed,
            "tokens_per_s": stats.streams * max_tokens / elapsed,
            "bytes_per_s": stats.bytes / elapsed, "streams": stats.streams,
            "errors": stats.errors, "seconds": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--path", default="/v1/completions")
    args = parser.parse_args()
    result = uvloop.run(run(args.url, args.concurrency, args.max_tokens, args.duration,
                            args.path))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
