"""The pooled HTTP clients to the upstream vLLM server(s).

Requests are spread over a few ``httpx.AsyncClient`` pools ("shards") rather than one big one:
httpcore re-scans every connection of a pool (and, for idle ones, polls the socket) on each
request and each response close, and one of those scans is quadratic in the pool's size. With
one pool of 64 busy connections that bookkeeping was ~6 ms of CPU per request, more than relaying
the 128 tokens; a few connections per pool make it negligible. A request goes to the first pool
with fewer than ``PER_POOL`` (4) requests in flight (per request, never per chunk): at low
concurrency everything reuses one pool's warm connections (no new TCP connect per request, as
round-robin over 32 pools caused), and pools fill up one after the other as concurrency grows.
Each pool may grow to the configured maximum of concurrent streams (the guard's own admission
control bounds the total).
Transport errors are mapped to the guard's error hierarchy here, once.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import anyio
import httpx

from guard.config import Settings
from guard.errors import UpstreamTimeout, UpstreamUnreachable

# Hop-by-hop headers (RFC 9110 7.6.1) and those the client library sets itself.
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
        "authorization",
        "x-guard-admin-key",
    }
)


def pool_shards(settings: Settings) -> int:
    """How many upstream pools: configured, or one per 16 allowed streams (1..64)."""
    if settings.upstream_pool_shards:
        return settings.upstream_pool_shards
    return max(1, min(64, math.ceil(settings.max_streams / 16)))


def create_clients(
    settings: Settings, transport: httpx.AsyncBaseTransport | None = None
) -> list[httpx.AsyncClient]:
    """The upstream pools. A given transport (tests) is one pool: it cannot be sharded."""
    shards = 1 if transport is not None else pool_shards(settings)
    limits = httpx.Limits(
        max_connections=settings.max_streams + 16,
        max_keepalive_connections=max(8, math.ceil(min(settings.max_streams, 256) / shards) * 2),
        # Below uvicorn's (and so vLLM's) 5 s keep-alive: never reuse a connection the upstream
        # is about to close.
        keepalive_expiry=4.0,
    )
    timeout = httpx.Timeout(
        connect=settings.connect_timeout,
        read=settings.read_timeout,
        write=settings.read_timeout,
        pool=settings.connect_timeout,
    )
    # One TLS context for all pools (building one loads the CA bundle: ~20 ms each), always:
    # a reroute may go to an https upstream even when the main one is plain http.
    tls = httpx.create_ssl_context(trust_env=False)
    return [
        httpx.AsyncClient(
            limits=limits,
            timeout=timeout,
            transport=transport,
            verify=tls,
            # Streams are relayed as they come: never ask the upstream to compress them.
            headers={"accept-encoding": "identity"},
            follow_redirects=False,
            trust_env=False,
        )
        for _ in range(shards)
    ]


class UpstreamResponse:
    """An upstream response whose body has not been read yet; its transport errors are mapped.

    The one place transport failures become guard errors is here: around sending (``Upstream.open``)
    and around reading the body (``aiter_raw``, ``aread``). Nothing above this layer sees httpx.
    """

    __slots__ = ("_done", "_resp", "latency_s")

    def __init__(
        self, resp: httpx.Response, latency_s: float, done: Callable[[], None] | None = None
    ) -> None:
        self._resp = resp
        self.latency_s = latency_s  # seconds to the response headers
        self._done = done  # called once, at close: the pool has one request less in flight

    @property
    def status_code(self) -> int:
        return self._resp.status_code

    @property
    def content_type(self) -> str:
        return str(self._resp.headers.get("content-type", "application/json"))

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body as it arrives. A stall past the read timeout is ``UpstreamTimeout``; a
        connection lost or garbled mid-body is ``UpstreamUnreachable``."""
        try:
            async for chunk in self._resp.aiter_raw():
                yield chunk
        except httpx.TimeoutException:
            raise UpstreamTimeout("upstream stalled mid-stream") from None
        except httpx.TransportError:
            raise UpstreamUnreachable("upstream connection failed") from None

    async def aread(self) -> bytes:
        try:
            return await self._resp.aread()
        except httpx.TimeoutException:
            raise UpstreamTimeout("upstream did not answer in time") from None
        except httpx.TransportError as exc:
            raise UpstreamUnreachable(f"upstream failed: {type(exc).__name__}") from None

    async def aclose(self) -> None:
        """Close the response. Shielded: closing is what makes vLLM abort the generation and free
        its KV cache, so it must happen even while we are being cancelled (client went away)."""
        done, self._done = self._done, None
        if done is not None:
            done()
        with anyio.CancelScope(shield=True):
            await self._resp.aclose()


class Upstream:
    """Opens upstream requests; maps transport failures to UpstreamUnreachable/UpstreamTimeout."""

    __slots__ = ("_in_flight", "api_key", "base_url", "clients")

    #: Requests in flight per pool before the next pool is used.
    PER_POOL = 4

    def __init__(
        self, clients: Sequence[httpx.AsyncClient], base_url: str, api_key: str | None
    ) -> None:
        if not clients:
            raise ValueError("at least one upstream client is needed")
        self.clients = list(clients)
        self.base_url = base_url
        self.api_key = api_key
        self._in_flight = [0] * len(self.clients)

    @property
    def is_closed(self) -> bool:
        return any(c.is_closed for c in self.clients)

    async def aclose(self) -> None:
        for c in self.clients:
            await c.aclose()

    def _pick(self) -> int:
        """The first pool with room (fewer than PER_POOL in flight), else the least loaded."""
        in_flight = self._in_flight
        if len(in_flight) != len(self.clients):  # clients replaced (a lifespan restart)
            in_flight[:] = [0] * len(self.clients)
        for i, n in enumerate(in_flight):
            if n < self.PER_POOL:
                return i
        return min(range(len(in_flight)), key=in_flight.__getitem__)

    def _release(self, i: int) -> None:
        if i < len(self._in_flight) and self._in_flight[i] > 0:
            self._in_flight[i] -= 1

    def headers(self, incoming: Mapping[str, str], forward_auth: bool) -> dict[str, str]:
        out = {k: v for k, v in incoming.items() if k.lower() not in HOP_BY_HOP}
        if self.api_key:
            out["authorization"] = f"Bearer {self.api_key}"
        elif forward_auth and "authorization" in incoming:
            out["authorization"] = incoming["authorization"]
        return out

    async def open(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        base_url: str | None = None,
    ) -> UpstreamResponse:
        """Send; return the response with its body unread."""
        url = (base_url or self.base_url) + path
        hdrs = dict(headers or {})
        if content is not None:
            hdrs["content-type"] = "application/json"
        t0 = time.perf_counter()
        pool = self._pick()
        client = self.clients[pool]
        self._in_flight[pool] += 1
        try:
            resp = await self._send(client, method, url, content, hdrs)
        except BaseException:
            self._release(pool)
            raise
        return UpstreamResponse(
            resp, time.perf_counter() - t0, functools.partial(self._release, pool)
        )

    @staticmethod
    async def _send(
        client: httpx.AsyncClient,
        method: str,
        url: str,
        content: bytes | None,
        hdrs: dict[str, str],
    ) -> httpx.Response:
        for attempt in (0, 1):
            req = client.build_request(method, url, content=content, headers=hdrs)
            try:
                resp = await client.send(req, stream=True)
                break
            except httpx.TimeoutException as exc:
                raise UpstreamTimeout(
                    f"upstream did not answer in time ({type(exc).__name__})"
                ) from None
            except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError) as exc:
                # A pooled keep-alive connection the upstream closed just as we reused it: nothing
                # was received, so one retry on a fresh connection is safe.
                if attempt == 0:
                    continue
                raise UpstreamUnreachable(f"upstream unreachable: {type(exc).__name__}") from None
            except (httpx.TransportError, OSError) as exc:
                raise UpstreamUnreachable(f"upstream unreachable: {type(exc).__name__}") from None
        return resp

    async def json(
        self, method: str, path: str, body: Any | None = None, base_url: str | None = None
    ) -> tuple[int, Any]:
        """A small non-streaming call (models, tokenize, health)."""
        import json as _json

        content = None if body is None else _json.dumps(body).encode()
        resp = await self.open(
            method, path, content=content, headers=self.headers({}, False), base_url=base_url
        )
        try:
            raw = await resp.aread()
        finally:
            await resp.aclose()
        try:
            return resp.status_code, _json.loads(raw) if raw else None
        except ValueError:
            return resp.status_code, None
