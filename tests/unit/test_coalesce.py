"""Token coalescing: the first token alone, then merged deltas while a stream is behind."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable

import orjson
import pytest

from engines.protocol import FinishReason, GenerationRequest, SamplingSpec, TokenDelta, TokenLogprob
from engines.simulated import SimulatedEngine
from gateway.coalesce import Coalesced, LoopLag, merge, stream_behind
from gateway.wire import Transcript


async def source(deltas: Iterable[TokenDelta]) -> AsyncIterator[TokenDelta]:
    for delta in deltas:
        await asyncio.sleep(0)  # one loop hop per delta, as an engine's stream has
        yield delta


async def collect(it: AsyncIterator[TokenDelta]) -> list[TokenDelta]:
    return [d async for d in it]


def lp(token: str, value: float) -> TokenLogprob:
    return TokenLogprob(token, value, ((token, value),))


def tokens(n: int, index: int = 0, finish: FinishReason | None = FinishReason.LENGTH,
           logprobs: bool = False) -> list[TokenDelta]:
    return [TokenDelta(index, f" t{i}", (100 + i,), finish if i == n - 1 else None,
                       (lp(f" t{i}", -i / 10),) if logprobs else None)
            for i in range(n)]


def always() -> bool:
    return True


def never() -> bool:
    return False


async def test_first_token_goes_out_alone_even_when_behind() -> None:
    out = await collect(Coalesced(source(tokens(5)), always))
    assert out[0] == tokens(5)[0]
    assert len(out) == 2  # the rest merged into one event


async def test_merged_delta_keeps_ids_text_logprobs_in_order_and_finish() -> None:
    deltas = tokens(6, logprobs=True)
    out = await collect(Coalesced(source(deltas), always))
    rest = out[1]
    assert rest.token_ids == tuple(d.token_ids[0] for d in deltas[1:])
    assert rest.text == "".join(d.text for d in deltas[1:])
    assert rest.logprobs == tuple(d.logprobs[0] for d in deltas[1:] if d.logprobs)
    assert rest.finish_reason is FinishReason.LENGTH
    assert rest.index == 0


async def test_not_behind_passes_every_delta_through_unchanged() -> None:
    deltas = tokens(8)
    assert await collect(Coalesced(source(deltas), never)) == deltas


async def test_only_while_behind() -> None:
    state = {"behind": False}
    deltas = tokens(7)

    async def switching() -> AsyncIterator[TokenDelta]:
        for i, d in enumerate(deltas):
            state["behind"] = 2 <= i <= 4  # behind while deltas 2..4 arrive
            await asyncio.sleep(0)
            yield d

    out = await collect(Coalesced(switching(), lambda: state["behind"]))
    # 0 and 1 alone; 2, 3, 4 held; 5 arrives once caught up and goes out merged with them.
    assert [d.token_ids for d in out] == [(100,), (101,), (102, 103, 104, 105), (106,)]


async def test_finish_reason_ends_a_merge_and_choices_never_mix() -> None:
    a, b = tokens(4, index=0), tokens(3, index=1, finish=FinishReason.STOP)
    interleaved = [a[0], b[0], a[1], a[2], b[1], b[2], a[3]]
    out = await collect(Coalesced(source(interleaved), always))
    assert all(len({d.index}) == 1 for d in out)
    per_choice: dict[int, list[int]] = {0: [], 1: []}
    for d in out:
        per_choice[d.index].extend(d.token_ids)
    assert per_choice == {0: [100, 101, 102, 103], 1: [100, 101, 102]}
    # a[1] and a[2] merged (same choice, back to back); each finish ends its event.
    assert [(d.index, d.token_ids, d.finish_reason) for d in out] == [
        (0, (100,), None), (1, (100,), None), (0, (101, 102), None),
        (1, (101, 102), FinishReason.STOP), (0, (103,), FinishReason.LENGTH)]


async def test_merge_is_bounded() -> None:
    out = await collect(Coalesced(source(tokens(10, finish=None)), always, max_merge=4))
    assert [len(d.token_ids) for d in out] == [1, 4, 4, 1]


async def test_finish_only_delta_merges_into_the_held_text() -> None:
    deltas = [*tokens(3, finish=None), TokenDelta(0, "", (), FinishReason.STOP)]
    out = await collect(Coalesced(source(deltas), always))
    assert [(d.token_ids, d.text, d.finish_reason) for d in out] == [
        ((100,), " t0", None), ((101, 102), " t1 t2", FinishReason.STOP)]


def test_merge_of_deltas_without_logprobs_has_none() -> None:
    m = merge(TokenDelta(0, "a", (1,)), TokenDelta(0, "b", (2,), FinishReason.STOP))
    assert m == TokenDelta(0, "ab", (1, 2), FinishReason.STOP, None)


async def test_merged_stream_renders_openai_chunks() -> None:
    t = Transcript("chat", "chatcmpl-x", "m", n=1, prompt_tokens=3, top_logprobs=None,
                   sla_class="batch", include_usage=True)
    events = [orjson.loads(t.chunk(d)[6:-2])
              async for d in Coalesced(source(tokens(5)), always)]
    assert [e["object"] for e in events] == ["chat.completion.chunk"] * 2
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": " t0"}
    assert events[1]["choices"][0]["delta"] == {"content": " t1 t2 t3 t4"}
    assert events[1]["choices"][0]["finish_reason"] == "length"
    assert orjson.loads(t.usage_chunk()[6:-2])["usage"]["completion_tokens"] == 5


@pytest.mark.parametrize("n", [1, 2])
async def test_simulated_engine_stream_coalesced_loses_nothing(n: int) -> None:
    engine = SimulatedEngine.zero_cost("sim")
    await engine.start()
    try:
        def request(rid: str) -> GenerationRequest:
            return GenerationRequest(rid, list(range(1, 9)),
                                     SamplingSpec(max_tokens=40, n=n, seed=7, logprobs=1))
        plain = await collect(engine.generate(request("a")))
        merged = await collect(Coalesced(engine.generate(request("b")), always))
    finally:
        await engine.stop()
    assert merged[0] == plain[0] and len(merged[0].token_ids) == 1
    if n == 1:
        assert len(merged) == 2  # the first token, then the rest in one event
    for index in range(n):
        want = [d for d in plain if d.index == index]
        got = [d for d in merged if d.index == index]
        assert "".join(d.text for d in got) == "".join(d.text for d in want)
        assert sum((d.token_ids for d in got), ()) == sum((d.token_ids for d in want), ())
        assert sum((d.logprobs or () for d in got), ()) == sum(
            (d.logprobs or () for d in want), ())
        assert got[-1].finish_reason == want[-1].finish_reason is not None
        assert all(d.finish_reason is None for d in got[:-1])


async def test_loop_lag_probe_sees_a_blocked_loop() -> None:
    probe = LoopLag(asyncio.get_running_loop(), interval_s=0.005, threshold_s=0.05)
    await asyncio.sleep(0.02)
    assert not probe.lagging
    time.sleep(0.1)  # block the loop, as a saturated one is
    assert probe.lagging  # overdue right now, before the late tick has run
    await asyncio.sleep(0.001)  # the late tick runs
    assert probe.lag_s >= 0.05
    probe.close()


class _Transport(asyncio.WriteTransport):
    def __init__(self) -> None:
        super().__init__()
        self.buffered = 0

    def get_write_buffer_size(self) -> int:
        return self.buffered


async def test_stream_is_behind_while_its_socket_holds_unsent_bytes() -> None:
    transport = _Transport()
    # A probe that never reads as lagging: only the socket decides here.
    calm = LoopLag(asyncio.get_running_loop(), threshold_s=3600)
    behind = stream_behind(transport, calm)
    assert not behind()
    transport.buffered = 4096
    assert behind()
    transport.buffered = 0
    assert not behind()
    assert stream_behind(None, calm)() is False
    calm.close()
