"""The aiohttp application: routes, the error and auth middlewares, and app state.

Engines start in a background task owned by the app's cleanup context, so the
server listens at once: ``/health/live`` answers 200 while ``/health/ready``
answers 503 until every engine is started and warmed. Once serving, an
``EngineSupervisor`` (owned by the same context) restarts engines that die;
``/health/ready`` stays 200 but says ``"degraded"`` while some engine is out of
service, and turns 503 when none serves.

Who may call what (``auth`` in the config; with no key configured, everything is
open and the gateway listens on loopback only):

- ``/health/live``, ``/health/ready``: open (probes; they show engine health only);
- ``/metrics``: an admin key, or open with ``auth.metrics_public: true``;
- ``/admin/*`` (``POST /admin/reload``): an admin key;
- everything else (``/v1/*``): a client key (an admin key may read ``/v1/models``
  and ``/v1/sla``, but runs no completions: it allows no class).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from engines.pool import EnginePool
from engines.supervisor import EngineFactory, EngineSupervisor, RestartPolicy
from gateway import reload
from gateway.auth import PRINCIPAL, KeyRing
from gateway.config import ConfigError, GatewayConfig, ServerConfig
from gateway.engine_health_metrics import EngineHealthCollector
from gateway.errors import (
    APIError,
    Forbidden,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    Unauthorized,
    Unavailable,
)
from gateway.gc_policy import CollectorPolicy
from gateway.lifecycle import Lifecycle
from gateway.logsafe import one_line
from gateway.metrics import GatewayMetrics
from gateway.scheduling import build_scheduler, class_policies, scheduler_settings, sla_view
from gateway.serving import CompletionService
from gateway.startup import StartupReport, build_pool, engine_factory, rewarmer, start_and_warm
from gateway.telemetry import telemetry_context
from scheduler.dispatcher import Dispatcher

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class GatewayState:
    """Everything the routes share; one per app."""

    live: reload.LiveConfig  # swapped whole by a config reload
    pool: EnginePool
    dispatcher: Dispatcher
    factory: EngineFactory | None = None  # None: dead engines are not restarted
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    service: CompletionService | None = None
    startup: StartupReport | None = None
    startup_error: BaseException | None = None
    timers: asyncio.Task[None] | None = None
    supervisor: EngineSupervisor | None = None
    supervision: asyncio.Task[None] | None = None
    collector: asyncio.Task[None] | None = None  # gc_policy's full collections
    started: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def config(self) -> GatewayConfig:
        return self.live.config


STATE = web.AppKey("state", GatewayState)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(payload: object, status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, headers=headers,
                        content_type="application/json")


_CLOSE_AFTER = frozenset({408, 413})


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except APIError as exc:
        response = json_response(exc.to_body(), exc.status, exc.headers)
        if exc.status in _CLOSE_AFTER:
            # The rest of the body is still on the wire: don't wait for it.
            response.force_close()
        return response
    except web.HTTPMethodNotAllowed as exc:
        bad_method = MethodNotAllowed(f"Method {request.method} is not allowed for "
                                      f"{request.path[:200]!r}.")
        return json_response(bad_method.to_body(), bad_method.status,
                             {"Allow": ",".join(exc.allowed_methods)})
    except web.HTTPNotFound:
        missing = NotFound(f"No route {request.path[:200]!r}.")
        return json_response(missing.to_body(), missing.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # Any other error aiohttp raises itself (413 on a route that reads no
        # body, 400, ...): the same OpenAI body, never aiohttp's text/plain.
        other = APIError(exc.reason)
        body = other.to_body()
        body["error"].update(type="invalid_request_error" if exc.status < 500 else "server_error",
                             code=exc.status)
        return json_response(body, exc.status)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        # A bug of ours, never the client's fault: log it, answer OpenAI-shaped.
        logger.exception("unhandled error on %s %s", one_line(request.method),
                         one_line(request.path))
        internal = APIError("Internal error.")
        return json_response(internal.to_body(), internal.status)


_OPEN_PATHS = frozenset({"/health/live", "/health/ready"})
_ADMIN_READABLE = frozenset({"/v1/models", "/v1/sla"})
_GENERATION_PATHS = frozenset({"/v1/completions", "/v1/chat/completions"})


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate before a byte of the body is read; see the module docstring."""
    # The matched route's pattern, not the raw path: no spelling of a URL reaches a
    # route under other rules. Unrouted requests (404/405) need a client key.
    resource = request.match_info.route.resource
    path = resource.canonical if resource is not None else ""
    if path in _OPEN_PATHS:
        return await handler(request)
    state = request.app[STATE]
    keyring = state.live.keyring
    if path == "/metrics" and keyring.metrics_public:
        return await handler(request)
    try:
        principal = keyring.authenticate(request.headers.get("Authorization"))
        admin_route = path == "/metrics" or path.startswith("/admin/")
        if admin_route and not principal.admin:
            raise Forbidden("This route needs an admin key.", code="admin_key_required")
        if (principal.admin and not keyring.open and not admin_route
                and path not in _ADMIN_READABLE):
            raise Forbidden("An admin key cannot call this route; use a client key.",
                            code="client_key_required")
    except (Unauthorized, Forbidden) as exc:
        if path in _GENERATION_PATHS:  # refused completions are counted like any other
            state.metrics.received.inc()
            state.metrics.refused.labels("none", exc.outcome).inc()
            state.metrics.requests.labels("none", exc.outcome).inc()
        raise
    request[PRINCIPAL] = principal
    return await handler(request)


def build_app(config: GatewayConfig | reload.LiveConfig, pool: EnginePool | None = None,
              factory: EngineFactory | None = None) -> web.Application:
    """The app for ``config`` (a ``LiveConfig`` from ``reload.initial`` to enable reloads),
    on its vLLM engines or on an injected ``pool`` (whose dead engines are restarted only
    if a ``factory`` is given too)."""
    live = config if isinstance(config, reload.LiveConfig) else reload.LiveConfig(
        config, KeyRing(config), 1, reload.EMBEDDED, None)
    config = live.config
    app = web.Application(middlewares=[error_middleware, auth_middleware],
                          client_max_size=config.server.max_body_bytes)
    scheduler = build_scheduler(config)
    if pool is None:
        pool, factory = build_pool(config), factory or engine_factory(config)
    state = GatewayState(live=live, pool=pool, factory=factory,
                         dispatcher=Dispatcher(scheduler, clock=time.monotonic))
    state.metrics.config_loaded(live.generation, live.digest)
    app[STATE] = state
    app.cleanup_ctx.append(telemetry_context(state.metrics))
    app.cleanup_ctx.append(_engines_ctx)
    app.router.add_post("/v1/completions", _generation("completions"))
    app.router.add_post("/v1/chat/completions", _generation("chat"))
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/v1/sla", _sla)
    app.router.add_get("/health/live", _live)
    app.router.add_get("/health/ready", _ready)
    app.router.add_get("/metrics", _metrics)
    app.router.add_post("/admin/reload", _reload)
    return app


def reload_config(state: GatewayState) -> reload.Reload:
    """Re-read the config file and swap it in; ``ConfigError`` (old config kept) if refused.

    Everything new is built first (config, keys, class policies, settings); the swap
    itself has no await, so no request sees half of it.
    """
    try:
        prepared = reload.prepare(state.live)
        config = prepared.live.config
        policies, settings = class_policies(config), scheduler_settings(config)
    except ConfigError:
        state.metrics.config_reloads.labels("error").inc()
        raise
    state.dispatcher.reconfigure(policies, settings)
    state.live = prepared.live
    if state.service is not None:
        state.service.config = config
    state.metrics.config_reloads.labels("ok").inc()
    state.metrics.config_loaded(prepared.live.generation, prepared.live.digest)
    if prepared.restart_required:
        logger.warning("config reloaded (generation %d); changed but kept until a restart: %s",
                       prepared.live.generation, ", ".join(prepared.restart_required))
    else:
        logger.info("config reloaded (generation %d)", prepared.live.generation)
    return prepared


async def _reload(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        prepared = reload_config(state)
    except ConfigError as exc:
        logger.error("config reload refused: %s", one_line(exc, limit=2000))
        raise InvalidRequest(f"Config reload refused; the old config keeps serving: {exc}",
                             code="config_invalid") from None
    return json_response({"status": "reloaded", **_config_view(prepared.live),
                          "restart_required": list(prepared.restart_required)})


def _config_view(live: reload.LiveConfig) -> dict[str, object]:
    return {"generation": live.generation, "sha256": live.digest}


async def _engines_ctx(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    state.metrics.watch_engines(state.pool.stats)
    state.metrics.watch_scheduler(state.dispatcher.scheduler.snapshot)
    state.metrics.registry.register(EngineHealthCollector(
        lambda: state.supervisor.health() if state.supervisor is not None else ()))
    task = asyncio.create_task(_start(state), name="engine-startup")
    yield
    # The supervisor first: a replacement it is starting must not outlive the pool.
    tasks = [t for t in (state.supervision, task, state.timers, state.collector)
             if t is not None]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await state.pool.stop()


async def _start(state: GatewayState) -> None:
    try:
        affinity = state.dispatcher.scheduler.affinity
        models, report = await start_and_warm(state.config, state.pool, affinity)
        pool, dispatcher = state.pool, state.dispatcher
        state.supervisor = EngineSupervisor(
            pool, state.factory, rewarmer(state.config, models, affinity),
            restart_policy(state.config.server),
            on_change=lambda: dispatcher.set_healthy(pool.serving_names()))
        state.service = CompletionService(state.config, state.pool, models, state.lifecycle,
                                          state.metrics, state.dispatcher, state.supervisor)
        state.timers = asyncio.create_task(state.dispatcher.run(pool.serving_names),
                                           name="scheduler-timers")
        state.supervision = asyncio.create_task(state.supervisor.run(),
                                                name="engine-supervisor")
        state.startup = report
        # Start-up left millions of long-lived objects (vLLM, torch, tokenizers):
        # freeze them out of the collector, so full collections while serving scan
        # only request garbage instead of pausing the loop for tens of ms (vLLM's
        # own server does the same).
        gc.collect()
        gc.freeze()
        # From here full collections run when nothing is queued (gc_policy).
        scheduler = dispatcher.scheduler
        state.collector = asyncio.create_task(
            CollectorPolicy(state.metrics.observe_gc_pause).run(
                lambda: scheduler.queued() == 0), name="gc-policy")
        state.lifecycle.mark_ready()
        state.metrics.ready.set(1)
    except Exception as exc:
        logger.exception("engine start-up failed")
        state.startup_error = exc
    finally:
        state.started.set()


def _generation(route: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE]
        if state.service is None:
            state.lifecycle.check_accepting()
            raise Unavailable("The gateway is not serving.", reason="not_ready")
        service = state.service
        return await (service.completions(request) if route == "completions"
                      else service.chat(request))

    return handler


async def _models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    now = int(time.time())
    names = sorted({info.served_model_name for info in state.pool.infos.values()})
    return json_response({"object": "list", "data": [
        {"id": n, "object": "model", "created": now, "owned_by": "slagate"} for n in names
    ]})


async def _sla(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return json_response({**sla_view(state.dispatcher.scheduler.snapshot(),
                                     state.config.default_class),
                          "config": _config_view(state.live)})


def restart_policy(server: ServerConfig) -> RestartPolicy:
    return RestartPolicy(backoff_s=server.engine_restart_backoff_s,
                         backoff_max_s=max(server.engine_restart_backoff_s,
                                           server.engine_restart_backoff_max_s),
                         stalls_before_restart=server.stalls_before_restart)


async def _live(request: web.Request) -> web.Response:
    return json_response({"status": "live"})


async def _ready(request: web.Request) -> web.Response:
    """200 ``ready`` (every engine serving) or ``degraded`` (some are: the
    others restart and their classes run elsewhere); 503 while starting,
    draining, or with no engine serving."""
    state = request.app[STATE]
    stats = state.pool.stats()
    engines: dict[str, dict[str, object]] = {
        s.name: {"healthy": s.healthy, "inflight": s.inflight} for s in stats}
    if state.supervisor is not None:
        for h in state.supervisor.health():
            engines[h.name] |= {"state": h.state.value, "restarts": h.restarts}
    serving = sum(s.healthy for s in stats)
    status = state.lifecycle.state.value
    ok = state.lifecycle.ready and serving > 0
    if ok and serving < len(stats):
        status = "degraded"
    elif state.lifecycle.ready and not ok:
        status = "unavailable"
    body: dict[str, object] = {"status": status, "engines": engines}
    if state.startup is not None:
        body["warmup_seconds"] = {r.engine: round(r.seconds, 3) for r in state.startup.warmups}
        body["engine_start_seconds"] = round(state.startup.start_seconds, 3)
    return json_response(body, 200 if ok else 503, None if ok else {"Retry-After": "5"})


async def _metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.Response(body=generate_latest(state.metrics.registry),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})
