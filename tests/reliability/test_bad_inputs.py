"""Bad input through the real gateway: the right 4xx, an OpenAI error body,
never a 500, never a hang, nothing forged in the log, and the books balance.

Every case goes over a raw socket, byte for byte, so malformed HTTP (CR/LF and
control bytes in headers, broken framing) is sent exactly as written. A case
that reaches a generation route must be counted once, as outcome ``invalid``;
one that is refused by the HTTP layer or the router must not be counted at all.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass

import orjson
import pytest

from engines.demo_model import DEMO_MODEL_NAME
from tests.integration.conftest import GatewayProcess
from tests.reliability.accounting import Ledger, assert_accounts_balance
from tests.reliability.conftest import MAX_BODY_BYTES
from tests.reliability.rawhttp import RawResponse, request_bytes, send

pytestmark = pytest.mark.vllm

MODEL = DEMO_MODEL_NAME  # the name the gateway serves the demo model under
FORGED = b"FORGED"  # a log line starting with this was written by a client


@dataclass(frozen=True)
class Case:
    id: str
    status: int
    raw: bytes  # the whole request, as sent
    counted: bool  # reaches a generation route (one outcome "invalid")
    param: str | None = None  # the error's expected ``param``, when it names one
    code: object = None  # the error's expected ``code``, when it is specific


def body(id: str, payload: bytes | str, status: int = 400, param: str | None = None,
         route: str = "/v1/completions", code: object = None) -> Case:
    data = payload.encode() if isinstance(payload, str) else payload
    return Case(id, status, request_bytes("POST", route, data), True, param, code)


def fields(id: str, status: int = 400, param: str | None = None, code: object = None,
           **extra: object) -> Case:
    """A completion request: a valid base with ``extra`` fields over it."""
    payload = {"model": MODEL, "prompt": "hello", "max_tokens": 2, **extra}
    return body(id, orjson.dumps(payload), status, param, code=code)


def chat(id: str, messages: object, status: int = 400, param: str | None = "messages",
         **extra: object) -> Case:
    payload = {"model": MODEL, "messages": messages, "max_tokens": 2, **extra}
    return body(id, orjson.dumps(payload), status, param, route="/v1/chat/completions")


def header(id: str, *headers: tuple[bytes, bytes], status: int = 400,
           param: str | None = None, counted: bool = True, code: object = None) -> Case:
    payload = orjson.dumps({"model": MODEL, "prompt": "hello", "max_tokens": 2})
    raw = request_bytes("POST", "/v1/completions", payload, headers)
    return Case(id, status, raw, counted, param, code)


def content_type(id: str, value: bytes, data: bytes | None = None) -> Case:
    payload = data or orjson.dumps({"model": MODEL, "prompt": "hello", "max_tokens": 2})
    raw = request_bytes("POST", "/v1/completions", payload, content_type=value)
    return Case(id, 415, raw, True, "Content-Type")


def malformed(id: str, raw: bytes, status: int = 400) -> Case:
    """HTTP the parser refuses before any route sees it."""
    return Case(id, status, raw, False, code="malformed_http")


def route(id: str, method: str, path: str, status: int, data: bytes = b"") -> Case:
    return Case(id, status, request_bytes(method, path, data), False)


_HEAD = b"POST /v1/completions HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n"
OPEN = b'{"model": "%s", ' % MODEL.encode()  # a body's start, to be completed
_OK = orjson.dumps({"model": MODEL, "prompt": "hello", "max_tokens": 2})
_DEEP = 10_000

CASES = [
    # -- bodies that are not one JSON object in UTF-8 -------------------------------
    body("empty_body", b""),
    body("whitespace_body", b"  \r\n\t "),
    body("not_json", b"model=MODEL&prompt=hello"),
    body("truncated_json", OPEN + b'"prompt": '),
    body("trailing_garbage", _OK + b" trailing"),
    body("json_array_body", b"[" + OPEN + b'"prompt": "hello"}]'),
    body("json_null_body", b"null"),
    body("invalid_utf8", OPEN + b'"prompt": "\xc3\x28"}'),
    body("latin1_body", f'{{"model": "{MODEL}", "prompt": "café"}}'.encode("latin-1")),
    body("utf16_body", f'{{"model": "{MODEL}", "prompt": "hello"}}'.encode("utf-16")),
    body("utf8_bom", b"\xef\xbb\xbf" + _OK),
    body("lone_high_surrogate", OPEN + b'"prompt": "\\ud800"}'),
    body("lone_low_surrogate_in_stop",
         OPEN + b'"prompt": "hi", "stop": "a\\udc00"}'),
    body("nan_literal", OPEN + b'"prompt": "hi", "temperature": NaN}'),
    body("infinity_literal", OPEN + b'"prompt": "hi", "top_p": Infinity}'),
    body("float_overflow", OPEN + b'"prompt": "hi", "temperature": 1e999}',
         param="temperature"),
    body("deep_nesting_arrays",
         OPEN + b'"prompt": ' + b"[" * _DEEP + b"]" * _DEEP + b"}"),
    body("deep_nesting_objects",
         OPEN + b'"prompt": "hi", "user": ' + b'{"a":' * _DEEP + b"1"
         + b"}" * _DEEP + b"}", param="user"),
    body("duplicate_keys", OPEN + b'"prompt": "hi", "n": 1, "n": "2"}', param="n"),
    # -- numbers: huge, wrong type, out of range -------------------------------------
    body("int_2_pow_64", OPEN + b'"prompt": "hi", "max_tokens": 18446744073709551616}',
         param="max_tokens"),
    body("int_400_digits", OPEN + b'"prompt": "hi", "seed": ' + b"9" * 400 + b"}",
         param="seed"),
    fields("bool_for_int", param="max_tokens", max_tokens=True),
    fields("string_for_int", param="max_tokens", max_tokens="16"),
    fields("float_for_int", param="max_tokens", max_tokens=2.0),
    fields("negative_max_tokens", param="max_tokens", max_tokens=-5),
    fields("zero_max_tokens", param="max_tokens", max_tokens=0),
    fields("max_tokens_over_gateway_limit", param="max_tokens", max_tokens=100_000),
    fields("context_too_long", param="max_tokens", code="context_length_exceeded",
           prompt=list(range(10, 1010)), max_tokens=1100),
    fields("huge_n", param="n", n=10**6),
    fields("temperature_out_of_range", param="temperature", temperature=3),
    fields("top_p_zero", param="top_p", top_p=0),
    fields("logprobs_over_20", param="logprobs", logprobs=21),
    # -- fields: missing, empty, unknown, unsupported --------------------------------
    body("missing_model", b'{"prompt": "hi"}'),
    body("missing_prompt", orjson.dumps({"model": MODEL})),
    fields("empty_model", param="model", model=""),
    fields("empty_prompt", param="prompt", prompt=""),
    fields("prompt_wrong_type", param="prompt", prompt=5),
    fields("token_outside_vocabulary", param="prompt", prompt=[99_999]),
    fields("negative_token_id", param="prompt", prompt=[-1]),
    fields("batched_prompts", param="prompt", prompt=["a", "b"]),
    fields("unknown_field", frequency_penalty_x=1),
    fields("too_many_stop_strings", param="stop", stop=["a", "b", "c", "d", "e"]),
    fields("stop_string_too_long", param="stop", stop="s" * 300),
    fields("stream_as_string", param="stream", stream="true"),
    fields("stream_options_without_stream", param="stream_options",
           stream_options={"include_usage": True}),
    fields("best_of_above_n", param="best_of", best_of=3),
    fields("echo_unsupported", param="echo", echo=True),
    fields("unknown_model", 404, param="model", code="model_not_found", model="gpt-9"),
    fields("ansi_and_crlf_in_model_name", 404, param="model", code="model_not_found",
           model="\x1b[2J\x1b[31mred\r\nFORGED model line\u2028FORGED"),
    fields("unknown_service_tier", param="service_tier", service_tier="platinum"),
    fields("ansi_and_crlf_in_service_tier", param="service_tier",
           service_tier="\x1b[31m\r\nFORGED tier line"),
    chat("chat_empty_messages", []),
    chat("chat_unknown_role", [{"role": "root", "content": "hi"}]),
    chat("chat_null_content", [{"role": "user", "content": None}]),
    chat("chat_image_part", [{"role": "user",
                              "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
    chat("chat_messages_not_a_list", {"role": "user", "content": "hi"}),
    chat("chat_both_max_tokens", [{"role": "user", "content": "hi"}], param="max_tokens",
         max_completion_tokens=2),
    body("chat_body_on_completions_route",
         OPEN + b'"messages": [{"role": "user", "content": "hi"}]}'),
    # -- headers the gateway reads ----------------------------------------------------
    header("deadline_not_a_number", (b"X-Request-Deadline-Ms", b"soon"),
           param="X-Request-Deadline-Ms"),
    header("deadline_zero", (b"X-Request-Deadline-Ms", b"0"), param="X-Request-Deadline-Ms"),
    header("deadline_negative", (b"X-Request-Deadline-Ms", b"-5"),
           param="X-Request-Deadline-Ms"),
    header("deadline_plus_sign", (b"X-Request-Deadline-Ms", b"+500"),
           param="X-Request-Deadline-Ms"),
    header("deadline_underscores", (b"X-Request-Deadline-Ms", b"1_000"),
           param="X-Request-Deadline-Ms"),
    header("deadline_non_ascii_digit", (b"X-Request-Deadline-Ms", "٣".encode()),
           param="X-Request-Deadline-Ms"),
    header("deadline_2_pow_64", (b"X-Request-Deadline-Ms", b"18446744073709551616"),
           param="X-Request-Deadline-Ms"),
    header("deadline_given_twice", (b"X-Request-Deadline-Ms", b"5000"),
           (b"X-Request-Deadline-Ms", b"1"), param="X-Request-Deadline-Ms"),
    header("sla_class_unknown", (b"X-SLA-Class", b"gold"), param="X-SLA-Class"),
    header("sla_class_latin1_byte", (b"X-SLA-Class", b"caf\xe9"), param="X-SLA-Class"),
    header("sla_class_ansi_escape", (b"X-SLA-Class", b"\x1b[2Jbatch"), counted=False,
           code="malformed_http"),
    header("sla_class_nul_byte", (b"X-SLA-Class", b"bat\x00ch"), counted=False,
           code="malformed_http"),
    header("lf_injected_header_line", (b"X-SLA-Class", b"batch\nFORGED: header"),
           counted=False, code="malformed_http"),
    header("bare_cr_in_header", (b"X-SLA-Class", b"batch\rFORGED"), counted=False,
           code="malformed_http"),
    # -- content types and encodings ------------------------------------------------------
    content_type("text_plain", b"text/plain"),
    content_type("form_urlencoded", b"application/x-www-form-urlencoded"),
    content_type("multipart_form", b"multipart/form-data; boundary=x",
                 b"--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--x--\r\n"),
    content_type("octet_stream", b"application/octet-stream"),
    header("gzip_header_plain_body", (b"Content-Encoding", b"gzip")),
    Case("gzip_body_not_json", 400,
         request_bytes("POST", "/v1/completions", gzip.compress(b"\xff\xfe not json"),
                       ((b"Content-Encoding", b"gzip"),)), True),
    # -- sizes --------------------------------------------------------------------------
    body("body_over_limit", OPEN + b'"prompt": "' + b"a" * MAX_BODY_BYTES + b'"}',
         413),
    Case("chunked_body_over_limit", 413,
         _HEAD + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
         + b"".join(b"1000\r\n" + b"a" * 4096 + b"\r\n" for _ in range(20)) + b"0\r\n\r\n",
         True),
    malformed("header_line_too_long", _HEAD + b"X-Padding: " + b"a" * 9000 + b"\r\n\r\n"),
    malformed("too_many_headers",
              _HEAD + b"".join(b"X-H%d: 1\r\n" % i for i in range(200)) + b"\r\n"),
    malformed("url_too_long", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: g\r\n\r\n"),
    # -- framing the parser refuses -------------------------------------------------------
    malformed("garbage_request_line", b"HELLO\r\n\r\n"),
    malformed("http2_preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
    malformed("invalid_utf8_in_path", b"GET /v1/\xff\xfe HTTP/1.1\r\nHost: g\r\n\r\n"),
    malformed("obsolete_line_folding",
              _HEAD + b"X-SLA-Class: batch\r\n  FORGED\r\nContent-Length: 2\r\n\r\n{}"),
    malformed("duplicate_content_length",
              _HEAD + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}"),
    malformed("content_length_and_chunked",
              _HEAD + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}"),
    malformed("content_length_not_a_number", _HEAD + b"Content-Length: 2x\r\n\r\n{}"),
    malformed("bad_chunk_size", _HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"),
    # -- methods and routes -----------------------------------------------------------------
    route("get_on_completions", "GET", "/v1/completions", 405),
    route("put_on_chat", "PUT", "/v1/chat/completions", 405, _OK),
    route("delete_models", "DELETE", "/v1/models", 405),
    route("unknown_route", "GET", "/v2/engines", 404),
    route("path_traversal", "GET", "/v1/../../etc/passwd", 404),
    route("post_big_body_to_unknown_route", "POST", "/v1/embeddings",
          404, b"x" * (2 * MAX_BODY_BYTES)),
]


def test_the_battery_is_large_and_distinct() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 30


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(gateway: GatewayProcess, model_name: str, case: Case) -> None:
    before = Ledger.read(gateway)
    log_start = len(gateway.log.read_bytes())
    assert model_name == MODEL
    response = send(gateway.url, case.raw)

    assert response.status == case.status, response.body[:500]
    error = _openai_error(response)
    if case.param is not None:
        assert error["param"] == case.param, error
    if case.code is not None:
        assert error["code"] == case.code, error
    if case.status == 405:
        assert response.headers["allow"]
    assert_accounts_balance(gateway, before, outcomes={"invalid": 1} if case.counted else {})
    _assert_log_clean(gateway.log.read_bytes()[log_start:])


def test_still_serving_after_the_battery(gateway: GatewayProcess, model_name: str) -> None:
    before = Ledger.read(gateway)
    raw = request_bytes("POST", "/v1/completions", orjson.dumps(
        {"model": model_name, "prompt": "still there?", "max_tokens": 5, "ignore_eos": True}))
    response = send(gateway.url, raw)
    assert response.status == 200, response.body
    usage = response.json()["usage"]  # type: ignore[index]
    assert usage["completion_tokens"] == 5
    assert_accounts_balance(gateway, before, outcomes={"ok": 1}, completion_tokens=5)
    assert b"Traceback" not in gateway.log.read_bytes()


def _openai_error(response: RawResponse) -> dict[str, object]:
    assert response.headers["content-type"].startswith("application/json"), response.headers
    payload = response.json()
    assert isinstance(payload, dict) and set(payload) == {"error"}, payload
    error = payload["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str) and error["type"].endswith("_error"), error
    return error


def _assert_log_clean(log: bytes) -> None:
    assert b"Traceback" not in log, log.decode(errors="replace")
    assert b"\x1b" not in log, "a client's escape code reached the log"
    for line in log.splitlines():
        assert not line.startswith(FORGED), f"a client forged a log line: {line!r}"
    assert not any(b"\r" in line for line in log.split(b"\n")), "a raw CR in the log"
