"""Transport failures become guard errors in one place, around the send and the body read."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from guard.config import Settings
from guard.errors import GuardError, UpstreamTimeout, UpstreamUnreachable
from guard.upstream.client import Upstream, create_clients


class _Body(httpx.AsyncByteStream):
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"data: {}\n\n"
        raise self.exc


def upstream(handler: object) -> Upstream:
    transport = httpx.MockTransport(handler)  # type: ignore[arg-type]
    return Upstream(create_clients(Settings(upstream="http://u"), transport), "http://u", None)


@pytest.mark.parametrize(
    ("exc", "mapped", "message"),
    [
        (httpx.ConnectError("refused"), UpstreamUnreachable, "upstream unreachable: ConnectError"),
        (httpx.ConnectTimeout("slow"), UpstreamTimeout, "did not answer in time"),
        (httpx.ReadError("reset"), UpstreamUnreachable, "ReadError"),  # retried once, then mapped
    ],
)
async def test_send_failures(exc: Exception, mapped: type[GuardError], message: str) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise exc

    with pytest.raises(mapped, match=message):
        await upstream(fail).open("POST", "/v1/completions", content=b"{}")


@pytest.mark.parametrize(
    ("exc", "mapped", "message"),
    [
        (httpx.ReadTimeout("idle"), UpstreamTimeout, "stalled mid-stream"),
        (httpx.RemoteProtocolError("cut"), UpstreamUnreachable, "connection failed"),
    ],
)
async def test_body_failures_while_streaming(
    exc: Exception, mapped: type[GuardError], message: str
) -> None:
    up = upstream(lambda r: httpx.Response(200, stream=_Body(exc)))
    resp = await up.open("POST", "/v1/completions", content=b"{}")
    got = []
    with pytest.raises(mapped, match=message):
        async for part in resp.aiter_raw():
            got.append(part)
    await resp.aclose()
    assert got == [b"data: {}\n\n"]  # what arrived before the failure was delivered


async def test_body_failure_on_a_whole_read() -> None:
    up = upstream(lambda r: httpx.Response(200, stream=_Body(httpx.ReadTimeout("idle"))))
    resp = await up.open("GET", "/v1/models")
    with pytest.raises(UpstreamTimeout):
        await resp.aread()
    await resp.aclose()
    assert resp.status_code == 200 and resp.latency_s >= 0.0
