"""Coalescing through the whole gateway (HTTP, wire format, metrics) on the simulated engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from benchmarks.sim_gateway import make_app
from gateway import coalesce
from gateway.app import STATE


class _Lag:
    def __init__(self, lagging: bool) -> None:
        self.lagging = lagging  # True: a saturated loop, as far as the streams can tell


@pytest.fixture(scope="module")
async def client() -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    app = make_app(zero_cost=True)
    async with TestClient(TestServer(app)) as c:
        await asyncio.wait_for(app[STATE].started.wait(), 120)
        assert app[STATE].service is not None
        yield c


async def stream(client: TestClient, seed: int) -> list[dict]:  # type: ignore[type-arg]
    r = await client.post("/v1/chat/completions", json={
        "model": "slagate-demo", "messages": [{"role": "user", "content": "Hi there"}],
        "max_tokens": 48, "stream": True, "seed": seed, "ignore_eos": True,
        "stream_options": {"include_usage": True}})
    assert r.status == 200
    body = await r.read()
    events = [block[6:] for block in body.split(b"\n\n") if block.startswith(b"data: ")]
    assert events[-1] == b"[DONE]"
    return [orjson.loads(e) for e in events[:-1]]


async def test_lagging_gateway_sends_fewer_events_with_the_same_tokens(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[type-arg]
    monkeypatch.setattr(coalesce, "loop_lag", lambda: _Lag(False))
    plain = await stream(client, seed=3)
    monkeypatch.setattr(coalesce, "loop_lag", lambda: _Lag(True))
    merged = await stream(client, seed=3)

    def text(events: list[dict]) -> str:  # type: ignore[type-arg]
        return "".join(e["choices"][0]["delta"].get("content", "")
                       for e in events if e["choices"])

    assert len(plain) == 48 + 1  # one event per token, then usage
    assert len(merged) < len(plain) // 4
    assert text(merged) == text(plain)
    first = merged[0]["choices"][0]
    assert first["delta"]["role"] == "assistant" and first["delta"]["content"] == text(plain[:1])
    assert merged[-2]["choices"][0]["finish_reason"] == "length"
    assert all(e["object"] == "chat.completion.chunk" for e in merged)
    assert merged[-1]["usage"]["completion_tokens"] == 48
