"""Connection bounds through a real aiohttp server: a slow request head is cut off
at ``header_timeout_s``, oversized heads are refused, and bodies are bounded in
size (413) and time (408)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from gateway.app import error_middleware
from gateway.config import ServerConfig
from gateway.limits import read_body, runner_options

SERVER = ServerConfig(header_timeout_s=0.5, body_timeout_s=0.5, max_body_bytes=1000,
                      max_header_bytes=512, max_headers=8)


async def echo(request: web.Request) -> web.Response:
    body = await read_body(request, SERVER.max_body_bytes, SERVER.body_timeout_s)
    return web.Response(text=str(len(body)))


@pytest.fixture
async def port() -> AsyncIterator[int]:
    app = web.Application(middlewares=[error_middleware])
    app.router.add_post("/echo", echo)
    runner = web.AppRunner(app, access_log=None, **runner_options(SERVER))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    yield server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    await runner.cleanup()


async def exchange(port: int, *parts: bytes, gap: float = 0.0,
                   wait: float = 5.0) -> tuple[bytes, float]:
    """Send ``parts`` with ``gap`` seconds between them; all the server said, and when
    it closed (seconds after connecting)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.monotonic()
    try:
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(gap)
        data = await asyncio.wait_for(reader.read(), wait)
    except (ConnectionResetError, BrokenPipeError):
        data = b""
    finally:
        writer.close()
    return data, time.monotonic() - start


def request(body: bytes, *headers: bytes) -> bytes:
    head = [b"POST /echo HTTP/1.1", b"Host: x", b"Connection: close",
            b"Content-Length: %d" % len(body), *headers]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


async def test_a_well_behaved_request_is_served(port: int) -> None:
    data, _ = await exchange(port, request(b"x" * 1000))
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"1000")


async def test_a_slow_request_head_is_cut_off(port: int) -> None:
    # One header byte every 50 ms would hold a connection for ever without a deadline.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.monotonic()
    closed_after = None
    try:
        for c in b"POST /echo HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"z" * 100:
            writer.write(bytes([c]))
            await writer.drain()
            await asyncio.sleep(0.05)
            if reader.at_eof():
                closed_after = time.monotonic() - start
                break
    except (ConnectionResetError, BrokenPipeError):
        closed_after = time.monotonic() - start
    finally:
        writer.close()
    assert closed_after is not None, "the server kept a slow head open"
    assert 0.4 <= closed_after < 1.5


async def test_an_idle_connection_is_closed(port: int) -> None:
    data, elapsed = await exchange(port, b"", wait=5.0)
    assert data == b"" and elapsed < 1.5


async def test_oversized_heads_are_refused(port: int) -> None:
    data, _ = await exchange(port, request(b"{}", b"X-Big: " + b"a" * 600))
    assert data.split(b" ", 2)[1] in (b"400", b"431")
    many = [b"X-%d: v" % i for i in range(12)]
    data, _ = await exchange(port, request(b"{}", *many))
    assert data.split(b" ", 2)[1] in (b"400", b"431")


async def test_a_declared_oversized_body_is_413_before_reading(port: int) -> None:
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"
    data, elapsed = await exchange(port, head)  # no body sent at all
    assert data.startswith(b"HTTP/1.1 413") and b"larger than 1000 bytes" in data
    assert elapsed < 3.0  # answered at once, closed after the short linger


async def test_a_chunked_body_over_the_limit_is_413(port: int) -> None:
    head = (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (600, b"y" * 600)
    data, _ = await exchange(port, head + chunk + chunk + b"0\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 413")


async def test_a_slow_body_is_408_and_the_connection_closed(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.monotonic()
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 5)
    answered = time.monotonic() - start
    rest = await asyncio.wait_for(reader.read(), 10)  # EOF: the server closed it
    writer.close()
    assert status.startswith(b"HTTP/1.1 408") and b"not received within 0.5 s" in rest
    assert 0.4 <= answered < 2.0


@pytest.mark.parametrize("parts", [1, 3])
async def test_a_body_is_the_same_read_at_once_or_as_it_arrives(port: int, parts: int) -> None:
    # One write: the body is complete with the head (read without a timer); three
    # writes 50 ms apart: it is read as it arrives, under body_timeout_s.
    whole = request(b"x" * 900)
    size = -(-len(whole) // parts)
    pieces = [whole[i:i + size] for i in range(0, len(whole), size)]
    data, _ = await exchange(port, *pieces, gap=0.05 if parts > 1 else 0.0)
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"900")


async def test_a_chunked_body_over_the_limit_is_413_as_it_arrives(port: int) -> None:
    head = (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (600, b"y" * 600)
    data, _ = await exchange(port, head + chunk, chunk, b"0\r\n\r\n", gap=0.05)
    assert data.startswith(b"HTTP/1.1 413")
