"""A streaming client that stops reading is cut after ``server.write_timeout_s``
and its engine request aborted; a client that reads slowly but steadily is not.

The client is a raw socket with a small receive buffer, so the server's
transport buffer fills after a few hundred KiB and aiohttp's ``write`` blocks
on drain, exactly as with a stuck client on a real network.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import orjson
import pytest

from engines.sim_profile import DEFAULT_PROFILE
from tests.reliability.fault_support import (
    LocalGateway,
    assert_settled,
    completion,
    counts,
    fault_config,
    start_local_gateway,
)

WRITE_TIMEOUT_S = 0.5
# Tokens as fast as the loop allows: the stream outruns any reader.
ZERO_COST = dataclasses.replace(DEFAULT_PROFILE, zero_cost=True)


@pytest.fixture
async def gw() -> AsyncIterator[LocalGateway]:
    gateway = await start_local_gateway(
        fault_config({"a": ("interactive", "standard", "batch")},
                     write_timeout_s=WRITE_TIMEOUT_S), profile=ZERO_COST)
    yield gateway
    await gateway.stop()


async def open_raw_stream(gw: LocalGateway, body: dict[str, object]) -> socket.socket:
    """Send a streaming request on a socket with a 4 KiB receive buffer."""
    loop = asyncio.get_running_loop()
    url = urlsplit(gw.url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, (url.hostname, url.port))
    payload = orjson.dumps(body)
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n")
    await loop.sock_sendall(sock, head.encode() + payload)
    return sock


async def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    async with asyncio.timeout(timeout):
        while True:
            try:
                chunk = await loop.sock_recv(sock, 65536)
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk


# A long stream of large events: 8 choices x 1500 tokens with 5 logprobs each.
BIG = completion(max_tokens=1500, stream=True, n=8, logprobs=5)


async def test_client_that_stops_reading_is_cut_and_aborted(gw: LocalGateway) -> None:
    before = await counts(gw)
    engine = gw.engine("a")
    sock = await open_raw_stream(gw, BIG)
    try:
        loop = asyncio.get_running_loop()
        first = await loop.sock_recv(sock, 4096)
        assert first.startswith(b"HTTP/1.1 200")
        # Now read nothing: the server's buffers fill and its writes block.
        stopped = time.monotonic()
        async with asyncio.timeout(20):
            while await gw.metric("gateway_requests_total", outcome="client_slow") < 1:
                await asyncio.sleep(0.05)
        cut_after = time.monotonic() - stopped
        assert cut_after >= WRITE_TIMEOUT_S
        assert len(engine.aborted) == 1
        # The connection is gone: what was buffered drains, then EOF or reset.
        rest = await read_until_closed(sock, timeout=10)
        assert b"data: [DONE]" not in first + rest
    finally:
        sock.close()
    await assert_settled(gw, 1, before)


async def test_slow_but_steady_reader_is_not_cut(gw: LocalGateway) -> None:
    """Each write may block, but none for the whole timeout: it finishes."""
    before = await counts(gw)
    body = completion(max_tokens=300, stream=True, n=2, logprobs=5)
    sock = await open_raw_stream(gw, body)
    loop = asyncio.get_running_loop()
    data = b""
    try:
        async with asyncio.timeout(60):
            while not data.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n"):  # chunked end
                chunk = await loop.sock_recv(sock, 2048)
                assert chunk, "closed before [DONE]"
                data += chunk
                await asyncio.sleep(0.01)  # ~200 KiB/s: slow, never stopped
    finally:
        sock.close()
    assert data.startswith(b"HTTP/1.1 200")
    assert await gw.metric("gateway_requests_total", outcome="client_slow") == 0
    assert await gw.metric("gateway_requests_total", outcome="ok") == 1
    await assert_settled(gw, 1, before)
