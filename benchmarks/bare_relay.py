#!/usr/bin/env python
"""A bare byte relay on the guard's own stack: the ceiling for a Python proxy.

uvicorn + a raw Starlette app + ONE pooled ``httpx.AsyncClient`` (large pool). Every request is
forwarded to the upstream as is; the response body is relayed with ``aiter_raw()`` straight to the
client, no parsing at all. The upstream response is closed when the client goes away (shielded, so
vLLM aborts the generation and frees its KV cache). ``GET /health`` answers locally.

    .venv/bin/python benchmarks/bare_relay.py --upstream http://127.0.0.1:8001 --port 8090

Used by ``benchmarks/bench_proxy.py`` as the reference the guard's overhead is measured against.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator

import anyio
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "accept-encoding",
    }
)


def create_app(upstream: str, max_connections: int = 2048, shards: int = 1) -> Starlette:
    # shards > 1: several pools, round-robin (httpcore's pool bookkeeping is quadratic in its
    # connection count; the guard shards its upstream pool the same way).
    clients = [
        httpx.AsyncClient(
            base_url=upstream.rstrip("/"),
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=30.0,
            ),
            timeout=httpx.Timeout(connect=5.0, read=300.0, write=30.0, pool=30.0),
            headers={"accept-encoding": "identity"},
            trust_env=False,
        )
        for _ in range(shards)
    ]
    turn = [0]

    async def health(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def relay(request: Request) -> Response:
        body = await request.body()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        turn[0] = (turn[0] + 1) % shards
        client = clients[turn[0]]
        req = client.build_request(request.method, request.url.path, content=body, headers=headers)
        resp = await client.send(req, stream=True)

        async def pump() -> AsyncIterator[bytes]:
            try:
                async for raw in resp.aiter_raw():
                    yield raw
            finally:
                with anyio.CancelScope(shield=True):
                    await resp.aclose()

        out_headers = {
            k: v
            for k, v in resp.headers.items()
            if k.lower() not in HOP_BY_HOP
            and k.lower() not in ("content-encoding", "date", "server")
        }
        return StreamingResponse(pump(), status_code=resp.status_code, headers=out_headers)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            for client in clients:
                await client.aclose()

    return Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/{path:path}", relay, methods=["GET", "POST"]),
        ],
        lifespan=lifespan,
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8090)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--shards", type=int, default=1, help="upstream connection pools")
    args = ap.parse_args(argv)
    import uvicorn

    if args.workers > 1:
        import os

        os.environ["BARE_RELAY_UPSTREAM"] = args.upstream
        os.environ["BARE_RELAY_SHARDS"] = str(args.shards)
        uvicorn.run(
            "bare_relay:_factory",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level="warning",
            access_log=False,
            server_header=False,
        )
        return
    uvicorn.run(
        create_app(args.upstream, shards=args.shards),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        server_header=False,
    )


def _factory() -> Starlette:
    import os

    return create_app(
        os.environ["BARE_RELAY_UPSTREAM"], shards=int(os.environ.get("BARE_RELAY_SHARDS", "1"))
    )


if __name__ == "__main__":
    main()
