"""The OpenAI completion routes: validate, tokenize, place, stream back.

One ``CompletionService`` serves both ``/v1/completions`` and
``/v1/chat/completions``; the differences live in ``validate.py`` (request
shape) and ``wire.py`` (response shape). Every request that gets here ends in
exactly one outcome, counted once in ``gateway_requests_total``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import Mapping
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any

import orjson
from aiohttp import web

from engines.pool import EnginePool
from engines.protocol import Engine, EngineDeadError, EngineError, GenerationRequest
from gateway.classes import resolve_class
from gateway.coalesce import coalesced
from gateway.config import GatewayConfig, SLAClass
from gateway.errors import (
    APIError,
    ContextTooLong,
    EngineFailed,
    InvalidRequest,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    QueueTimeout,
    Unavailable,
)
from gateway.lifecycle import Lifecycle
from gateway.metrics import GatewayMetrics
from gateway.prompts import PromptEncoder
from gateway.validate import Kind, ParsedRequest, parse_request
from gateway.wire import DONE, Transcript, sse
from scheduler.dispatcher import Dispatcher, Expired, Rejected
from scheduler.placement import prefix_key
from scheduler.ticket import Ticket

logger = logging.getLogger(__name__)

SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
# Tokenizing a long prompt blocks the loop; past this many characters it runs
# in a worker thread instead.
_THREAD_TOKENIZE_CHARS = 16_384
# OpenAI's default for /v1/completions when max_tokens is absent.
_COMPLETIONS_DEFAULT_MAX_TOKENS = 16


@dataclass(frozen=True, slots=True)
class ServedModel:
    name: str
    encoder: PromptEncoder
    max_model_len: int


class CompletionService:
    """Handlers for the two generation routes."""

    def __init__(
        self,
        config: GatewayConfig,
        pool: EnginePool,
        models: Mapping[str, ServedModel],
        lifecycle: Lifecycle,
        metrics: GatewayMetrics,
        dispatcher: Dispatcher,
    ) -> None:
        self.config = config
        self.pool = pool
        self.models = dict(models)
        self.lifecycle = lifecycle
        self.metrics = metrics
        self.dispatcher = dispatcher
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "completion")

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "chat")

    async def _serve(self, request: web.Request, kind: Kind) -> web.StreamResponse:
        arrival = time.monotonic()
        label = "none"
        outcome = "error"
        try:
            self.lifecycle.check_accepting()
            body = await _read_body(request, self.config.server.max_body_bytes)
            parsed = parse_request(kind, body)
            model = self.models.get(parsed.model)
            if model is None:
                raise NotFound(f"The model {parsed.model[:128]!r} does not exist. Served: "
                               f"{', '.join(sorted(self.models))}.", param="model",
                               code="model_not_found")
            sla = resolve_class(self.config.classes, self.config.default_class,
                                parsed.service_tier, request.headers.get("X-SLA-Class"))
            label = sla.name
            deadline = arrival + _queue_budget(sla, request.headers.get("X-Request-Deadline-Ms"))
            generation = await self._prepare(parsed, model, sla)
            with self.lifecycle.track():
                ticket = Ticket(
                    id=generation.request_id, sla_class=sla.name, tenant="anonymous",
                    prompt_tokens=len(generation.prompt_token_ids),
                    max_tokens=generation.sampling.max_tokens * generation.sampling.n,
                    arrival=arrival, deadline=deadline,
                    prefix_key=prefix_key(generation.prompt_token_ids,
                                          self.config.scheduler.prefix_tokens),
                )
                engine = await self._acquire(ticket, sla)
                release = "failed"
                try:
                    transcript = Transcript(
                        kind, generation.request_id, model.name, generation.sampling.n,
                        len(generation.prompt_token_ids), generation.sampling.logprobs,
                        sla.name, include_usage=parsed.include_usage,
                    )
                    if parsed.stream:
                        response, outcome = await self._stream(
                            request, engine, generation, transcript, sla, ticket)
                    else:
                        response = await self._complete(engine, generation, transcript, sla,
                                                        ticket)
                        outcome = "ok"
                    release = "finished" if outcome == "ok" else outcome
                    return response
                except (asyncio.CancelledError, ConnectionResetError):
                    release = "aborted" if self.lifecycle.draining else "client_gone"
                    raise
                finally:
                    self.dispatcher.release(ticket, release)
        except APIError as exc:
            outcome = exc.outcome
            raise
        except asyncio.CancelledError:
            outcome = "aborted" if self.lifecycle.draining else "client_gone"
            raise
        except ConnectionResetError:
            outcome = "client_gone"
            raise
        finally:
            self._child(self.metrics.requests, label, outcome).inc()

    async def _acquire(self, ticket: Ticket, sla: SLAClass) -> Engine:
        """Wait in the SLA queue for a grant; the engine it was placed on."""
        try:
            name = await self.dispatcher.acquire(ticket)
        except Rejected as exc:
            r = exc.rejection
            self.metrics.rejections.labels(sla.name, r.reason).inc()
            raise Overloaded(r.message, reason=r.reason, retry_after_s=r.retry_after_s) from None
        except Expired as exc:
            self.metrics.rejections.labels(sla.name, "queue_timeout").inc()
            raise QueueTimeout(f"Request {exc}.", reason="queue_timeout",
                               retry_after_s=sla.queue_timeout_s) from None
        assert ticket.granted_at is not None
        self._child(self.metrics.queue_wait, sla.name).observe(ticket.granted_at - ticket.arrival)
        return self.pool.engine(name)

    async def _prepare(self, parsed: ParsedRequest, model: ServedModel,
                       sla: SLAClass) -> GenerationRequest:
        encoder = model.encoder
        if parsed.prompt_token_ids is not None:
            ids = list(parsed.prompt_token_ids)
            encoder.check_token_ids(ids)
        elif parsed.prompt_text is not None:
            ids = await _maybe_in_thread(encoder.encode_text, parsed.prompt_text)
        else:
            assert parsed.messages is not None
            size = sum(len(m.content) for m in parsed.messages)
            ids = await _maybe_in_thread(encoder.encode_chat, parsed.messages, size=size)
        limit = self.config.server.max_tokens_limit
        room = model.max_model_len - len(ids)
        if parsed.max_tokens is None:
            default = _COMPLETIONS_DEFAULT_MAX_TOKENS if parsed.kind == "completion" else limit
            max_tokens = max(1, min(default, room))
        else:
            max_tokens = parsed.max_tokens
            if max_tokens > limit:
                raise InvalidRequest(f"`max_tokens` is {max_tokens}; this gateway allows at "
                                     f"most {limit}.", param="max_tokens")
        if len(ids) + max_tokens > model.max_model_len:
            raise ContextTooLong(len(ids), max_tokens, model.max_model_len)
        prefix = "cmpl" if parsed.kind == "completion" else "chatcmpl"
        sampling = parsed.sampling
        if sampling.max_tokens != max_tokens:
            sampling = replace(sampling, max_tokens=max_tokens)  # ~10 us: only when needed
        return GenerationRequest(
            request_id=f"{prefix}-{_request_id()}",
            prompt_token_ids=ids,
            sampling=sampling,
            priority=sla.priority,
        )

    async def _complete(self, engine: Engine, generation: GenerationRequest,
                        transcript: Transcript, sla: SLAClass, ticket: Ticket) -> web.Response:
        timer = _Timer(ticket.arrival)
        try:
            async with aclosing(engine.generate(generation)) as deltas:
                async for delta in deltas:
                    if timer.token(len(delta.token_ids)):
                        self.dispatcher.first_token(ticket)
                    transcript.add(delta)
        except EngineError as exc:
            raise _engine_failure(engine, exc) from exc
        self._observe(sla, engine, transcript, timer, ticket)
        return web.Response(body=orjson.dumps(transcript.response()),
                            content_type="application/json",
                            headers={"X-SLA-Class": sla.name})

    async def _stream(self, request: web.Request, engine: Engine, generation: GenerationRequest,
                      transcript: Transcript, sla: SLAClass,
                      ticket: Ticket) -> tuple[web.StreamResponse, str]:
        timer = _Timer(ticket.arrival)
        response: web.StreamResponse | None = None
        try:
            async with aclosing(engine.generate(generation)) as deltas:
                async for delta in coalesced(deltas, request.transport):
                    if response is None:
                        # Headers go out with the first token: an engine failure
                        # before it can still be answered with a real status.
                        response = web.StreamResponse(headers=SSE_HEADERS)
                        response.headers["X-SLA-Class"] = sla.name
                        await response.prepare(request)
                    if timer.token(len(delta.token_ids)):
                        self.dispatcher.first_token(ticket)
                    await response.write(transcript.chunk(delta))
        except EngineError as exc:
            failure = _engine_failure(engine, exc)
            if response is None:
                raise failure from exc
            await response.write(sse(failure.to_body()))
            return response, failure.outcome
        except asyncio.CancelledError:
            if response is None or not self.lifecycle.draining:
                raise  # the client left: nobody to tell
            # Cancelled by the drain timeout (the engine request is already
            # aborted): end the stream properly with one error event.
            drained = Unavailable("The gateway shut down before this request finished.",
                                  reason="draining")
            await _write_quietly(response, sse(drained.to_body()), eof=True)
            return response, "aborted"
        if response is None:
            response = web.StreamResponse(headers=SSE_HEADERS)
            response.headers["X-SLA-Class"] = sla.name
            await response.prepare(request)
        if transcript.include_usage:
            await response.write(transcript.usage_chunk())
        await response.write(DONE)
        await response.write_eof()
        self._observe(sla, engine, transcript, timer, ticket)
        return response, "ok"

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached: prometheus_client re-checks the
        labels and takes a lock on every ``labels`` call."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _observe(self, sla: SLAClass, engine: Engine, transcript: Transcript,
                 timer: _Timer, ticket: Ticket) -> None:
        m, name, child = self.metrics, sla.name, self._child
        child(m.tokens, name, "prompt").inc(transcript.prompt_tokens)
        child(m.tokens, name, "completion").inc(transcript.completion_tokens)
        if timer.first is None:
            return
        ttft = timer.first - timer.arrival
        e2e = timer.last - timer.arrival
        child(m.ttft, name).observe(ttft)
        if ticket.granted_at is not None:
            # Engine-side: grant -> first token, without the time queued here.
            child(m.engine_ttft, engine.name).observe(timer.first - ticket.granted_at)
        child(m.e2e, name).observe(e2e)
        met = ttft * 1000 <= sla.ttft_target_ms
        if timer.tokens > 1:
            tpot = (e2e - ttft) / (timer.tokens - 1)
            child(m.tpot, name).observe(tpot)
            met = met and tpot * 1000 <= sla.tpot_target_ms
        child(m.slo_met if met else m.slo_missed, name).inc()


class _Timer:
    __slots__ = ("arrival", "first", "last", "tokens")

    def __init__(self, arrival: float) -> None:
        self.arrival = arrival
        self.first: float | None = None
        self.last = arrival
        self.tokens = 0

    def token(self, count: int) -> bool:
        """Record ``count`` new tokens; True when they are the first."""
        if count == 0:
            return False
        now = time.monotonic()
        first = self.first is None
        if first:
            self.first = now
        self.last = now
        self.tokens += count
        return first


# Request ids: 32 hex digits like a uuid4's, from a random per-process prefix and a
# counter (uuid4 reads os.urandom on every call).
_ID_PREFIX = uuid.uuid4().hex[:16]
_ID_COUNTER = itertools.count()


def _request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def _queue_budget(sla: SLAClass, header: str | None) -> float:
    """Seconds the request may wait for a grant: the class timeout, tightened
    (never loosened) by the client's ``X-Request-Deadline-Ms``."""
    budget = sla.queue_timeout_s
    if header is None:
        return budget
    try:
        client_ms = int(header)
    except ValueError:
        client_ms = 0
    if client_ms <= 0:
        raise InvalidRequest("X-Request-Deadline-Ms must be a positive integer (milliseconds).",
                             param="X-Request-Deadline-Ms")
    return min(budget, client_ms / 1000)


def _engine_failure(engine: Engine, exc: EngineError) -> APIError:
    logger.error("engine %s failed a request: %s", engine.name, exc)
    if isinstance(exc, EngineDeadError):
        return Unavailable(f"Engine {engine.name} is unavailable.", reason="engine_dead")
    return EngineFailed(f"Engine {engine.name} failed this request.")


async def _read_body(request: web.Request, limit: int) -> bytes:
    # The app's client_max_size is the same limit; this gives the OpenAI body.
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"Request body is larger than {limit} bytes.") from None


async def _maybe_in_thread(fn, arg, size: int | None = None):  # type: ignore[no-untyped-def]
    if (size if size is not None else len(arg)) > _THREAD_TOKENIZE_CHARS:
        return await asyncio.to_thread(fn, arg)
    return fn(arg)


async def _write_quietly(response: web.StreamResponse, data: bytes, eof: bool = False) -> None:
    with contextlib.suppress(ConnectionResetError, RuntimeError):
        await response.write(data)
        if eof:
            await response.write_eof()

