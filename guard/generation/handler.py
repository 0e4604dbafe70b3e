"""The HTTP exchange of a generation route: read and check the request, open the upstream, then
hand the response to a :class:`~guard.generation.run.GuardedGeneration` (streaming), or let it
run to the end and answer with one assembled completion (non-streaming).

Errors before the stream started are answered here, once, as OpenAI-shaped JSON with their
status (``error_response``).
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from dataclasses import replace
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response

from guard import jsonfast, wire
from guard.decision.policy import check_limits
from guard.errors import (
    BodyTooLarge,
    ClientError,
    GuardError,
    Overloaded,
    UpstreamError,
    UpstreamTimeout,
)
from guard.generation.run import TIMEOUT_EVENT, GuardedGeneration
from guard.relay import chunks
from guard.relay.assemble import assemble
from guard.relay.reroute import upstream_body
from guard.request.parse import decode_json, parse_generation, request_id
from guard.services import Services
from guard.streaming import GuardedStreamResponse
from guard.upstream.client import UpstreamResponse

_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


#: seconds a client told "overloaded" should wait before it retries
OVERLOAD_RETRY_AFTER_S = 1


def error_response(exc: GuardError, request_id: str | None = None) -> Response:
    body = chunks.error_body(exc.message, exc.error_type, exc.code, exc.param)
    headers = {"x-request-id": request_id} if request_id else {}
    if isinstance(exc, Overloaded):
        headers["retry-after"] = str(OVERLOAD_RETRY_AFTER_S)
    return Response(
        body, status_code=exc.status_code, media_type="application/json", headers=headers or None
    )


async def generate(svc: Services, request: Request, route: str) -> Response:
    t0 = time.perf_counter_ns()
    rid = _request_id(request)
    try:
        # admitted already: guard.generation.admission took this request's slot (max_streams)
        key_name = svc.auth.client(request.headers)
        raw = await _read_body(request, svc.settings.max_body_bytes)
        body = decode_json(raw, request.headers.get("content-type"))
        req = parse_generation(route, body)
        loaded = svc.models.current
        policy = loaded.book.resolve(req.model, key_name, route)
        check_limits(req, policy)
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
        # the request's intent is read while vLLM runs the prefill (it is awaited by the
        # generation, before its first token leaves)
        verdict = _request_verdict(svc, loaded.model, req.prompt)
        try:
            resp = await svc.upstream.open(
                "POST", wire.PATHS[route], content=content, headers=headers
            )
        except BaseException:
            if verdict is not None:
                verdict.cancel()
            raise
        svc.metrics.upstream_latency_seconds.observe(resp.latency_s)
    except GuardError as exc:
        if isinstance(exc, UpstreamError):
            svc.metrics.upstream_errors.labels(
                "timeout" if isinstance(exc, UpstreamTimeout) else "unreachable"
            ).inc()
        svc.metrics.requests.labels(route, _outcome_of(exc)).inc()
        return error_response(exc, rid)

    echo = {"x-request-id": rid}
    tp = request.headers.get("traceparent")
    if tp:
        echo["traceparent"] = tp
    if resp.status_code != 200:
        # The upstream refused the request: its status and body, as they are.
        if verdict is not None:
            verdict.cancel()
        try:
            err_body = await resp.aread()
        except UpstreamError:
            err_body = chunks.error_body("upstream failed", "upstream_error", None)
        finally:
            await resp.aclose()
        kind = "status_4xx" if resp.status_code < 500 else "status_5xx"
        svc.metrics.upstream_errors.labels(kind).inc()
        svc.metrics.requests.labels(route, "upstream_error").inc()
        return Response(
            err_body, status_code=resp.status_code, headers=echo, media_type=resp.content_type
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
    gen = GuardedGeneration(
        svc,
        req,
        policy,
        loaded.model,
        rid=rid,
        headers=headers,
        pre_ns=t_send - t0,
        span=span,
        request_verdict=verdict,
    )
    if req.stream:
        return GuardedStreamResponse(
            functools.partial(gen.run, resp),
            media_type="text/event-stream; charset=utf-8",
            headers={**_SSE_HEADERS, **echo},
            deadline_s=svc.settings.total_timeout,
            on_deadline=gen.on_deadline,
            deadline_body=TIMEOUT_EVENT,
        )
    return await _complete(svc, gen, resp, echo)


async def _complete(
    svc: Services, gen: GuardedGeneration, resp: UpstreamResponse, echo: dict[str, str]
) -> Response:
    """Non-streaming: run the guarded generation to its end, then answer with one completion
    assembled from the relay's own chunk objects."""

    async def discard(_chunk: bytes, flush: bool = False) -> None:
        """Collecting: the relay keeps the chunks; only errors come out as bytes."""

    gen.cancel_at = anyio.current_time() + svc.settings.total_timeout
    with anyio.move_on_after(svc.settings.total_timeout) as scope:
        # Whatever ends it (timeout, cancellation), the generation closes its upstream response
        # (vLLM aborts) and accounts the request itself, never at GC time.
        await gen.run(resp, discard)
    if scope.cancelled_caught:
        return error_response(UpstreamTimeout("upstream exceeded the total timeout"), gen.rid)
    relay = gen.relay
    err = relay.error if relay.error is not None else gen.failure
    if err is not None:
        code = err.get("status") or err.get("code")
        status = int(code) if isinstance(code, int) and 400 <= code <= 599 else 502
        return Response(
            jsonfast.dumps({"error": err}),
            status_code=status,
            headers=echo,
            media_type="application/json",
        )
    completion, guards = assemble(relay.collected or [], gen.req.route == wire.CHAT)
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
    return request_id(request.headers.get("x-request-id")) or uuid.uuid4().hex


def _request_verdict(svc: Services, model: Any, prompt: Any) -> asyncio.Future[float | None] | None:
    """The encoder's future verdict on the request (None: the model reads no encoder, or the
    policy does not track; a model with a probe and no encoder configured is counted)."""
    if getattr(model, "probe", None) is None:
        return None
    if svc.encoder is None:
        svc.metrics.scorer_calls.labels("encoder", "unconfigured").inc()
        return None
    return svc.encoder.submit(model, prompt)
