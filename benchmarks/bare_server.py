"""The front-end floor: the least an aiohttp + uvloop + orjson server can do per request.

    python -m benchmarks.bare_server --port 8400

``POST /v1/completions`` (and ``/v1/chat/completions``) parses the JSON body with
orjson and answers in OpenAI's shapes with the same field set the gateway sends:
one JSON body when ``stream`` is false, else ``max_tokens`` SSE chunks (one token
each) and ``data: [DONE]``. No validation, no tokenizer, no scheduler, no engine:
what is left is the HTTP stack, JSON and one ``write`` per event, the cost every
Python front end pays. ``benchmarks/frontend_floor.py`` measures the gateway
against it.
"""

from __future__ import annotations

import argparse
import time
import uuid

import orjson
import uvloop
from aiohttp import web

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


async def completions(request: web.Request) -> web.StreamResponse:
    body = orjson.loads(await request.read())
    max_tokens = int(body.get("max_tokens", 16))
    chat = request.path.endswith("/chat/completions")
    rid = f"cmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    model = body.get("model", "slagate-demo")
    if not body.get("stream"):
        text = " t123" * max_tokens
        choice = ({"index": 0, "message": {"role": "assistant", "content": text,
                                          "refusal": None},
                   "logprobs": None, "finish_reason": "length"} if chat else
                  {"index": 0, "text": text, "logprobs": None, "finish_reason": "length"})
        return web.Response(body=orjson.dumps({
            "id": rid, "object": "chat.completion" if chat else "text_completion",
            "created": created, "model": model, "system_fingerprint": None,
            "service_tier": "standard", "choices": [choice],
            "usage": {"prompt_tokens": 8, "completion_tokens": max_tokens,
                      "total_tokens": 8 + max_tokens}}), content_type="application/json")
    response = web.StreamResponse(headers=SSE_HEADERS)
    await response.prepare(request)
    obj = "chat.completion.chunk" if chat else "text_completion"
    for i in range(max_tokens):
        finish = "length" if i == max_tokens - 1 else None
        choice = ({"index": 0, "delta": {"content": " t123"}, "logprobs": None,
                   "finish_reason": finish} if chat else
                  {"index": 0, "text": " t123", "logprobs": None, "finish_reason": finish})
        await response.write(b"data: " + orjson.dumps({
            "id": rid, "object": obj, "created": created, "model": model,
            "system_fingerprint": None, "service_tier": "standard",
            "choices": [choice]}) + b"\n\n")
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def ready(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ready"}', content_type="application/json")


def build() -> web.Application:
    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_get("/health/ready", ready)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8400)
    args = parser.parse_args()
    uvloop.install()
    web.run_app(build(), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
