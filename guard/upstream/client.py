"""The pooled HTTP client to the upstream vLLM server(s).

One ``httpx.AsyncClient`` per app, its pool sized for the configured maximum of concurrent streams
(httpx's default of 100 connections would queue the 101st stream). Transport errors are mapped to
the guard's error hierarchy here, once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

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


def create_client(
    settings: Settings, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    limits = httpx.Limits(
        max_connections=settings.max_streams + 16,
        max_keepalive_connections=min(settings.max_streams, 256),
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
    return httpx.AsyncClient(
        limits=limits,
        timeout=timeout,
        transport=transport,
        # Streams are relayed as they come: never ask the upstream to compress them.
        headers={"accept-encoding": "identity"},
        follow_redirects=False,
        trust_env=False,
    )


class Upstream:
    """Opens upstream requests; maps transport failures to UpstreamUnreachable/UpstreamTimeout."""

    def __init__(self, client: httpx.AsyncClient, base_url: str, api_key: str | None) -> None:
        self.client = client
        self.base_url = base_url
        self.api_key = api_key

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
    ) -> tuple[httpx.Response, float]:
        """Send and return (response with body unread, seconds to headers)."""
        url = (base_url or self.base_url) + path
        hdrs = dict(headers or {})
        if content is not None:
            hdrs["content-type"] = "application/json"
        t0 = time.perf_counter()
        for attempt in (0, 1):
            req = self.client.build_request(method, url, content=content, headers=hdrs)
            try:
                resp = await self.client.send(req, stream=True)
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
        return resp, time.perf_counter() - t0

    async def json(
        self, method: str, path: str, body: Any | None = None, base_url: str | None = None
    ) -> tuple[int, Any]:
        """A small non-streaming call (models, tokenize, health)."""
        import json as _json

        content = None if body is None else _json.dumps(body).encode()
        resp, _ = await self.open(
            method, path, content=content, headers=self.headers({}, False), base_url=base_url
        )
        try:
            raw = await resp.aread()
        except httpx.TimeoutException:
            raise UpstreamTimeout("upstream did not answer in time") from None
        except httpx.TransportError as exc:
            raise UpstreamUnreachable(f"upstream failed: {type(exc).__name__}") from None
        finally:
            await resp.aclose()
        try:
            return resp.status_code, _json.loads(raw) if raw else None
        except ValueError:
            return resp.status_code, None
