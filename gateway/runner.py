"""The aiohttp runner the gateway serves with.

aiohttp answers HTTP it cannot parse (a bad request line, CR/LF or control
bytes in a header, a header line over its limit, too many headers, a broken
chunk) before any route or middleware sees it: with a ``text/plain`` body, and
with the parser's traceback in the log at ERROR. Neither is the client's
business nor ours: here such a request gets the same OpenAI-shaped error body
as every other 4xx, and one escaped INFO log line, so a client cannot fill the
log with tracebacks or forge lines in it. A 500 (a bug of ours) keeps aiohttp's
own handling, traceback included.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler, RequestPayloadError

from gateway.errors import InvalidRequest

logger = logging.getLogger(__name__)

_DETAIL_CHARS = 160


class _Connection(RequestHandler):
    """One client connection; only the malformed-request answer differs."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        detail = _first_line(exc.message if isinstance(exc, HttpProcessingError)
                             else message or "")
        # %r escapes CR, LF and escape codes: the line stays one line of ours.
        logger.info("malformed HTTP request from %s (%d): %r", request.remote, status, detail)
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already sent on this connection")
        error = InvalidRequest(f"Malformed HTTP request: {detail}", code="malformed_http")
        response = web.Response(status=status, body=orjson.dumps(error.to_body()),
                                content_type="application/json")
        response.force_close()
        return response


    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if isinstance(exc, RequestPayloadError | HttpProcessingError):
            # After answering a body it could not decode (400), aiohttp drains
            # the rest of it and meets the same error again: the client's
            # fault, already answered, not worth a traceback.
            logger.info("unreadable request body: %r", _first_line(" ".join(str(exc).split())))
            return
        super().log_exception(*args, **kwargs)


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    line = lines[0].rstrip(":") if lines else "unparseable request"
    return line[:_DETAIL_CHARS]


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _Connection(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer malformed HTTP the gateway's way."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # aiohttp builds a plain Server (Application._make_handler adds its own
        # arguments first); keep all of its state and change one method: the
        # connection class it makes.
        server.__class__ = _Server
        return server
