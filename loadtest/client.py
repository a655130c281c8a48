"""The HTTP side: one aiohttp session to the target, discovery, and one streamed request.

``Client.send`` never raises for anything the server or the network does: every ending
(200 stream, 429/503 rejection, other status, broken stream, timeout, connection lost) is
recorded as a ``RequestRecord``. Discovery (``model``, ``sla``, ``probe``) runs before the
clock starts and raises ``TargetUnreachable``/``TargetRefused`` with one clear line, so a
dead or misconfigured target stops the run before it sends anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import yarl

from loadtest.config import RunConfig
from loadtest.errors import TargetRefused, TargetUnreachable
from loadtest.records import Outcome, RequestRecord
from loadtest.sse import Kind, SSEParser, classify
from loadtest.workload import PlannedRequest

_PATHS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}
_ERROR_BODY_LIMIT = 2048
_MONITOR_TIMEOUT = aiohttp.ClientTimeout(total=5)
_DEFAULT_RETRY_WAIT_S = 1.0  # when a rejection carries no Retry-After


@contextlib.asynccontextmanager
async def open_session(config: RunConfig) -> AsyncIterator[aiohttp.ClientSession]:
    """One session for the whole run: unlimited pooled connections, no cookies kept."""
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
    timeout = aiohttp.ClientTimeout(total=config.request_timeout_s, connect=10)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        yield session


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds: delta-seconds or an HTTP date; None if absent or bad."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _unreachable(url: str, exc: BaseException) -> TargetUnreachable:
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return TargetUnreachable(f"cannot reach {url}: timed out")
    reason = getattr(exc, "os_error", None) or exc
    code = getattr(reason, "errno", None)
    # asyncio words a refusal as "Connect call failed (addr)"; the errno says it plainly.
    # DNS failures carry negative getaddrinfo codes, which strerror() does not know.
    if isinstance(code, int) and code > 0:
        text = os.strerror(code)
    else:
        text = getattr(reason, "strerror", None) or str(reason) or type(exc).__name__
    return TargetUnreachable(f"cannot reach {url}: {text.lower()}")


def _error_message(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace").strip()
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return str(error.get("message", ""))[:200]
    if isinstance(data, dict) and "detail" in data:
        return str(data["detail"])[:200]
    return str(data)[:200]


class Client:
    """Sends the run's requests to one target over one session."""

    def __init__(self, config: RunConfig, session: aiohttp.ClientSession, t0: float) -> None:
        self.base = config.url.rstrip("/")
        self.url = self.base + _PATHS[config.endpoint]
        self._url = yarl.URL(self.url)  # parsed once, not per request
        self._config = config
        self._session = session
        self.t0 = t0  # perf_counter() of the run's start: all record times are relative
        self._chat = config.endpoint == "chat"
        self.headers = {"Content-Type": "application/json"}
        self.run_id = f"lt{int(time.time()):x}"  # request ids: unique across runs
        if config.api_key:
            self.headers["Authorization"] = f"Bearer {config.api_key}"

    # -- discovery, before the clock starts -------------------------------------------------

    async def get_json(self, path: str) -> tuple[int, Any]:
        """GET ``path``: (status, parsed body or None). Raises ``TargetUnreachable``."""
        try:
            async with self._session.get(self.base + path, headers=self.headers) as resp:
                body = await resp.content.read(1 << 20)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _unreachable(self.base, exc) from None
        try:
            return resp.status, orjson.loads(body)
        except orjson.JSONDecodeError:
            return resp.status, None

    async def get_text(self, path: str) -> tuple[int, str] | None:
        """GET ``path`` for the monitor: (status, text), or None when it cannot be fetched."""
        try:
            async with self._session.get(
                self.base + path, headers=self.headers, timeout=_MONITOR_TIMEOUT
            ) as resp:
                return resp.status, await resp.text()
        except (aiohttp.ClientError, TimeoutError, UnicodeDecodeError):
            return None

    async def model(self) -> str:
        """The first model ``GET /v1/models`` lists."""
        status, data = await self.get_json("/v1/models")
        if status != 200:
            hint = " (pass --api-key)" if status == 401 else " (pass --model)"
            raise TargetRefused(f"GET {self.base}/v1/models answered {status}{hint}")
        models = data.get("data") if isinstance(data, dict) else None
        if not models or not isinstance(models[0], dict) or "id" not in models[0]:
            raise TargetRefused(f"GET {self.base}/v1/models lists no model (pass --model)")
        return str(models[0]["id"])

    async def probe(self, model: str, sla_class: str | None) -> None:
        """One 1-token request, so a bad key, model or class fails now and in one line."""
        body: dict[str, Any] = {"model": model, "max_tokens": 1, "stream": False}
        if self._chat:
            body["messages"] = [{"role": "user", "content": "Hello"}]
        else:
            body["prompt"] = "Hello"
        if sla_class is not None:
            body["service_tier"] = sla_class
        try:
            async with self._session.post(
                self.url, data=orjson.dumps(body), headers=self.headers
            ) as resp:
                text = await resp.content.read(_ERROR_BODY_LIMIT)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _unreachable(self.base, exc) from None
        # 429/503 mean "busy", not "wrong": the run itself will count them
        if resp.status not in (200, 429, 503):
            where = f" (class {sla_class})" if sla_class else ""
            raise TargetRefused(
                f"POST {self.url}{where} answered {resp.status}: {_error_message(text)}"
            )

    # -- the measured requests ---------------------------------------------------------------

    def encode(self, request: PlannedRequest, model: str) -> bytes:
        """The request body, built once before the run so sending costs no serialisation."""
        sample = request.sample
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": sample.output_len,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self._chat:
            body["messages"] = list(sample.messages or ()) or [
                {"role": "user", "content": sample.prompt or ""}
            ]
        else:
            body["prompt"] = sample.prompt if sample.prompt is not None else "\n".join(
                f"{m.get('role', 'user')}: {m.get('content', '')}" for m in sample.messages or ()
            )
        if self._config.ignore_eos:
            body["ignore_eos"] = True
        if self._config.sends_service_tier:
            body["service_tier"] = request.sla_class
        priority = dict(self._config.priorities).get(request.sla_class)
        if priority is not None:
            body["priority"] = priority
        body.update(self._config.extra_body)
        return orjson.dumps(body)

    async def send(self, request: PlannedRequest, body: bytes) -> RequestRecord:
        """Send one request (retrying rejections if configured) and record its outcome."""
        headers = {**self.headers, "X-Request-Id": f"{self.run_id}-{request.index}"}
        first_send = time.perf_counter()
        attempts = 0
        while True:
            attempts += 1
            fields = await self._attempt(body, headers, first_send, request.disconnect_after)
            retryable = fields["outcome"] in (Outcome.REJECTED_429, Outcome.REJECTED_503)
            if not retryable or attempts > self._config.retry:
                break
            wait = fields["retry_after_s"]
            wait = _DEFAULT_RETRY_WAIT_S if wait is None else wait
            await asyncio.sleep(min(wait, self._config.retry_max_wait_s))
        prompt_tokens = fields.pop("prompt_tokens") or request.sample.input_len
        return RequestRecord(
            index=request.index,
            sla_class=request.sla_class,
            warmup=request.warmup,
            due_s=request.due_s,
            send_s=first_send - self.t0,
            done_s=time.perf_counter() - self.t0,
            attempts=attempts,
            prompt_tokens=prompt_tokens,
            **fields,
        )

    async def _attempt(
        self, body: bytes, headers: dict[str, str], first_send: float, hangup: int | None
    ) -> dict[str, Any]:
        try:
            async with self._session.post(self._url, data=body, headers=headers) as resp:
                if resp.status != 200:
                    return await self._rejection(resp)
                return await self._read_stream(resp, first_send, hangup)
        except TimeoutError:
            return _failure(f"timeout after {self._config.request_timeout_s:g}s")
        except aiohttp.ClientError as exc:
            return _failure(f"{type(exc).__name__}: {exc}"[:200])

    async def _rejection(self, resp: aiohttp.ClientResponse) -> dict[str, Any]:
        text = await resp.content.read(_ERROR_BODY_LIMIT)
        outcome = {429: Outcome.REJECTED_429, 503: Outcome.REJECTED_503}.get(
            resp.status, Outcome.ERROR
        )
        fields = _failure(f"HTTP {resp.status}: {_error_message(text)}", outcome, resp.status)
        fields["retry_after_s"] = parse_retry_after(resp.headers.get("Retry-After"))
        fields["reject_reason"] = resp.headers.get("X-Reject-Reason", "")
        return fields

    async def _read_stream(
        self, resp: aiohttp.ClientResponse, st: float, hangup: int | None = None
    ) -> dict[str, Any]:
        """Read an SSE stream to its end, or hang up after ``hangup`` token events."""
        parser = SSEParser()
        ttft = None
        last = st
        itl: list[float] = []
        events = 0
        usage_tokens = prompt_tokens = None
        done = False
        error = ""
        async for chunk in resp.content.iter_any():
            now = time.perf_counter()
            for payload in parser.feed(chunk):
                event = classify(payload, self._chat)
                if event.completion_tokens is not None:
                    usage_tokens = event.completion_tokens
                if event.prompt_tokens is not None:
                    prompt_tokens = event.prompt_tokens
                if event.kind is Kind.TOKEN:
                    if ttft is None:
                        ttft = now - st
                    else:
                        itl.append(now - last)
                    last = now
                    events += 1
                elif event.kind is Kind.DONE:
                    done = True
                elif event.kind is Kind.ERROR:
                    error = error or event.error
            if hangup is not None and events >= hangup and not done and not error:
                # Drop the connection, as an impatient client does: the server must
                # notice and abort the request mid-stream.
                resp.close()
                return {
                    "outcome": Outcome.CANCELLED, "status": resp.status, "ttft_s": ttft,
                    "e2el_s": last - st, "itl_s": tuple(itl), "output_tokens": events,
                    "prompt_tokens": prompt_tokens, "error": "",
                }
        if not error and ttft is None:
            error = "stream had no token event"
        if not error and not done:
            error = "stream ended without [DONE]"
        fields = {
            "outcome": Outcome.ERROR if error else Outcome.OK,
            "status": resp.status,
            "ttft_s": ttft,
            "e2el_s": (last - st) if ttft is not None else None,
            "itl_s": tuple(itl),
            "output_tokens": usage_tokens if usage_tokens is not None else events,
            "prompt_tokens": prompt_tokens,
            "error": error,
        }
        return fields


def _failure(error: str, outcome: Outcome = Outcome.ERROR, status: int = 0) -> dict[str, Any]:
    return {"outcome": outcome, "status": status, "error": error, "prompt_tokens": None}
