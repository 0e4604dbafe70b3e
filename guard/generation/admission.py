"""Admission: at most ``max_streams`` generations in flight per worker, decided at the ASGI edge.

A generation request takes its slot here, before routing, body reading or parsing, and gives it
back when the application call returns: for a stream that is when its last byte was sent (the
streaming response runs inside the call), whatever ended it. The excess of a burst is answered
``503 overloaded_error`` with ``Retry-After`` from this gate. Two things keep that answer quick
under a burst (docs/reliability.md, measured): the refusal skips the routing, and an admitted
request yields to the event loop after taking its slot, so every request of a burst
that arrived together is admitted or refused before the admitted ones do their own work (parsing,
opening the upstream), instead of the refusals queueing behind that work: an admitted request
yields again as long as new requests reached the gate meanwhile (at most ``MAX_YIELDS`` times).

The check is before authentication: a full guard costs nothing to find out, and refusing early is
the point. Authentication, limits and everything else stay in the handler.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Receive, Scope, Send

from guard import wire
from guard.errors import Overloaded
from guard.generation.handler import error_response
from guard.request.parse import request_id
from guard.services import Services

#: most event-loop passes an admitted request waits for the rest of a burst to be admitted or
#: refused before it does its own work
MAX_YIELDS = 32

#: generation path -> route name (the ``endpoint`` label of guard_requests_total)
_ROUTES = {path: route for route, path in wire.PATHS.items()}


class AdmissionGate:
    """Pure ASGI middleware in front of the app (see the module docstring)."""

    def __init__(self, app: ASGIApp, svc: Services) -> None:
        self.app = app
        self.svc = svc
        self.arrivals = 0  # generation requests seen (tells an admitted one a burst is arriving)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = _ROUTES.get(scope["path"]) if scope["type"] == "http" else None
        if route is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        svc = self.svc
        self.arrivals += 1
        if svc.draining or svc.admitted >= svc.settings.max_streams:
            exc = Overloaded(
                "the guard is shutting down"
                if svc.draining
                else "too many concurrent generations; retry later"
            )
            svc.metrics.requests.labels(route, "overloaded").inc()
            await error_response(exc, _request_id(scope))(scope, receive, send)
            return
        svc.admitted += 1
        try:
            # The rest of a burst reaches this gate first: yield while requests keep arriving
            # (bounded; each yield is one pass of the event loop, microseconds when idle).
            for _ in range(MAX_YIELDS):
                seen = self.arrivals
                await asyncio.sleep(0)
                if self.arrivals == seen:
                    break
            await self.app(scope, receive, send)
        finally:
            svc.admitted -= 1


def _request_id(scope: Scope) -> str | None:
    for k, v in scope["headers"]:
        if k == b"x-request-id":
            return request_id(v.decode("latin-1"))
    return None
