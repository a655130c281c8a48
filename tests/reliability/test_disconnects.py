"""A client that goes away, at any stage, has its request aborted in the engine
within one token interval, is counted once as ``client_gone``, and the books
balance: while queued, before the first token (in prefill), mid-stream, and
while waiting on a non-streaming answer.

"Within one token interval": the token interval is the engine's time per
output token for one stream alone, as the gateway measures it
(``gateway_tpot_seconds``). After the client closes its connection and that
much time passes, one scrape of ``/metrics`` must show the request gone from
the engine (``gateway_engine_inflight`` and vLLM's own unfinished-request
count). A scrape cannot resolve less than its own round trip, so the wait is
never shorter than one scrape took just before.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import orjson
import pytest
import requests

from tests.integration.conftest import GatewayProcess
from tests.reliability.accounting import EngineLoad, Ledger, assert_accounts_balance
from tests.reliability.conftest import MAX_MODEL_LEN, MAX_NUM_SEQS, PREFILL_CHUNK

pytestmark = pytest.mark.vllm

LONG = 2000  # tokens: nearly the whole context, a request that outlives any scenario


def completion(model: str, stream: bool, max_tokens: int = LONG,
               prompt: object = "Go on") -> dict[str, object]:
    return {"model": model, "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True,
            "stream": stream, "temperature": 0}


async def next_event(resp: aiohttp.ClientResponse) -> bytes:
    return await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 30)


async def wait_for_load(gw: GatewayProcess, ready: Callable[[EngineLoad], bool],
                        timeout: float = 30.0) -> EngineLoad:
    """Poll ``/metrics`` until ``ready(load)``."""
    deadline = time.monotonic() + timeout
    while True:
        load = await asyncio.to_thread(EngineLoad.read, gw)
        if ready(load):
            return load
        assert time.monotonic() < deadline, f"still {load} after {timeout} s"
        await asyncio.sleep(0.002)


async def assert_aborted_within(gw: GatewayProcess, interval_s: float) -> None:
    """One token interval after the client closed, the engine holds nothing."""
    started = time.monotonic()
    EngineLoad.read(gw)
    wait = max(interval_s, time.monotonic() - started)
    await asyncio.sleep(wait)  # also lets the event loop send the FIN first
    load = EngineLoad.read(gw)
    assert load.idle, f"{wait * 1000:.1f} ms after the client left: {load}"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as s:
        yield s


@pytest.fixture(scope="module")
def token_interval(gateway: GatewayProcess, model_name: str) -> float:
    """The engine's time per output token for one stream alone (seconds)."""
    tpot = "gateway_tpot_seconds_sum"
    before = gateway.metric(tpot)
    body = completion(model_name, True, 64)
    resp = requests.post(f"{gateway.url}/v1/completions", json=body, timeout=60)
    assert resp.status_code == 200 and resp.content.endswith(b"data: [DONE]\n\n")
    interval = gateway.metric(tpot) - before
    assert 0 < interval < 1
    return interval


async def test_disconnect_mid_stream(gateway: GatewayProcess, model_name: str,
                                     session: aiohttp.ClientSession,
                                     token_interval: float) -> None:
    before = Ledger.read(gateway)
    resp = await session.post(f"{gateway.url}/v1/completions",
                              json=completion(model_name, True))
    assert resp.status == 200
    for _ in range(8):
        await next_event(resp)
    resp.close()  # at once: the outcome below proves the request was still running
    await assert_aborted_within(gateway, token_interval)
    ledger = assert_accounts_balance(gateway, before, outcomes={"client_gone": 1})
    # The gateway counts what it wrote; the client read 8 tokens of it and
    # dropped what was still in flight, never more than max_tokens.
    sent = ledger.completion_tokens - before.completion_tokens
    assert 8 <= sent < LONG


async def test_disconnect_non_streaming(gateway: GatewayProcess, model_name: str,
                                        session: aiohttp.ClientSession,
                                        token_interval: float) -> None:
    before = Ledger.read(gateway)
    waiting = asyncio.create_task(session.post(f"{gateway.url}/v1/completions",
                                               json=completion(model_name, False)))
    await wait_for_load(gateway, lambda load: load.inflight == 1)
    assert not waiting.done()
    waiting.cancel()  # aiohttp closes the connection of a cancelled request
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await assert_aborted_within(gateway, token_interval)
    # Nothing was sent, so nothing is counted as sent.
    assert_accounts_balance(gateway, before, outcomes={"client_gone": 1}, completion_tokens=0)


async def test_disconnect_before_first_token(gateway: GatewayProcess, model_name: str,
                                             session: aiohttp.ClientSession,
                                             token_interval: float) -> None:
    # A prompt filling the context is prefilled PREFILL_CHUNK tokens per
    # engine step: many steps in which the request is on the engine and no
    # token exists yet. The SSE headers go out with the first token, so a
    # request whose response has not started has had no token sent.
    # Its completion is long too, so that it cannot finish before the client's
    # FIN arrives even if its first token were just being written.
    # Random tokens: a prompt seen before would come from vLLM's prefix cache.
    prompt = [random.randrange(10, 1000) for _ in range(MAX_MODEL_LEN - 300)]
    assert len(prompt) // PREFILL_CHUNK >= 100
    before = Ledger.read(gateway)
    waiting = asyncio.create_task(session.post(
        f"{gateway.url}/v1/completions", json=completion(model_name, True, 280, prompt)))
    await wait_for_load(gateway, lambda load: load.inflight == 1)
    assert not waiting.done(), "the first token came before the client could leave"
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await assert_aborted_within(gateway, token_interval)
    assert_accounts_balance(gateway, before, outcomes={"client_gone": 1}, completion_tokens=0)


async def test_disconnect_while_queued(gateway: GatewayProcess, model_name: str,
                                       session: aiohttp.ClientSession,
                                       token_interval: float) -> None:
    before = Ledger.read(gateway)
    url = f"{gateway.url}/v1/completions"
    # Four long streams fill the engine's four slots (their outcomes, below,
    # prove they were still running when the fifth left the queue).
    fillers = await asyncio.gather(*(session.post(url, json=completion(model_name, True))
                                     for _ in range(MAX_NUM_SEQS)))
    assert all(resp.status == 200 for resp in fillers)
    queued = asyncio.create_task(session.post(url, json=completion(model_name, True, 4)))
    await wait_for_load(gateway, lambda load: load.queued == 1)
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    await asyncio.sleep(token_interval)
    load = EngineLoad.read(gateway)  # (the queue is the gateway's: no engine to reach)
    for resp in fillers:
        resp.close()
    assert load.queued == 0 and load.inflight == MAX_NUM_SEQS, load
    after = Ledger.read(gateway)
    assert after.scheduler["cancelled"] == before.scheduler["cancelled"] + 1
    assert after.scheduler["granted"] == before.scheduler["granted"] + MAX_NUM_SEQS, (
        "the queued request reached an engine")
    await assert_aborted_within(gateway, token_interval)
    assert_accounts_balance(gateway, before, outcomes={"client_gone": MAX_NUM_SEQS + 1})


async def test_complete_stream_counts_every_token(gateway: GatewayProcess, model_name: str,
                                                  session: aiohttp.ClientSession) -> None:
    """After the disconnects, the gateway still streams, and tokens sent = counted.

    ``logprobs: 0`` makes each event list its tokens: under load one event
    may carry several, so events are not tokens.
    """
    before = Ledger.read(gateway)
    body = completion(model_name, True, 40) | {"logprobs": 0,
                                               "stream_options": {"include_usage": True}}
    resp = await session.post(f"{gateway.url}/v1/completions", json=body)
    raw = (await resp.read()).decode()
    events = [e.removeprefix("data: ") for e in raw.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    received = sum(len(c["choices"][0]["logprobs"]["tokens"]) for c in chunks if c["choices"])
    assert received == 40 and chunks[-1]["usage"]["completion_tokens"] == 40
    assert_accounts_balance(gateway, before, outcomes={"ok": 1}, completion_tokens=40)
