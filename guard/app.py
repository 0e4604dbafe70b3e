"""The ASGI application: ``create_app(settings, ...)`` composes the pure core with I/O.

Request flow of a generation::

    read + validate body (guard.request) -> resolve policy -> open upstream stream
    (guard.upstream) -> per event: Relay.on_event (tracking -> hitting probability -> decision ->
    client bytes) -> metrics + decision log

Errors are mapped to OpenAI-shaped JSON once, here: before a stream starts as an HTTP status with
``{"error": {...}}``; after it started as ``data: {"error": ...}`` then ``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import anyio
import httpx
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from guard import __version__, jsonfast
from guard.config import Settings
from guard.decision.policy import RiskModelLike
from guard.errors import (
    BodyTooLarge,
    ClientError,
    GuardError,
    NotFound,
    Overloaded,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from guard.models import ModelHolder
from guard.observability.decision_log import DecisionLog, redact
from guard.observability.metrics import Metrics, create_metrics
from guard.observability.tracing import Tracer, create_tracer
from guard.relay import chunks
from guard.relay.assemble import assemble
from guard.relay.relay import (
    DONE,
    GUARD_ENDED,
    REROUTE,
    RUNNING,
    SEGMENT_END,
    UPSTREAM_ERROR,
    Relay,
)
from guard.relay.reroute import continuation_body, upstream_body
from guard.request.auth import Auth
from guard.request.parse import (
    CHAT,
    COMPLETIONS,
    GenerationRequest,
    check_limits,
    decode_json,
    parse_generation,
)
from guard.request.schema import ChatCompletionRequest, CompletionRequest
from guard.streaming import GuardedStreamResponse
from guard.upstream.client import Upstream, create_clients
from guard.upstream.sse import SSEDecoder

log = logging.getLogger("guard")

_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
_PATHS = {CHAT: "/v1/chat/completions", COMPLETIONS: "/v1/completions"}
_TIMEOUT_EVENT = (
    chunks.error_event(
        "upstream stream exceeded the total timeout", "upstream_error", "upstream_timeout", 504
    )
    + chunks.DONE
)


@dataclass(slots=True)
class Services:
    settings: Settings
    upstream: Upstream
    metrics: Metrics
    models: ModelHolder
    auth: Auth
    decision_log: DecisionLog | None
    tracer: Tracer | None = None
    guard_model: Any = None  # (MicroBatcher, VerdictPolicy, client) when a guard model is set
    active: int = 0
    draining: bool = False


def error_response(exc: GuardError, request_id: str | None = None) -> Response:
    body = chunks.error_body(exc.message, exc.error_type, exc.code, exc.param)
    headers = {"x-request-id": request_id} if request_id else None
    return Response(
        body, status_code=exc.status_code, media_type="application/json", headers=headers
    )


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
    metrics = metrics if metrics is not None else create_metrics()
    models = ModelHolder(settings, metrics, risk_model, config_path, config_overrides)
    if decision_log is None and settings.decision_log.path:
        dl = settings.decision_log
        decision_log = DecisionLog(
            dl.path,  # type: ignore[arg-type]
            max_bytes=dl.max_bytes,
            backups=dl.backups,
            retention_days=dl.retention_days,
            queue_size=dl.queue_size,
            on_drop=metrics.decision_log_dropped.inc,
        )
    clients = create_clients(settings, transport)
    key = settings.upstream_api_key.get_secret_value() if settings.upstream_api_key else None
    tracer = None
    if settings.tracing.enabled:
        tracer = create_tracer(
            settings.tracing.endpoint, settings.tracing.service_name, span_exporter
        )
    guard_model = None
    if settings.guard_model is not None:
        from guard.scoring.wiring import build_guard_model

        guard_model = build_guard_model(settings.guard_model, metrics)
    svc = Services(
        settings,
        Upstream(clients, settings.upstream, key),
        metrics,
        models,
        Auth(settings),
        decision_log,
        tracer,
        guard_model,
    )

    def _swap_keys(fresh: Settings) -> None:
        # Keys (client and admin) rotate with a reload, like policies: no restart.
        svc.auth = Auth(fresh, previous=svc.auth)

    models.on_reload.append(_swap_keys)

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
                    await svc.guard_model[0].aclose()
                    await svc.guard_model[2].aclose()

    app = FastAPI(
        title="guard", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.services = svc

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

    @app.post(
        "/v1/chat/completions",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": ChatCompletionRequest.model_json_schema()}
                },
            }
        },
    )
    async def chat_completions(request: Request) -> Response:
        return await _generate(svc, request, CHAT)

    @app.post(
        "/v1/completions",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": CompletionRequest.model_json_schema()}},
            }
        },
    )
    async def completions(request: Request) -> Response:
        return await _generate(svc, request, COMPLETIONS)

    @app.get("/v1/models")
    async def list_models(request: Request) -> Response:
        svc.auth.client(request.headers)
        resp, _ = await svc.upstream.open(
            "GET",
            "/v1/models",
            headers=svc.upstream.headers(request.headers, forward_auth=not svc.auth.enabled),
        )
        try:
            body = await resp.aread()
        except httpx.HTTPError:
            raise UpstreamProtocolError("upstream failed while sending the model list") from None
        finally:
            await resp.aclose()
        return Response(
            body,
            status_code=resp.status_code,
            media_type=resp.headers.get("content-type", "application/json"),
        )

    @app.get("/health")
    async def health() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.get("/ready")
    async def ready() -> Response:
        if svc.draining:
            return Response(b'{"status":"draining"}', 503, media_type="application/json")
        try:
            status, _ = await svc.upstream.json("GET", "/health")
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

    @app.api_route(
        "/v1/{rest:path}",
        methods=["GET", "POST", "PUT", "DELETE", "PATCH"],
        include_in_schema=False,
    )
    async def unguarded(rest: str) -> Response:
        # Generation routes the guard does not check (e.g. /v1/responses) are refused, never
        # passed through silently.
        raise NotFound(
            f"/v1/{rest} is not served by the guard (only chat/completions,"
            " completions and models are)"
        )

    return app


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


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise BodyTooLarge(f"request body is larger than {limit} bytes")
    parts = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise BodyTooLarge(f"request body is larger than {limit} bytes")
        parts.append(part)
    return b"".join(parts)


def _request_id(request: Request) -> str:
    rid = request.headers.get("x-request-id")
    if rid and len(rid) <= 200 and rid.isprintable():
        return rid
    return uuid.uuid4().hex


async def _generate(svc: Services, request: Request, route: str) -> Response:
    t0 = time.perf_counter_ns()
    rid = _request_id(request)
    endpoint = route
    try:
        if svc.draining:
            raise Overloaded("the guard is shutting down")
        key_name = svc.auth.client(request.headers)
        raw = await _read_body(request, svc.settings.max_body_bytes)
        body = decode_json(raw, request.headers.get("content-type"))
        req = parse_generation(route, body)
        loaded = svc.models.current
        policy = loaded.book.resolve(req.model, key_name, route)
        check_limits(req, policy)
        if svc.active >= svc.settings.max_streams:
            raise Overloaded("too many concurrent generations; retry later")
        # Streaming clients get their own bytes forwarded; non-streaming ones are streamed
        # internally so a harmful generation can be stopped early.
        if req.stream:
            content = raw
        else:
            req = replace(req, include_usage=True)
            content = jsonfast.dumps(upstream_body(req))
        headers = svc.upstream.headers(request.headers, forward_auth=not svc.auth.enabled)
        headers["x-request-id"] = rid
        t_send = time.perf_counter_ns()
        resp, latency = await svc.upstream.open(
            "POST", _PATHS[route], content=content, headers=headers
        )
        svc.metrics.upstream_latency_seconds.observe(latency)
    except GuardError as exc:
        if isinstance(exc, UpstreamError):
            svc.metrics.upstream_errors.labels(
                "timeout" if isinstance(exc, UpstreamTimeout) else "unreachable"
            ).inc()
        svc.metrics.requests.labels(endpoint, _outcome_of(exc)).inc()
        return error_response(exc, rid)

    echo = {"x-request-id": rid}
    tp = request.headers.get("traceparent")
    if tp:
        echo["traceparent"] = tp
    if resp.status_code != 200:
        try:
            err_body = await resp.aread()
        except httpx.HTTPError:
            err_body = chunks.error_body("upstream failed", "upstream_error", None)
        finally:
            await resp.aclose()
        kind = "status_4xx" if resp.status_code < 500 else "status_5xx"
        svc.metrics.upstream_errors.labels(kind).inc()
        svc.metrics.requests.labels(endpoint, "upstream_error").inc()
        return Response(
            err_body,
            status_code=resp.status_code,
            headers=echo,
            media_type=resp.headers.get("content-type", "application/json"),
        )

    logging_content = svc.decision_log is not None and svc.settings.decision_log.include_content
    gm = svc.guard_model
    relay = Relay(
        req,
        policy,
        loaded.model,
        trace=svc.decision_log is not None,
        keep_text=logging_content,
        verdicts=gm[1] if gm is not None else None,
        verdict_hold=svc.settings.guard_model.hold_until_verdict
        if svc.settings.guard_model is not None
        else 0,
    )
    span = None
    if svc.tracer is not None:
        span = svc.tracer.start(
            "guard.generate",
            dict(request.headers),
            {
                "guard.request_id": rid,
                "guard.route": route,
                "guard.model": req.model or "",
                "guard.policy": policy.name,
                "guard.mode": policy.mode,
            },
        )
    pump = _pump(svc, relay, resp, req, request, rid, t_send - t0, span)
    if req.stream:

        def deadline_hit() -> None:
            relay.deadline_hit = True

        return GuardedStreamResponse(
            pump,
            media_type="text/event-stream; charset=utf-8",
            headers={**_SSE_HEADERS, **echo},
            deadline_s=svc.settings.total_timeout,
            on_deadline=deadline_hit,
            deadline_body=_TIMEOUT_EVENT,
        )
    # Non-streaming: fold the guarded stream into one completion object.
    parts: list[bytes] = []
    with anyio.move_on_after(svc.settings.total_timeout) as scope:
        async for part in pump:
            parts.append(part)
    if scope.cancelled_caught:
        relay.deadline_hit = True
        with anyio.CancelScope(shield=True):
            await pump.aclose()
        return error_response(UpstreamTimeout("upstream exceeded the total timeout"), rid)
    data = b"".join(parts)
    events = SSEDecoder().feed(data)
    objs = []
    for ev in events:
        if ev.data is None or ev.is_done:
            continue
        obj = jsonfast.loads(ev.data)
        if "error" in obj and not obj.get("choices"):
            err = obj["error"]
            status = (
                int(err.get("status") or err.get("code") or 502)
                if isinstance(err.get("status") or err.get("code"), int)
                else 502
            )
            return Response(
                jsonfast.dumps({"error": err}),
                status_code=status,
                headers=echo,
                media_type="application/json",
            )
        objs.append(obj)
    completion, guards = assemble(objs, req.route == CHAT)
    hdrs = dict(echo)
    hdrs["x-guard-decision"] = jsonfast.dumps(
        {"outcome": relay.outcome(), "choices": guards}
    ).decode()
    return Response(jsonfast.dumps(completion), media_type="application/json", headers=hdrs)


def _outcome_of(exc: GuardError) -> str:
    if isinstance(exc, UpstreamError):
        return "upstream_error"
    if isinstance(exc, ClientError):
        return "client_error"
    if isinstance(exc, Overloaded):
        return "overloaded"
    return "error"


async def _close(resp: httpx.Response) -> None:
    # Closing the upstream response is what makes vLLM abort the request and free its KV
    # cache, so it must happen even when we are being cancelled (client went away).
    with anyio.CancelScope(shield=True):
        await resp.aclose()


async def _pump(
    svc: Services,
    relay: Relay,
    resp: httpx.Response,
    req: GenerationRequest,
    request: Request,
    rid: str,
    pre_ns: int,
    span: Any = None,
) -> AsyncGenerator[bytes, None]:
    m = svc.metrics
    svc.active += 1
    m.active_streams.inc()
    outcome = "ok"
    completed = False
    deadline = time.monotonic() + svc.settings.total_timeout
    current: httpx.Response | None = resp
    try:
        while current is not None:
            decoder = SSEDecoder()
            try:
                # Hot loop. Stalls are bounded by httpx's idle read timeout and the total
                # deadline by a check per read (a cancel scope per read costs ~40% of the
                # per-token CPU; a per-stream timer in GuardedStreamResponse covers a stall
                # that outlives the deadline). All events of one network read leave in one send.
                reads = current.aiter_raw().__aiter__()
                stopped = False
                n_reads = 0
                while True:
                    try:
                        raw = await reads.__anext__()
                    except StopAsyncIteration:
                        break
                    n_reads += 1
                    if not n_reads & 15:
                        # A read from a full socket buffer does not suspend: let other streams
                        # (and the guard-model batcher) run now and then.
                        await asyncio.sleep(0)
                    if time.monotonic() > deadline:
                        raise TimeoutError
                    parts = []
                    for ev in decoder.feed(raw):
                        out = relay.on_event(ev)
                        if out:
                            parts.append(out)
                        st = relay.status
                        if st != RUNNING and st != UPSTREAM_ERROR:
                            stopped = True
                            break
                    if relay.verdict_asks:
                        _ask_guard_model(svc, relay)
                        await asyncio.sleep(0)  # let the batcher take the asks
                    if parts:
                        yield parts[0] if len(parts) == 1 else b"".join(parts)
                    if stopped:
                        break
                if stopped and relay.status == DONE:
                    # Read the (already sent) end of the response so the connection goes back
                    # to the pool instead of a new TCP connect per stream; briefly, because the
                    # client already has everything.
                    with anyio.move_on_after(0.05):
                        async for _ in reads:
                            pass
                elif not stopped:
                    tail = decoder.close()
                    if tail is not None and tail.data is not None:
                        out = relay.on_event(tail)
                        if out:
                            yield out
                    if relay.status in (RUNNING, UPSTREAM_ERROR):
                        kind = "error_event" if relay.status == UPSTREAM_ERROR else "early_close"
                        m.upstream_errors.labels(kind).inc()
                        if relay.status == RUNNING:
                            outcome = "upstream_error"
                            yield chunks.error_event(
                                "upstream closed the stream before it was complete",
                                "upstream_error",
                                "upstream_early_close",
                                502,
                            )
                        yield chunks.DONE
                        completed = True
                        return
            finally:
                await _close(current)
            current = None
            if relay.status == REROUTE:
                current = await _reroute(svc, relay, req, request, rid)
                if current is None:
                    out = relay.halt_now("reroute_failed")
                    if out:
                        yield out
            elif relay.status == SEGMENT_END:
                current = await _continue(svc, relay, req, request, rid)
                if current is None:
                    meta = relay.meta
                    assert meta is not None
                    yield chunks.finish_chunk(
                        meta, 0, "length", relay.guard_details(relay._choice(0), "resample")
                    )
                    relay.status = GUARD_ENDED
        if relay.status == GUARD_ENDED:
            if relay.needs_prompt_count():
                relay.prompt_tokens = await _count_prompt(svc, req)
            yield relay.finish()
        completed = True
    except (TimeoutError, httpx.TransportError, UpstreamError) as exc:
        outcome, kind, message, code, status = _mid_stream_failure(exc)
        m.upstream_errors.labels(kind).inc()
        yield chunks.error_event(message, "upstream_error", code, status) + chunks.DONE
        completed = True
    except Exception:
        # A bug of ours must still end the stream the way clients expect, not cut the
        # connection: log it (with the request id), then an SSE error event and [DONE].
        log.exception("internal error while relaying request %s", rid)
        outcome = "error"
        yield chunks.error_event("internal error in the guard", "internal_error", None, 500)
        yield chunks.DONE
        completed = True
    finally:
        svc.active -= 1
        m.active_streams.dec()
        for fut in relay.verdict_futures:
            fut.cancel()  # a verdict nobody will read is never sent
        if not completed:
            if relay.deadline_hit:
                outcome = "upstream_timeout"
                m.upstream_errors.labels("timeout").inc()
            else:
                outcome = "client_disconnect"
                m.client_disconnects.inc()
        _account(svc, relay, req, outcome, rid, pre_ns)
        if span is not None:
            _end_span(span, relay, outcome)


def _mid_stream_failure(exc: BaseException) -> tuple[str, str, str, str, int]:
    """(outcome, metric kind, message, code, status) of a failure after the stream started."""
    if isinstance(exc, TimeoutError):
        return (
            "upstream_timeout",
            "timeout",
            "upstream stream exceeded the total timeout",
            "upstream_timeout",
            504,
        )
    if isinstance(exc, httpx.TimeoutException):
        return (
            "upstream_timeout",
            "timeout",
            "upstream stalled mid-stream",
            "upstream_timeout",
            504,
        )
    if isinstance(exc, UpstreamProtocolError):
        return ("upstream_error", "protocol", exc.message, "upstream_error", 502)
    message = exc.message if isinstance(exc, GuardError) else "upstream connection failed"
    return ("upstream_error", "unreachable", message, "upstream_error", 502)


def _ask_guard_model(svc: Services, relay: Relay) -> None:
    """Hand the relay's verdict requests to the micro-batcher; never waits for them."""
    batcher = svc.guard_model[0]
    asks, relay.verdict_asks = relay.verdict_asks, []
    for index, text in asks:
        fut = batcher.submit(text)
        fut.add_done_callback(functools.partial(_verdict_done, relay, index))
        relay.verdict_futures.append(fut)


def _verdict_done(relay: Relay, index: int, fut: asyncio.Future[float | None]) -> None:
    if not fut.cancelled():
        relay.on_verdict(index, fut.result())


async def _reroute(
    svc: Services, relay: Relay, req: GenerationRequest, request: Request, rid: str
) -> httpx.Response | None:
    pol = relay.policy
    prefix, tokens = relay.prefix()
    base_url = None
    if pol.action == "resample":
        text, ids = relay.crossing()
        banned = ids[:1]
        if not banned and text:
            banned = await _tokenize(svc, req, text)
        body = continuation_body(
            req,
            prefix,
            tokens,
            logit_bias={str(i): -100.0 for i in banned} or None,
            max_tokens=pol.resample_ban_tokens,
        )
        relay.begin_attempt("resample", segment_limited=True, detail={"banned_token_ids": banned})
        svc.metrics.reroutes.labels("resample", "attempt").inc()
    else:
        alt = pol.alternate
        assert alt is not None
        base_url = alt.upstream
        body = continuation_body(
            req, prefix, tokens, model=alt.model, system_prompt=alt.system_prompt
        )
        relay.begin_attempt(
            "alternate",
            detail={"upstream": "alternate" if alt.upstream else "main", "model": alt.model},
        )
        svc.metrics.reroutes.labels("alternate", "attempt").inc()
    if body is None:
        return None
    return await _open_attempt(svc, body, request, rid, base_url)


async def _continue(
    svc: Services, relay: Relay, req: GenerationRequest, request: Request, rid: str
) -> httpx.Response | None:
    prefix, tokens = relay.prefix()
    if req.max_tokens is not None and tokens >= req.max_tokens:
        return None
    body = continuation_body(req, prefix, tokens)
    if body is None:
        return None
    relay.begin_attempt("continue")
    return await _open_attempt(svc, body, request, rid, None)


async def _open_attempt(
    svc: Services, body: dict[str, Any], request: Request, rid: str, base_url: str | None
) -> httpx.Response | None:
    headers = svc.upstream.headers(request.headers, forward_auth=not svc.auth.enabled)
    headers["x-request-id"] = rid
    try:
        resp, _ = await svc.upstream.open(
            "POST",
            _PATHS[CHAT if "messages" in body else COMPLETIONS],
            content=jsonfast.dumps(body),
            headers=headers,
            base_url=base_url,
        )
    except UpstreamError:
        svc.metrics.reroutes.labels("reroute", "failed").inc()
        return None
    if resp.status_code != 200:
        await _close(resp)
        svc.metrics.reroutes.labels("reroute", "failed").inc()
        return None
    return resp


async def _tokenize(svc: Services, req: GenerationRequest, text: str) -> list[int]:
    """Token ids of ``text`` from vLLM's /tokenize (rare path: resample without token_ids)."""
    body: dict[str, Any] = {"prompt": text, "add_special_tokens": False}
    if req.model:
        body["model"] = req.model
    try:
        status, obj = await svc.upstream.json("POST", "/tokenize", body)
    except UpstreamError:
        return []
    if status != 200 or not isinstance(obj, dict):
        return []
    toks = obj.get("tokens")
    return [int(t) for t in toks[:1]] if isinstance(toks, list) else []


async def _count_prompt(svc: Services, req: GenerationRequest) -> int | None:
    """Prompt tokens for an honest usage chunk after an abort (vLLM sends none then)."""
    body: dict[str, Any] = {"model": req.model} if req.model else {}
    if req.route == CHAT:
        body["messages"] = req.body["messages"]
        if req.continues_final:
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
    else:
        body["prompt"] = req.prompt if isinstance(req.prompt, str) else ""
    try:
        status, obj = await svc.upstream.json("POST", "/tokenize", body)
    except UpstreamError:
        return None
    if status == 200 and isinstance(obj, dict) and isinstance(obj.get("count"), int):
        return int(obj["count"])
    return None


def _account(
    svc: Services, relay: Relay, req: GenerationRequest, outcome: str, rid: str, pre_ns: int
) -> None:
    """Metrics and the decision log, once per request (never per token)."""
    m = svc.metrics
    result = relay.outcome() if outcome == "ok" else outcome
    m.requests.labels(req.route, result).inc()
    relayed = 0
    checked = 0
    check_ns = 0
    for cs in relay.choices:
        if cs is None:
            continue
        relayed += cs.released_tokens
        g = cs.guard
        if g is not None:
            if g.failed:
                m.risk_model_failures.labels(relay.policy.fail_mode).inc()
            checked += g.checks
            check_ns += g.check_ns
            m.decision_risk.observe(g.last_risk)
        if cs.halted:
            m.halts.labels(
                relay.policy.action if relay.reroutes else "halt", cs.reason or "risk"
            ).inc()
            if g is not None:
                m.halt_depth.observe(g.tokens)
    if relayed:
        m.tokens_relayed.inc(relayed)
    if checked:
        m.tokens_checked.inc(checked)
        m.check_seconds.observe(check_ns / checked / 1e9)
    if relay.shadow_halts:
        m.shadow_decisions.labels("risk").inc(relay.shadow_halts)
    for r in relay.reroutes:
        m.reroutes.labels(str(r.get("action")), "done").inc()
    if relay.first_content_ns and relay.first_arrival_ns:
        # What the guard added before the first content delta left: its own work before the
        # upstream call, plus the delay between the first content arriving from upstream and
        # the first content released to the client (checks, and the hold-back window).
        hold = max(0, relay.first_content_ns - relay.first_arrival_ns)
        m.added_ttft_seconds.observe((pre_ns + hold) / 1e9)
    if svc.decision_log is not None:
        for record in _record(svc, relay, req, result, rid):
            svc.decision_log.submit(record)


def _end_span(span: Any, relay: Relay, outcome: str) -> None:
    span.set_attribute("guard.outcome", relay.outcome() if outcome == "ok" else outcome)
    cs = relay.choices[0] if relay.choices else None
    if cs is not None and cs.guard is not None:
        g = cs.guard
        span.set_attribute("guard.tokens", g.tokens)
        span.set_attribute("guard.max_hitting_probability", g.max_risk)
        if g.crossed_at >= 0:
            span.set_attribute("guard.halt_token", g.crossed_at)
    span.set_attribute("guard.halted", relay.halted_any)
    span.end()


def _record(
    svc: Services, relay: Relay, req: GenerationRequest, outcome: str, rid: str
) -> list[dict[str, Any]]:
    """Decision-log records: one per choice, in the trajectory format (DESIGN.md section 6).

    ``label`` is left null: a person or a labelling job fills it before ``guard fit``. A choice
    the guard halted is marked ``meta.censored`` (its natural ending is unknown).
    """
    cfg = svc.settings.decision_log
    content = cfg.include_content

    def text(value: str) -> str:
        return redact(value) if cfg.redact_pii else value

    prompt: Any = None
    if content:
        if isinstance(req.prompt, str):
            prompt = text(req.prompt)
        else:
            prompt = [
                {
                    "role": mm.get("role"),
                    "content": text(str(mm["content"]))
                    if isinstance(mm.get("content"), str)
                    else mm.get("content"),
                }
                for mm in req.prompt
                if isinstance(mm, dict)
            ]
    records = []
    many = sum(1 for cs in relay.choices if cs is not None) > 1
    for cs in relay.choices:
        if cs is None:
            continue
        g = cs.guard
        decision: dict[str, Any] = {
            "index": cs.index,
            "action": "halt"
            if cs.halted
            else ("shadow_halt" if g and g.crossed_at >= 0 and not relay.enforce else "pass"),
            "reason": cs.reason,
            "generated_tokens": cs.generated,
            "released_tokens": cs.released_tokens,
        }
        if g is not None:
            decision.update(g.details())
            if g.crossed_at >= 0:
                decision["halt_token"] = g.crossed_at
            decision["trace"] = g.trace
            decision["check_us"] = round(g.check_ns / max(1, g.checks) / 1000, 3)
            decision["risk_model_failed"] = g.failed
        response = tokens = None
        if content and cs.released is not None:
            tokens = [text(t) for t in cs.released]
            response = text(req.prefill) + "".join(tokens)
        records.append(
            {
                "id": f"{rid}-{cs.index}" if many else rid,
                "source": "guard",
                "prompt": prompt,
                "prefill": text(req.prefill) if content else None,
                "response": response,
                "tokens": tokens,
                "label": None,
                "harm_start_char": None,
                "meta": {
                    "ts": time.time(),
                    "request_id": rid,
                    "route": req.route,
                    "model": req.model,
                    "policy": relay.policy.name,
                    "mode": relay.policy.mode,
                    "outcome": outcome,
                    "censored": cs.halted,
                    "risk_model": svc.models.current.version,
                    "reroutes": relay.reroutes,
                    "decision": decision,
                },
            }
        )
    return records
