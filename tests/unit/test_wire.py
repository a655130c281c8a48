"""OpenAI wire shapes rendered from engine deltas (no engine needed)."""

from __future__ import annotations

import orjson

from engines.protocol import FinishReason, TokenDelta, TokenLogprob
from gateway.wire import DONE, Transcript, sse


def event(raw: bytes) -> dict:
    assert raw.startswith(b"data: ") and raw.endswith(b"\n\n")
    return orjson.loads(raw[6:-2])


def test_chat_first_chunk_has_role_and_content() -> None:
    t = Transcript("chat", "chatcmpl-1", "m", n=1, prompt_tokens=3, top_logprobs=None,
                   sla_class="interactive", include_usage=True)
    first = event(t.chunk(TokenDelta(0, "Hel", (5,))))
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "Hel"}
    assert first["usage"] is None
    second = event(t.chunk(TokenDelta(0, "lo", (6,), FinishReason.STOP)))
    assert second["choices"][0]["delta"] == {"content": "lo"}
    assert second["choices"][0]["finish_reason"] == "stop"
    usage = event(t.usage_chunk())
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def test_finish_only_delta_renders_empty_delta() -> None:
    t = Transcript("chat", "c", "m", 1, 1, None, "batch")
    t.chunk(TokenDelta(0, "a", (1,)))
    last = event(t.chunk(TokenDelta(0, "", (), FinishReason.LENGTH)))
    assert last["choices"][0]["delta"] == {}
    assert "usage" not in last  # no include_usage: no usage key at all


def test_completion_response_accumulates_choices() -> None:
    t = Transcript("completion", "cmpl-1", "m", n=2, prompt_tokens=4, top_logprobs=None,
                   sla_class="standard")
    for d in (TokenDelta(0, "a", (1,)), TokenDelta(1, "x", (9,)), TokenDelta(0, "b", (2,)),
              TokenDelta(1, "", (), FinishReason.STOP),
              TokenDelta(0, "c", (3,), FinishReason.LENGTH)):
        t.add(d)
    body = t.response()
    assert body["object"] == "text_completion" and body["service_tier"] == "standard"
    assert [(c["text"], c["finish_reason"]) for c in body["choices"]] == [
        ("abc", "length"), ("x", "stop")]
    assert body["usage"]["completion_tokens"] == 4 and t.finished


def test_completion_logprobs_shape() -> None:
    t = Transcript("completion", "c", "m", 1, 1, top_logprobs=1, sla_class="s")
    lp = (TokenLogprob("ab", -0.5, (("ab", -0.5), ("zz", -1.0))),
          TokenLogprob("c", -0.1, (("c", -0.1),)))
    t.add(TokenDelta(0, "abc", (1, 2), FinishReason.LENGTH, lp))
    got = t.response()["choices"][0]["logprobs"]
    assert got == {"tokens": ["ab", "c"], "token_logprobs": [-0.5, -0.1],
                   "top_logprobs": [{"ab": -0.5}, {"c": -0.1}], "text_offset": [0, 2]}


def test_chat_logprobs_shape() -> None:
    t = Transcript("chat", "c", "m", 1, 1, top_logprobs=2, sla_class="s")
    t.add(TokenDelta(0, "é", (1,), None, (TokenLogprob("é", -0.2, (("é", -0.2), ("e", -2.0))),)))
    content = t.response()["choices"][0]["logprobs"]["content"]
    assert content == [{"token": "é", "logprob": -0.2, "bytes": [195, 169], "top_logprobs": [
        {"token": "é", "logprob": -0.2, "bytes": [195, 169]},
        {"token": "e", "logprob": -2.0, "bytes": [101]}]}]


def test_sse_framing() -> None:
    assert sse({"a": 1}) == b'data: {"a":1}\n\n'
    assert DONE == b"data: [DONE]\n\n"
