"""The OpenAI completion routes: validate, tokenize, place, stream back.

One ``CompletionService`` serves both ``/v1/completions`` and
``/v1/chat/completions``; the differences live in ``validate.py`` (request
shape) and ``wire.py`` (response shape). Every request that gets here ends in
exactly one outcome, counted once in ``gateway_requests_total``.

Faults on the way: an engine error fails only its request (502, or one error
event mid-stream); an engine that dies fails its requests with 503
(``engine_dead``); an engine silent for ``server.stall_timeout_s`` has the
request aborted (504 / error event) and is reported to the supervisor; a
client that takes no data for ``server.write_timeout_s`` is cut
(``client_slow``). The last two share one ``Watchdog`` per request.
"""

from __future__ import annotations

import asyncio
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
from engines.supervisor import EngineSupervisor
from gateway.auth import PRINCIPAL, Principal
from gateway.classes import resolve_class
from gateway.coalesce import coalesced
from gateway.config import GatewayConfig, ServerConfig, SLAClass
from gateway.errors import (
    APIError,
    ContextTooLong,
    EngineDied,
    EngineFailed,
    EngineStalled,
    InvalidRequest,
    NotFound,
    Overloaded,
    QueueTimeout,
    Unavailable,
)
from gateway.lifecycle import Lifecycle
from gateway.limits import read_body
from gateway.logsafe import one_line
from gateway.metrics import GatewayMetrics
from gateway.prompts import PromptEncoder
from gateway.schema import RequestLimits
from gateway.validate import (
    Kind,
    ParsedRequest,
    check_content_type,
    parse_deadline_ms,
    parse_request,
)
from gateway.watchdog import Overrun, Watchdog
from gateway.wire import DONE, Transcript, sse
from scheduler.dispatcher import Dispatcher, Expired, Rejected
from scheduler.placement import prefix_key
from scheduler.quota import LocalQuotas, QuotaGrant, QuotaRefusal, Quotas
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
# What a request's watchdog waits on.
_ENGINE = "engine"
_CLIENT = "client"


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
        supervisor: EngineSupervisor | None = None,
        quotas: Quotas | None = None,
    ) -> None:
        # Swapped whole by a config reload; a request reads it once, at its start.
        self.config = config
        self.pool = pool
        self.models = dict(models)
        self.lifecycle = lifecycle
        self.metrics = metrics
        self.dispatcher = dispatcher
        self.supervisor = supervisor
        self._limits_cache: tuple[ServerConfig, WatchLimits, RequestLimits] | None = None
        self.quotas = quotas if quotas is not None else LocalQuotas()
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "completion")

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "chat")

    async def _serve(self, request: web.Request, kind: Kind) -> web.StreamResponse:
        arrival = time.monotonic()
        config = self.config
        principal = request[PRINCIPAL]
        label = "none"
        outcome = "error"
        self.metrics.received.inc()
        ticket: Ticket | None = None
        shed = False
        quota: QuotaGrant | None = None
        transcript: Transcript | None = None
        try:
            self.lifecycle.check_accepting()
            check_content_type(request.headers.get("Content-Type"))
            body = await read_body(request, config.server.max_body_bytes,
                                   config.server.body_timeout_s)
            parsed = parse_request(kind, body, self._request_limits(config.server))
            model = self.models.get(parsed.model)
            if model is None:
                raise NotFound(f"The model {parsed.model[:128]!r} does not exist. Served: "
                               f"{', '.join(sorted(self.models))}.", param="model",
                               code="model_not_found")
            sla = resolve_class(config.classes, principal.default_class, parsed.service_tier,
                                request.headers.get("X-SLA-Class"), principal.classes)
            label = sla.name
            deadline = arrival + _queue_budget(
                sla, parse_deadline_ms(request.headers.getall("X-Request-Deadline-Ms", [])))
            try:
                # Shed now if its size cannot matter: no tokenizing for a 429.
                self.dispatcher.precheck(sla.name, deadline)
            except Rejected as exc:
                raise self._shed(sla, exc) from None
            generation = await self._prepare(parsed, model, sla)
            quota = self._try_quota(principal, sla, generation)
            # Looked up once for the lifecycle and the watchdog (a Python call in 3.11).
            task = asyncio.current_task()
            with self.lifecycle.track(task):
                ticket = Ticket(
                    id=generation.request_id, sla_class=sla.name, tenant=principal.tenant,
                    prompt_tokens=len(generation.prompt_token_ids),
                    max_tokens=generation.sampling.max_tokens * generation.sampling.n,
                    arrival=arrival, deadline=deadline,
                    prefix_key=prefix_key(generation.prompt_token_ids,
                                          config.scheduler.prefix_tokens),
                )
                engine = await self._acquire(ticket, sla)
                release = "failed"
                try:
                    transcript = Transcript(
                        kind, generation.request_id, model.name, generation.sampling.n,
                        len(generation.prompt_token_ids), generation.sampling.logprobs,
                        sla.name, include_usage=parsed.include_usage,
                    )
                    limits = self._watch_limits(config.server)
                    if parsed.stream:
                        response, outcome = await self._stream(
                            request, engine, generation, transcript, sla, ticket, limits, task)
                    else:
                        response = await self._complete(engine, generation, transcript, sla,
                                                        ticket, limits, task)
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
            shed = isinstance(exc, Overloaded)
            raise
        except asyncio.CancelledError:
            if not self.lifecycle.draining:
                outcome = "client_gone"
                raise
            # Cut by the drain timeout before a byte went out (still queued, in
            # prefill, or non-streaming): answer the 503 a new request gets now
            # rather than drop the connection. (A stream already started ends
            # with an error event instead: _stream.)
            outcome = "aborted"
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            raise Unavailable("The gateway shut down before this request finished.",
                              reason="draining", retry_after_s=5) from None
        except ConnectionResetError:
            outcome = "client_gone"
            raise
        finally:
            if quota is not None:
                used = 0 if transcript is None else (transcript.prompt_tokens
                                                     + transcript.completion_tokens)
                self.quotas.release(quota, time.monotonic(), used)
            self._child(self.metrics.requests, label, outcome).inc()
            if ticket is None or shed:
                # Answered without ever entering a queue.
                self.metrics.refused.labels(label, outcome).inc()

    def _try_quota(self, principal: Principal, sla: SLAClass,
                   generation: GenerationRequest) -> QuotaGrant:
        """Charge the tenant one request and prompt + max_tokens tokens, or 429."""
        sampling = generation.sampling
        tokens = len(generation.prompt_token_ids) + sampling.max_tokens * sampling.n
        result = self.quotas.try_acquire(principal.tenant, principal.limits, tokens,
                                         time.monotonic())
        if isinstance(result, QuotaRefusal):
            self.metrics.rejections.labels(sla.name, result.reason).inc()
            raise Overloaded(result.message, reason=result.reason,
                             retry_after_s=result.retry_after_s)
        return result

    async def _acquire(self, ticket: Ticket, sla: SLAClass) -> Engine:
        """Wait in the SLA queue for a grant; the engine it was placed on."""
        try:
            name = await self.dispatcher.acquire(ticket)
        except Rejected as exc:
            raise self._shed(sla, exc) from None
        except Expired as exc:
            self.metrics.rejections.labels(sla.name, "queue_timeout").inc()
            raise QueueTimeout(f"Request {exc}.", reason="queue_timeout",
                               retry_after_s=sla.queue_timeout_s) from None
        assert ticket.granted_at is not None
        self._child(self.metrics.queue_wait, sla.name).observe(ticket.granted_at - ticket.arrival)
        return self.pool.engine(name)

    def _shed(self, sla: SLAClass, exc: Rejected) -> APIError:
        """The answer to a ticket the scheduler refused at admission."""
        r = exc.rejection
        self._child(self.metrics.rejections, sla.name, r.reason).inc()
        if r.reason == "no_engine":
            # Not load: every engine of the class is down (restarting).
            return Unavailable(r.message, reason=r.reason, retry_after_s=r.retry_after_s)
        return Overloaded(r.message, reason=r.reason, retry_after_s=r.retry_after_s)

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
            # ~10 us: only for a body without max_tokens (validate.py keeps the body's)
            sampling = replace(sampling, max_tokens=max_tokens)
        return GenerationRequest(
            request_id=f"{prefix}-{_request_id()}",
            prompt_token_ids=ids,
            sampling=sampling,
            priority=sla.priority,
        )

    def _watch_limits(self, server: ServerConfig) -> WatchLimits:
        """The watchdog's limits for the config a request started with (a reload
        applies to requests that start after it)."""
        return self._limits(server)[1]

    def _request_limits(self, server: ServerConfig) -> RequestLimits:
        return self._limits(server)[2]

    def _limits(self, server: ServerConfig) -> tuple[ServerConfig, WatchLimits, RequestLimits]:
        # Derived once per config rather than built again for every request.
        cached = self._limits_cache
        if cached is None or cached[0] is not server:
            cached = self._limits_cache = (server, WatchLimits.of(server),
                                           server.request_limits)
        return cached

    async def _complete(self, engine: Engine, generation: GenerationRequest,
                        transcript: Transcript, sla: SLAClass, ticket: Ticket,
                        limits: WatchLimits, task: asyncio.Task[Any] | None) -> web.Response:
        timer = _Timer(ticket.arrival)
        try:
            with Watchdog(limits.period_s, task) as watch:
                async with aclosing(engine.generate(generation)) as deltas:
                    watch.expect(_ENGINE, limits.stall_s)
                    async for delta in deltas:
                        if timer.token(len(delta.token_ids)):
                            self.dispatcher.first_token(ticket)
                        transcript.add(delta)
                        watch.expect(_ENGINE, limits.stall_s)
        except EngineError as exc:
            raise self._engine_failure(engine, exc) from exc
        except Overrun as exc:
            raise await self._stalled(engine, generation, exc) from None
        self._child(self.metrics.tokens, sla.name, "completion").inc(transcript.completion_tokens)
        self._observe(sla, engine, transcript, timer, ticket)
        return web.Response(body=orjson.dumps(transcript.response()),
                            content_type="application/json",
                            headers={"X-SLA-Class": sla.name})

    async def _stream(self, request: web.Request, engine: Engine, generation: GenerationRequest,
                      transcript: Transcript, sla: SLAClass, ticket: Ticket,
                      limits: WatchLimits,
                      task: asyncio.Task[Any] | None) -> tuple[web.StreamResponse, str]:
        timer = _Timer(ticket.arrival)
        response: web.StreamResponse | None = None
        sent = 0  # completion tokens written to the client
        try:
            with Watchdog(limits.period_s, task) as watch:
                async with aclosing(engine.generate(generation)) as deltas:
                    watch.expect(_ENGINE, limits.stall_s)
                    async for delta in coalesced(deltas, request.transport):
                        watch.expect(_CLIENT, limits.write_s)
                        if response is None:
                            # Headers go out with the first token: an engine failure
                            # before it can still be answered with a real status.
                            response = _stream_response(sla)
                            await response.prepare(request)
                        if timer.token(len(delta.token_ids)):
                            self.dispatcher.first_token(ticket)
                        await response.write(transcript.chunk(delta))
                        sent += len(delta.token_ids)
                        watch.expect(_ENGINE, limits.stall_s)
                watch.expect(_CLIENT, limits.write_s)
                if response is None:
                    response = _stream_response(sla)
                    await response.prepare(request)
                if transcript.include_usage:
                    await response.write(transcript.usage_chunk())
                await response.write(DONE)
                await response.write_eof()
        except EngineError as exc:
            failure = self._engine_failure(engine, exc)
            if response is None:
                raise failure from exc
            await self._end_stream(request, response, failure, limits)
            return response, failure.outcome
        except Overrun as exc:
            if exc.what == _CLIENT:
                # Its engine request is already closed (aborted) on the way out.
                logger.info("request %s: client took no data for %.0f s; cut",
                            generation.request_id, exc.limit_s)
                _cut(request)
                return response or _stream_response(sla), "client_slow"
            stalled = await self._stalled(engine, generation, exc)
            if response is None:
                raise stalled from None
            await self._end_stream(request, response, stalled, limits)
            return response, stalled.outcome
        except ConnectionResetError:
            # The client left between two writes (before aiohttp cancelled us):
            # the engine request is closed already; end quietly, no traceback.
            return response or _stream_response(sla), "client_gone"
        except asyncio.CancelledError:
            if response is None or not self.lifecycle.draining:
                raise  # the client left: nobody to tell
            # Cancelled by the drain timeout (the engine request is already
            # aborted): end the stream properly with one error event.
            drained = Unavailable("The gateway shut down before this request finished.",
                                  reason="draining")
            await self._end_stream(request, response, drained, limits)
            return response, "aborted"
        finally:
            # Whatever the outcome: a stream cut short still sent these tokens,
            # and completion tokens counted must equal tokens sent.
            self._child(self.metrics.tokens, sla.name, "completion").inc(sent)
        self._observe(sla, engine, transcript, timer, ticket)
        return response, "ok"

    def _engine_failure(self, engine: Engine, exc: EngineError) -> APIError:
        logger.error("engine %s failed a request: %s", engine.name, one_line(exc))
        if isinstance(exc, EngineDeadError):
            if self.supervisor is not None:
                # The first request to see it tells the scheduler at once,
                # before the supervisor's next look.
                self.supervisor.note_dead(engine)
            return EngineDied(f"Engine {engine.name} died while running this request; "
                              "retry it.")
        return EngineFailed(f"Engine {engine.name} failed this request.")

    async def _stalled(self, engine: Engine, generation: GenerationRequest,
                       overrun: Overrun) -> EngineStalled:
        """Abort a request whose engine went silent; report the engine."""
        logger.error("engine %s stalled: no token for %.1f s on %s; aborting it", engine.name,
                     overrun.limit_s, generation.request_id)
        # Closing the stream has aborted it already; an explicit abort also
        # reaches an engine whose stream could not be closed cleanly.
        await engine.abort(generation.request_id)
        if self.supervisor is not None:
            self.supervisor.note_stall(engine)
        return EngineStalled(f"Engine {engine.name} produced no token for {overrun.limit_s:g} s; "
                             "the request was aborted.")

    async def _end_stream(self, request: web.Request, response: web.StreamResponse,
                          error: APIError, limits: WatchLimits) -> None:
        """One error event, then the end of the stream; a client that does not
        take even that within the write timeout is cut."""
        try:
            async with asyncio.timeout(limits.write_s):
                await response.write(sse(error.to_body()))
                await response.write_eof()
        except TimeoutError:
            _cut(request)
        except (ConnectionResetError, RuntimeError):
            pass  # the client is gone already: nobody left to tell

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
        if self.supervisor is not None:
            self.supervisor.note_completed(engine.name)


@dataclass(frozen=True, slots=True)
class WatchLimits:
    """What a request's watchdog enforces: ``server.stall_timeout_s`` without a
    token from the engine, ``server.write_timeout_s`` without the client taking data."""

    stall_s: float
    write_s: float
    period_s: float  # how often it looks

    @classmethod
    def of(cls, server: ServerConfig) -> WatchLimits:
        stall, write = server.stall_timeout_s, server.write_timeout_s
        # Every quarter of the shorter limit (so at most a quarter late), at most 1 s.
        return cls(stall, write, max(0.005, min(1.0, min(stall, write) / 4)))


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


def _queue_budget(sla: SLAClass, client_ms: int | None) -> float:
    """Seconds the request may wait for a grant: the class timeout, tightened
    (never loosened) by the client's ``X-Request-Deadline-Ms``."""
    budget = sla.queue_timeout_s
    return budget if client_ms is None else min(budget, client_ms / 1000)


def _stream_response(sla: SLAClass) -> web.StreamResponse:
    response = web.StreamResponse(headers=SSE_HEADERS)
    response.headers["X-SLA-Class"] = sla.name
    return response


def _cut(request: web.Request) -> None:
    """Drop the connection at once, discarding what is buffered for it."""
    if request.transport is not None:
        request.transport.abort()


async def _maybe_in_thread(fn, arg, size: int | None = None):  # type: ignore[no-untyped-def]
    if (size if size is not None else len(arg)) > _THREAD_TOKENIZE_CHARS:
        return await asyncio.to_thread(fn, arg)
    return fn(arg)

