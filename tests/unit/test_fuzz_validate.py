"""Property-based fuzzing of the parse/validate path (``gateway.validate``).

Whatever bytes arrive, ``parse_request`` returns a ``ParsedRequest`` or raises
an ``APIError`` with a 4xx status and an OpenAI-shaped body: never another
exception (that would be a 500). And every request built from the API's own
rules parses, with its fields carried through unchanged.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.errors import APIError
from gateway.validate import Kind, ParsedRequest, parse_request

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

KINDS: tuple[Kind, ...] = ("completion", "chat")
kinds = st.sampled_from(KINDS)

# -- arbitrary JSON, including what strict decoding must refuse --------------------------

surrogates = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])
texts = st.text(max_size=24) | st.builds(lambda a, s, b: a + s + b, st.text(max_size=4),
                                         surrogates, st.text(max_size=4))
scalars = (st.none() | st.booleans() | st.integers()
           | st.integers(min_value=-(2**80), max_value=2**80)
           | st.floats(allow_nan=True, allow_infinity=True) | texts)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)

# -- valid field values, by the API's own rules ------------------------------------------

plain_text = st.text(min_size=1, max_size=40)  # hypothesis text has no lone surrogates
token_ids = st.lists(st.integers(min_value=0, max_value=2**31 - 1), min_size=1, max_size=8)
prompts = (plain_text | token_ids | st.builds(lambda t: [t], plain_text)
           | st.builds(lambda ids: [ids], token_ids))
stops = (st.text(min_size=1, max_size=256)
         | st.lists(st.text(min_size=1, max_size=16), max_size=4))

COMMON_VALID: dict[str, st.SearchStrategy[Any]] = {
    "max_tokens": st.integers(min_value=1, max_value=1_000_000),
    "n": st.integers(min_value=1, max_value=16),
    "temperature": st.floats(min_value=0, max_value=2),
    "top_p": st.floats(min_value=0, max_value=1, exclude_min=True),
    "presence_penalty": st.floats(min_value=-2, max_value=2),
    "frequency_penalty": st.floats(min_value=-2, max_value=2),
    "seed": st.integers(min_value=-(2**63), max_value=2**63 - 1),
    "stop": stops,
    "service_tier": st.text(min_size=1, max_size=64),
    "user": st.text(max_size=256),
    "ignore_eos": st.booleans(),
}
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "developer", "user", "assistant"]),
         "content": st.text(max_size=40) | st.lists(
             st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=20)}),
             min_size=1, max_size=3)},
        optional={"name": st.text(max_size=64)}),
    min_size=1, max_size=5)


@st.composite
def valid_requests(draw: st.DrawFn) -> tuple[Kind, dict[str, Any]]:
    kind = draw(kinds)
    body: dict[str, Any] = {"model": draw(plain_text)}
    body.update(draw(st.fixed_dictionaries({}, optional=COMMON_VALID)))
    stream = draw(st.booleans())
    body["stream"] = stream
    if stream and draw(st.booleans()):
        body["stream_options"] = {"include_usage": draw(st.booleans())}
    if kind == "completion":
        body["prompt"] = draw(prompts)
        if draw(st.booleans()):
            body["logprobs"] = draw(st.integers(min_value=0, max_value=20))
    else:
        body["messages"] = draw(messages)
        if draw(st.booleans()):
            body["logprobs"] = True
            body["top_logprobs"] = draw(st.integers(min_value=0, max_value=20))
        if "max_tokens" in body and draw(st.booleans()):
            body["max_completion_tokens"] = body.pop("max_tokens")
    return kind, body


@st.composite
def mixed_requests(draw: st.DrawFn) -> tuple[Kind, dict[str, Any]]:
    """A valid request with some fields replaced by arbitrary JSON, some
    dropped, and some unknown ones added."""
    kind, body = draw(valid_requests())
    for key in list(body):
        choice = draw(st.integers(min_value=0, max_value=5))
        if choice == 0:
            body[key] = draw(json_values)
        elif choice == 1:
            del body[key]
    body.update(draw(st.dictionaries(texts, json_values, max_size=2)))
    return kind, body


def encode(body: object) -> bytes:
    # json (not orjson): NaN/Infinity literals, huge ints and lone surrogates
    # (as \\ud800 escapes) go out as written, for the decoder to refuse.
    return json.dumps(body, allow_nan=True).encode()


def parse_or_client_error(kind: Kind, raw: bytes) -> ParsedRequest | None:
    """The property: a ParsedRequest, or an APIError that is the client's (4xx)."""
    try:
        parsed = parse_request(kind, raw)
    except APIError as exc:
        assert 400 <= exc.status < 500, (exc.status, exc.message)
        error = exc.to_body()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["message"] and isinstance(error["message"], str)
        return None
    assert parsed.kind == kind and parsed.model
    shapes = (parsed.prompt_text, parsed.prompt_token_ids, parsed.messages)
    assert sum(s is not None for s in shapes) == 1
    assert 1 <= parsed.sampling.n <= 16
    return parsed


@FUZZ
@given(kinds, st.binary(max_size=600))
@example("completion", b"\x00")
@example("chat", b"{" * 100_000)
@example("completion", b'{"model": "m", "prompt": "x", "n": ' + b"9" * 5000 + b"}")
def test_arbitrary_bytes(kind: Kind, raw: bytes) -> None:
    parse_or_client_error(kind, raw)


@FUZZ
@given(kinds, json_values)
def test_arbitrary_json(kind: Kind, value: object) -> None:
    parse_or_client_error(kind, encode(value))


@settings(FUZZ, max_examples=100)
@given(mixed_requests())
def test_mixed_valid_and_invalid_fields(request: tuple[Kind, dict[str, Any]]) -> None:
    kind, body = request
    parse_or_client_error(kind, encode(body))


@FUZZ
@given(valid_requests(), st.data())
def test_mutated_valid_bytes(request: tuple[Kind, dict[str, Any]], data: st.DataObject) -> None:
    kind, body = request
    raw = bytearray(encode(body))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        at = data.draw(st.integers(min_value=0, max_value=len(raw)))
        action = data.draw(st.sampled_from(["insert", "delete", "replace", "truncate"]))
        byte = data.draw(st.integers(min_value=0, max_value=255))
        if action == "insert":
            raw.insert(at, byte)
        elif action == "truncate":
            del raw[at:]
        elif at < len(raw):
            if action == "delete":
                del raw[at]
            else:
                raw[at] = byte
    parse_or_client_error(kind, bytes(raw))


@FUZZ
@given(valid_requests())
def test_valid_requests_always_parse(request: tuple[Kind, dict[str, Any]]) -> None:
    kind, body = request
    parsed = parse_request(kind, encode(body))
    assert parsed.model == body["model"]
    assert parsed.stream == body["stream"]
    assert parsed.service_tier == body.get("service_tier")
    assert parsed.max_tokens == body.get("max_tokens", body.get("max_completion_tokens"))
    assert parsed.sampling.n == body.get("n", 1)
    assert parsed.sampling.seed == body.get("seed")
    assert parsed.include_usage == bool(body.get("stream_options", {}).get("include_usage"))
    stop = body.get("stop")
    assert parsed.sampling.stop == ((stop,) if isinstance(stop, str) else tuple(stop or ()))
    if kind == "completion":
        prompt = body["prompt"]
        if isinstance(prompt, list) and len(prompt) == 1 and not isinstance(prompt[0], int):
            prompt = prompt[0]
        if isinstance(prompt, str):
            assert parsed.prompt_text == prompt
        else:
            assert parsed.prompt_token_ids == tuple(prompt)
    else:
        assert parsed.messages is not None
        assert [m.role for m in parsed.messages] == [m["role"] for m in body["messages"]]


@pytest.mark.parametrize("kind", KINDS)
def test_deep_nesting_is_a_client_error(kind: Kind) -> None:
    # A recursive decoder would overflow the stack (a 500, or worse) here.
    deep = b'{"model": "m", "user": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    assert parse_or_client_error(kind, deep) is None
