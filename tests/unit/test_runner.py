"""``GatewayRunner`` and the error middleware, in process: whatever aiohttp
refuses itself is answered with an OpenAI error body and logged without a
traceback (the full battery runs against real vLLM in tests/reliability)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp import web

from gateway.app import error_middleware
from gateway.runner import GatewayRunner


async def _read_body(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"ok": True})


async def _too_large(request: web.Request) -> web.Response:
    raise web.HTTPRequestEntityTooLarge(max_size=1, actual_size=2)


@pytest.fixture
async def port() -> AsyncIterator[int]:
    app = web.Application(middlewares=[error_middleware])
    app.router.add_post("/read", _read_body)
    app.router.add_get("/too-large", _too_large)
    runner = GatewayRunner(app, handle_signals=False, handler_cancellation=True,
                           access_log=None)
    await runner.setup()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = int(s.getsockname()[1])
    site = web.TCPSite(runner, "127.0.0.1", free)
    await site.start()
    yield free
    await runner.cleanup()


async def exchange(port: int, raw: bytes) -> tuple[int, dict[str, object]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Content-Type: application/json" in head, head
    return int(head.split(b" ", 2)[1]), orjson.loads(body)


MALFORMED = [
    b"HELLO\r\n\r\n",
    b"POST /read HTTP/1.1\r\nHost: x\r\nX-A: \x1b[2Jred\r\nContent-Length: 2\r\n\r\n{}",
    b"POST /read HTTP/1.1\r\nHost: x\r\nX-A: a\nFORGED: 1\r\nContent-Length: 2\r\n\r\n{}",
    b"POST /read HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 9000 + b"\r\n\r\n",
    b"POST /read HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
]


@pytest.mark.parametrize("raw", MALFORMED)
async def test_malformed_http_gets_an_openai_body(port: int, raw: bytes,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    status, body = await exchange(port, raw)
    assert status == 400
    error = body["error"]
    assert isinstance(error, dict) and error["code"] == "malformed_http"
    assert error["type"] == "invalid_request_error"
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    for record in caplog.records:
        assert "\n" not in record.getMessage() and "\x1b" not in record.getMessage()


async def test_undecodable_body_leaves_no_traceback(port: int,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    # The route reads the body and fails; aiohttp then drains the rest of it
    # and meets the same decoding error again, which it would log as ERROR.
    caplog.set_level(logging.DEBUG)
    raw = (b"POST /read HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
           b"Content-Encoding: gzip\r\nContent-Length: 8\r\n\r\nnot gzip")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert data.startswith(b"HTTP/1.1 500")  # this bare route does not catch it...
    # ...and that 500 (a bug of the route) keeps its traceback, but the drain
    # after it adds none.
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert all("Unhandled exception" not in r.getMessage() for r in errors)


async def test_other_aiohttp_errors_get_an_openai_body(port: int) -> None:
    raw = b"GET /too-large HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    status, body = await exchange(port, raw)
    assert status == 413
    assert body["error"] == {"message": "Request Entity Too Large",
                             "type": "invalid_request_error", "param": None, "code": 413}
