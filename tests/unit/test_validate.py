"""Request validation: every bad input is an InvalidRequest naming the problem."""

from __future__ import annotations

import orjson
import pytest

from gateway.errors import InvalidRequest
from gateway.schema import RequestLimits
from gateway.validate import Kind, parse_request


def body(**fields: object) -> bytes:
    return orjson.dumps({"model": "m", "prompt": "hi", **fields})


def chat(**fields: object) -> bytes:
    return orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                         **fields})


def test_minimal_completion() -> None:
    parsed = parse_request("completion", body())
    assert parsed.prompt_text == "hi"
    assert parsed.max_tokens is None
    assert parsed.sampling.n == 1 and parsed.sampling.stop == ()
    assert not parsed.stream and not parsed.include_usage


def test_full_completion_fields() -> None:
    parsed = parse_request("completion", body(
        max_tokens=7, n=2, temperature=0.5, top_p=0.9, seed=3, stop=["a", "b"], logprobs=2,
        stream=True, stream_options={"include_usage": True}, service_tier="batch",
        ignore_eos=True))
    s = parsed.sampling
    assert (parsed.max_tokens, s.n, s.temperature, s.top_p, s.seed) == (7, 2, 0.5, 0.9, 3)
    assert s.stop == ("a", "b") and s.logprobs == 2 and s.ignore_eos
    assert parsed.stream and parsed.include_usage and parsed.service_tier == "batch"


def test_token_prompt_and_single_batch() -> None:
    assert parse_request("completion", body(prompt=[1, 2, 3])).prompt_token_ids == (1, 2, 3)
    assert parse_request("completion", body(prompt=["x"])).prompt_text == "x"
    assert parse_request("completion", body(prompt=[[4, 5]])).prompt_token_ids == (4, 5)


def test_chat_messages_flatten_parts() -> None:
    parsed = parse_request("chat", orjson.dumps({"model": "m", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
    ], "max_completion_tokens": 5, "logprobs": True, "top_logprobs": 3}))
    assert [(m.role, m.content) for m in parsed.messages or ()] == [
        ("system", "be brief"), ("user", "ab")]
    assert parsed.max_tokens == 5 and parsed.sampling.logprobs == 3


BAD_COMPLETIONS = [
    (b"", "empty"),
    (b"{", "not valid JSON"),
    (b"[1, 2]", "Expected `object`"),
    (b'{"model": "m", "prompt": "hi", "max_tokens": true}', "got `bool`"),
    (b'{"model": "m", "prompt": "hi", "max_tokens": "16"}', "got `str`"),
    (b'{"model": "m", "prompt": "hi", "max_tokens": 1.5}', "got `float`"),
    (b'{"model": "m", "prompt": "hi", "max_tokens": -1}', ">= 1"),
    (b'{"model": "m", "prompt": "hi", "max_tokens": 0}', ">= 1"),
    (b'{"model": "m", "prompt": "hi", "max_tokens": 99999999999999999999999}', "max_tokens"),
    (b'{"model": "m", "prompt": "hi", "temperature": NaN}', "not valid JSON"),
    (b'{"model": "m", "prompt": "hi", "temperature": Infinity}', "not valid JSON"),
    (b'{"model": "m", "prompt": "hi", "temperature": 1e999}', "out of range"),
    (b'{"model": "m", "prompt": "hi", "temperature": 3}', "<= 2.0"),
    (b'{"model": "m", "prompt": "hi", "top_p": 0}', "> 0.0"),
    (b'{"model": "m", "prompt": "hi", "n": 0}', ">= 1"),
    (b'{"model": "m", "prompt": "hi", "n": 1000}', "<= 128"),
    (b'{"model": "m", "prompt": "hi", "n": 17}', "`n` is 17; this gateway allows at most 16"),
    (b'{"model": "m", "prompt": "hi", "n": 2, "best_of": 5}', "best_of"),
    (b'{"model": "m", "prompt": ""}', "must not be empty"),
    (b'{"model": "m", "prompt": []}', "prompt"),
    (b'{"model": "m", "prompt": ["a", "b"]}', "Batched prompts"),
    (b'{"model": "m", "prompt": [-1]}', ">= 0"),
    (b'{"model": "m"}', "missing required field `prompt`"),
    (b'{"prompt": "x"}', "missing required field `model`"),
    (b'{"model": "", "prompt": "x"}', "must not be empty"),
    (b'{"model": "m", "prompt": "hi", "stop": ["a","b","c","d","e"]}', "at most 4"),
    (b'{"model": "m", "prompt": "hi", "stop": ["a"' + b',"a"' * 64 + b']}', "length <= 64"),
    (b'{"model": "m", "prompt": "hi", "stop": [""]}', "length >= 1"),
    (b'{"model": "m", "prompt": "hi", "stream_options": {"include_usage": true}}',
     "only allowed when `stream`"),
    (b'{"model": "m", "prompt": "hi", "bogus": 1}', "unknown field `bogus`"),
    (b'{"model": "m", "prompt": "\\ud800"}', "not valid JSON"),
    (b'{"model": "m", "prompt": "\xff\xfe"}', "not valid JSON"),
    (b'{"model": "m", "prompt": "hi", "echo": true}', "echo"),
    (b'{"model": "m", "prompt": "hi", "logprobs": 21}', "<= 20"),
    (b'{"model": "m", "prompt": "hi", "seed": 99999999999999999999}', "seed"),
]


@pytest.mark.parametrize(("raw", "needle"), BAD_COMPLETIONS)
def test_bad_completion_bodies(raw: bytes, needle: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_request("completion", raw)
    assert needle in info.value.message
    assert info.value.status == 400
    assert info.value.to_body()["error"]["type"] == "invalid_request_error"


BAD_CHATS = [
    (b'{"model": "m", "messages": []}', "length >= 1"),
    (b'{"model": "m", "messages": [{"role": "wizard", "content": "x"}]}', "role"),
    (b'{"model": "m", "messages": [{"role": "user"}]}', "content"),
    (b'{"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}',
     "type"),
    (b'{"model": "m", "messages": "hi"}', "Expected `array`"),
    (chat(max_tokens=3, max_completion_tokens=3), "not both"),
    (chat(top_logprobs=2), "needs `logprobs`"),
]


@pytest.mark.parametrize(("raw", "needle"), BAD_CHATS)
def test_bad_chat_bodies(raw: bytes, needle: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_request("chat", raw)
    assert needle in info.value.message


def test_param_is_named() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_request("completion", body(temperature="hot"))
    assert info.value.param == "temperature"


def test_fan_out_caps_follow_the_configured_limits() -> None:
    loose = RequestLimits(max_n=32, max_stop=8, max_logprobs=5)
    body = b'{"model": "m", "prompt": "hi", "n": 32, "stop": ["a","b","c","d","e","f"]}'
    parsed = parse_request("completion", body, loose)
    assert parsed.sampling.n == 32 and len(parsed.sampling.stop) == 6
    tight = RequestLimits(max_n=1, max_stop=0, max_logprobs=0)
    for raw, param in [(b'{"model": "m", "prompt": "hi", "n": 2}', "n"),
                       (b'{"model": "m", "prompt": "hi", "stop": "x"}', "stop"),
                       (b'{"model": "m", "prompt": "hi", "logprobs": 1}', "logprobs")]:
        with pytest.raises(InvalidRequest) as info:
            parse_request("completion", raw, tight)
        assert info.value.param == param and "this gateway allows at most" in info.value.message
    with pytest.raises(InvalidRequest) as info:
        parse_request("chat", chat(logprobs=True, top_logprobs=6), loose)
    assert info.value.param == "top_logprobs"


@pytest.mark.parametrize(("kind", "body", "expected"), [
    ("completion", b'{"model": "m", "prompt": "x", "max_tokens": 7}', 7),
    ("completion", b'{"model": "m", "prompt": "x"}', None),
    ("chat", b'{"model": "m", "messages": [{"role": "user", "content": "x"}], '
             b'"max_completion_tokens": 5}', 5),
])
def test_the_sampling_spec_carries_the_bodys_max_tokens(kind: Kind, body: bytes,
                                                        expected: int | None) -> None:
    # Serving copies the spec only when it resolves a default (no max_tokens given).
    parsed = parse_request(kind, body)
    assert parsed.max_tokens == expected
    assert parsed.sampling.max_tokens == (expected or 1)
