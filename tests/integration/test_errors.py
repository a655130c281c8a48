"""Bad input through the real gateway: right status, OpenAI error body, never 500."""

from __future__ import annotations

import pytest
import requests

from tests.integration.conftest import GatewayProcess

pytestmark = pytest.mark.vllm


def post(gw: GatewayProcess, path: str, data: bytes,
         headers: dict[str, str] | None = None) -> requests.Response:
    return requests.post(f"{gw.url}{path}", data=data, timeout=30,
                         headers={"Content-Type": "application/json", **(headers or {})})


def assert_openai_error(r: requests.Response, status: int, needle: str = "") -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert needle in err["message"], err["message"]
    return err


CASES = [
    (b'{"model": "M", "prompt": "x", "max_tokens": true}', 400, "got `bool`"),
    (b'{"model": "M", "prompt": "x", "max_tokens": "16"}', 400, "got `str`"),
    (b'{"model": "M", "prompt": "x", "temperature": NaN}', 400, "not valid JSON"),
    (b'{"model": "M", "prompt": "x", "max_tokens": -5}', 400, ">= 1"),
    (b'{"model": "M", "prompt": "x", "max_tokens": 1000000}', 400, "at most"),
    (b'{"model": "M", "prompt": ""}', 400, "must not be empty"),
    (b'{"model": "M", "prompt": "\\udc00"}', 400, "not valid JSON"),
    (b'{"model": "M", "prompt": "\xc3\x28"}', 400, "not valid JSON"),
    (b'{"model": "M", "prompt": [99999]}', 400, "outside the vocabulary"),
    (b'{"model": "M", "prompt": "x", "service_tier": "platinum"}', 400, "Unknown SLA class"),
    (b'{"model": "nope", "prompt": "x"}', 404, "does not exist"),
    (b'not json', 400, "not valid JSON"),
]


@pytest.mark.parametrize(("raw", "status", "needle"), CASES)
def test_bad_completion(gateway: GatewayProcess, model_name: str, raw: bytes, status: int,
                        needle: str) -> None:
    r = post(gateway, "/v1/completions", raw.replace(b'"M"', f'"{model_name}"'.encode()))
    assert_openai_error(r, status, needle)


def test_bad_chat(gateway: GatewayProcess, model_name: str) -> None:
    r = post(gateway, "/v1/chat/completions",
             f'{{"model": "{model_name}", "messages": []}}'.encode())
    assert_openai_error(r, 400, "length >= 1")


def test_context_too_long_names_both_numbers(gateway: GatewayProcess, model_name: str) -> None:
    prompt = list(range(10, 1010))  # 1,000 tokens
    r = requests.post(f"{gateway.url}/v1/completions", timeout=30, json={
        "model": model_name, "prompt": prompt, "max_tokens": 1100})
    err = assert_openai_error(r, 400, "maximum context length is 2048")
    assert "1000 in the prompt" in err["message"] and "1100 for the completion" in err["message"]
    assert err["code"] == "context_length_exceeded"


def test_body_too_large(gateway: GatewayProcess, model_name: str) -> None:
    big = b'{"model": "m", "prompt": "' + b"a" * (2 * 1024 * 1024) + b'"}'
    assert_openai_error(post(gateway, "/v1/completions", big), 413, "larger than")


def test_wrong_method_and_route(gateway: GatewayProcess) -> None:
    r = requests.get(f"{gateway.url}/v1/completions", timeout=10)
    assert_openai_error(r, 405, "not allowed")
    assert "POST" in r.headers["Allow"]
    assert_openai_error(requests.get(f"{gateway.url}/v2/nothing", timeout=10), 404)


def test_class_header_is_honoured(gateway: GatewayProcess, model_name: str) -> None:
    r = requests.post(f"{gateway.url}/v1/completions", timeout=30,
                      headers={"X-SLA-Class": "batch"},
                      json={"model": model_name, "prompt": "x", "max_tokens": 1})
    assert r.status_code == 200 and r.json()["service_tier"] == "batch"
    assert r.headers["X-SLA-Class"] == "batch"
    r = requests.post(f"{gateway.url}/v1/completions", timeout=30,
                      headers={"X-SLA-Class": "gold"},
                      json={"model": model_name, "prompt": "x", "max_tokens": 1})
    assert_openai_error(r, 400, "Unknown SLA class")


def test_no_500_was_ever_answered(gateway: GatewayProcess) -> None:
    assert gateway.metric("gateway_requests_total", outcome="error") == 0
    assert " 500 " not in gateway.logs()


@pytest.mark.parametrize("value", ["soon", "0", "-5", "1.5"])
def test_bad_deadline_header(gateway: GatewayProcess, model_name: str, value: str) -> None:
    r = requests.post(f"{gateway.url}/v1/completions", timeout=30,
                      headers={"X-Request-Deadline-Ms": value},
                      json={"model": model_name, "prompt": "x", "max_tokens": 1})
    err = assert_openai_error(r, 400, "X-Request-Deadline-Ms")
    assert err["param"] == "X-Request-Deadline-Ms"
