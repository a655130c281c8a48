"""Bounds on what one connection may cost: header size and time, body size and time.

aiohttp 3.14 (the installed version) has no separate header-read timeout, but its
``keepalive_timeout`` timer is armed when a connection opens and again after each
response, and is *not* pushed back by incoming bytes: a connection that has not
delivered a complete request head by then is closed. So ``server.header_timeout_s``
becomes ``keepalive_timeout`` and bounds both a slowloris head and an idle keep-alive
connection. Header sizes are the parser's ``max_line_size`` / ``max_field_size`` /
``max_headers`` (a larger head is answered 400/431 by aiohttp). The body is read here,
under ``server.body_timeout_s`` (then 408) and ``server.max_body_bytes`` (then 413,
checked against Content-Length before a byte is read); after either answer the
connection is closed, after at most ``_LINGER_S`` of draining.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import StreamReader, web
from aiohttp.web_protocol import RequestPayloadError

from gateway.config import ServerConfig
from gateway.errors import InvalidRequest, PayloadTooLarge, RequestTimeout

_CHUNK = 1 << 16
# After an early answer (413, 408) aiohttp reads and drops the rest of the body for
# this long, so a client still sending sees the answer instead of a reset; its
# default (10 s) would let a slow sender hold the connection that much longer.
_LINGER_S = 2.0


def runner_options(server: ServerConfig) -> dict[str, Any]:
    """Keyword arguments for ``web.AppRunner`` (they reach aiohttp's RequestHandler)."""
    return {
        "keepalive_timeout": server.header_timeout_s,
        "max_line_size": server.max_header_bytes,
        "max_field_size": server.max_header_bytes,
        "max_headers": server.max_headers,
        "lingering_time": _LINGER_S,
    }


async def read_body(request: web.Request, limit: int, timeout_s: float) -> bytes:
    """The whole request body, at most ``limit`` bytes, within ``timeout_s``."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"Request body is larger than {limit} bytes.")
    content = request.content
    try:
        if content.is_eof():
            # All of it came with the head (most requests): nothing to wait for,
            # so no timer to arm and cancel.
            body = content.read_nowait()
            if len(body) > limit:
                raise PayloadTooLarge(f"Request body is larger than {limit} bytes.")
            return body
        return await _read_within(content, limit, timeout_s)
    except RequestPayloadError as exc:
        # e.g. a Content-Encoding the body does not match, or a broken chunk.
        detail = " ".join(str(exc).split())[:160]
        raise InvalidRequest(f"Request body could not be read: {detail}") from None


async def _read_within(content: StreamReader, limit: int, timeout_s: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            while chunk := await content.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"Request body is larger than {limit} bytes.")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(f"Request body not received within {timeout_s:g} s.") from None
    return b"".join(chunks)
