"""The ASGI application: ``create_app(settings, ...)`` builds the services and the routes.

A generation route is handled by ``guard.generation``: request (read, validate, policy) ->
upstream (open) -> ``GuardedGeneration`` (per event: ``Relay.on_event``: tracking -> hitting
probability -> decision -> client bytes) -> metrics + decision log, once per request.

Errors are mapped to OpenAI-shaped JSON once: before a stream starts as an HTTP status with
``{"error": {...}}`` (``error_response``); after it started as ``data: {"error": ...}`` then
``data: [DONE]`` (``guard.generation.run``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import anyio
import httpx
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from guard import __version__, jsonfast, wire
from guard.config import Settings
from guard.decision.policy import RiskModelLike
from guard.errors import (
    ClientError,
    GuardError,
    MethodNotAllowed,
    NotFound,
    ScorerError,
    UpstreamError,
)
from guard.generation.admission import AdmissionGate
from guard.generation.handler import error_response, generate
from guard.observability.decision_log import DecisionLog
from guard.observability.metrics import Metrics
from guard.relay import chunks
from guard.request.schema import ChatCompletionRequest, CompletionRequest
from guard.services import Services, build_services
from guard.upstream.client import create_clients

log = logging.getLogger("guard")

__all__ = ["create_app", "error_response"]


def create_app(
    settings: Settings,
    *,
    risk_model: RiskModelLike | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    metrics: Metrics | None = None,
    decision_log: DecisionLog | None = None,
    config_path: str | None = None,
    config_overrides: Mapping[tuple[str, ...], Any] | None = None,
    reload_poll_seconds: float = 2.0,
    span_exporter: Any = None,
) -> FastAPI:
    """Build the app. Every dependency is passed in or built here: no module-level state."""
    svc = build_services(
        settings, risk_model, transport, metrics, decision_log, config_path, config_overrides,
        span_exporter,
    )  # fmt: skip
    app = FastAPI(
        title="guard",
        version=__version__,
        lifespan=_lifespan(svc, transport, reload_poll_seconds),
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = svc
    _error_handlers(app)
    _generation_routes(app, svc)
    _service_routes(app, svc)
    _admin_routes(app, svc)
    _refuse_unguarded(app)
    # in front of the routes: the excess of a burst is refused before routing and parsing
    app.add_middleware(AdmissionGate, svc=svc)
    return app


def _lifespan(
    svc: Services, transport: httpx.AsyncBaseTransport | None, reload_poll_seconds: float
) -> Any:
    settings = svc.settings

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # A lifespan can run more than once on one app object (test clients, embedding
        # servers): start from a clean slate each time.
        svc.draining = False
        if svc.upstream.is_closed:
            await svc.upstream.aclose()
            svc.upstream.clients = create_clients(settings, transport)
        if svc.decision_log is not None and svc.decision_log.closed:
            svc.decision_log = svc.decision_log.reopened()
        await _check_encoder(svc)
        _sweep_dead_workers()
        async with anyio.create_task_group() as tg:
            if reload_poll_seconds > 0:
                tg.start_soon(_watch_files, svc, reload_poll_seconds)
            try:
                yield
            finally:
                svc.draining = True
                # uvicorn already waited for in-flight requests (timeout_graceful_shutdown);
                # give stragglers the rest of the budget, then close everything down.
                with anyio.move_on_after(settings.shutdown_timeout):
                    while svc.active > 0:  # noqa: ASYNC110 - polled only while shutting down
                        await anyio.sleep(0.05)
                tg.cancel_scope.cancel()
                await svc.upstream.aclose()
                _mark_worker_dead()
                if svc.decision_log is not None:
                    svc.decision_log.close()
                if svc.tracer is not None:
                    svc.tracer.shutdown()
                if svc.guard_model is not None:
                    await svc.guard_model.aclose()
                if svc.encoder is not None:
                    await svc.encoder.aclose()

    return lifespan


async def _check_encoder(svc: Services) -> None:
    """A model with a request probe must be served the encoder it was fitted with: a wrong one
    refuses the start (``RiskModelError``); an unreachable one is a warning (the lexical state
    decides until it answers, and every fallback is counted)."""
    model = svc.models.current.model
    probe = getattr(model, "probe", None)
    if probe is None:
        if svc.encoder is not None:
            log.warning(
                "encoder configured, but risk model %s has no request probe: unused",
                svc.models.current.version,
            )
        return
    if svc.encoder is None:
        log.warning(
            "risk model %s reads the request's intent from the sentence encoder %s, and no "
            "encoder is configured (GUARD_ENCODER_URL / encoder.url): the lexical state alone "
            "decides (weaker: docs/risk-model.md)",
            svc.models.current.version,
            probe.encoder.name,
        )
        return
    try:
        cos = await svc.encoder.check(model)
    except ScorerError as exc:
        log.warning("encoder not reachable at start (%s): lexical fallback until it is", exc)
        return
    log.info(
        "encoder %s matches the risk model's probe (fingerprint cosine %.5f)",
        probe.encoder.name,
        cos,
    )


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GuardError)
    async def _guard_error(request: Request, exc: GuardError) -> Response:
        return error_response(exc, request.headers.get("x-request-id"))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # Routing errors (404, 405) in the same OpenAI shape as everything else.
        err = ClientError(str(exc.detail))
        err.status_code = exc.status_code
        err.code = "not_found" if exc.status_code == 404 else "method_not_allowed"
        return error_response(err, request.headers.get("x-request-id"))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s", request.url.path)
        return error_response(
            GuardError("internal error in the guard"), request.headers.get("x-request-id")
        )


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI request body of a generation route (read by schemathesis and clients)."""
    content = {"application/json": {"schema": model.model_json_schema()}}
    return {"requestBody": {"required": True, "content": content}}


def _generation_routes(app: FastAPI, svc: Services) -> None:
    @app.post("/v1/chat/completions", openapi_extra=_body_schema(ChatCompletionRequest))
    async def chat_completions(request: Request) -> Response:
        return await generate(svc, request, wire.CHAT)

    @app.post("/v1/completions", openapi_extra=_body_schema(CompletionRequest))
    async def completions(request: Request) -> Response:
        return await generate(svc, request, wire.COMPLETIONS)


def _service_routes(app: FastAPI, svc: Services) -> None:
    @app.get("/v1/models")
    async def list_models(request: Request) -> Response:
        svc.auth.client(request.headers)
        resp = await svc.upstream.open(
            "GET",
            wire.MODELS_PATH,
            headers=svc.upstream.headers(request.headers, forward_auth=not svc.auth.enabled),
        )
        try:
            body = await resp.aread()
        finally:
            await resp.aclose()
        return Response(body, status_code=resp.status_code, media_type=resp.content_type)

    @app.get("/health")
    async def health() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.get("/ready")
    async def ready() -> Response:
        if svc.draining:
            return Response(b'{"status":"draining"}', 503, media_type="application/json")
        try:
            status, _ = await svc.upstream.json("GET", wire.HEALTH_PATH)
        except UpstreamError as exc:
            return Response(
                chunks.error_body(exc.message, exc.error_type, exc.code),
                503,
                media_type="application/json",
            )
        if status != 200:
            return Response(b'{"status":"upstream unhealthy"}', 503, media_type="application/json")
        return Response(b'{"status":"ready"}', media_type="application/json")

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        from guard.observability.exposition import render

        body, ctype = render(svc.metrics.registry)
        return Response(body, media_type=ctype)


def _admin_routes(app: FastAPI, svc: Services) -> None:
    @app.post("/admin/reload")
    async def admin_reload(request: Request) -> Response:
        svc.auth.admin(request.headers)
        loaded = await anyio.to_thread.run_sync(svc.models.reload)
        svc.models.touch()
        pol = loaded.book.default
        return Response(
            jsonfast.dumps(
                {
                    "status": "reloaded",
                    "version": loaded.version,
                    "depth": pol.depth,
                    "threshold": pol.threshold,
                }
            ),
            media_type="application/json",
        )

    @app.get("/admin/status")
    async def admin_status(request: Request) -> Response:
        svc.auth.admin(request.headers)
        cur = svc.models.current
        pol = cur.book.default
        return Response(
            jsonfast.dumps(
                {
                    "version": __version__,
                    "risk_model": {"version": cur.version, "path": cur.path},
                    "policy": {
                        "mode": pol.mode,
                        "depth": pol.depth,
                        "threshold": pol.threshold,
                        "action": pol.action,
                        "hold_back": pol.hold_back,
                    },
                    "active_streams": svc.active,
                    "last_reload_error": svc.models.last_error,
                }
            ),
            media_type="application/json",
        )


def _sweep_dead_workers() -> None:
    """Multiprocess metrics: drop the live gauges of workers that died without a goodbye
    (SIGKILL, OOM): the supervisor's replacement runs this at start, so a killed worker's
    ``guard_active_streams`` does not stay in the sum forever."""
    import os
    import re

    d = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not d or not os.path.isdir(d):
        return
    from prometheus_client import multiprocess

    for name in os.listdir(d):
        m = re.fullmatch(r"gauge_live\w*?_(\d+)\.db", name)
        if m is None:
            continue
        pid = int(m.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            with contextlib.suppress(Exception):
                multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
            log.info("metrics: removed the live gauges of dead worker %d", pid)
        except PermissionError:
            pass  # alive, another user's


def _mark_worker_dead() -> None:
    # Multiprocess metrics: drop this worker's live gauges (active streams, model info).
    import os

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        with contextlib.suppress(Exception):
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


async def _watch_files(svc: Services, every: float) -> None:
    while True:
        await anyio.sleep(every)
        with contextlib.suppress(Exception):
            await anyio.to_thread.run_sync(svc.models.poll)


#: the /v1 routes the guard serves with POST only
GUARDED_POST_ROUTES = frozenset(("chat/completions", "completions"))


def _refuse_unguarded(app: FastAPI) -> None:
    # Registered last: the routes above take precedence.
    @app.api_route(
        "/v1/{rest:path}",
        methods=["GET", "POST", "PUT", "DELETE", "PATCH"],
        include_in_schema=False,
    )
    async def unguarded(rest: str, request: Request) -> Response:
        # Generation routes the guard does not check (e.g. /v1/responses) are refused, never
        # passed through silently.
        if rest in GUARDED_POST_ROUTES:
            # a route the guard serves, with the wrong method (GET /v1/chat/completions)
            raise MethodNotAllowed(f"{request.method} /v1/{rest} is not allowed; use POST")
        raise NotFound(
            f"/v1/{rest} is not served by the guard (only chat/completions,"
            " completions and models are)"
        )
