"""The upstream client shards its connection pool and spreads requests round-robin."""

from __future__ import annotations

import httpx
import pytest

from guard.config import Settings
from guard.errors import UpstreamUnreachable
from guard.upstream.client import Upstream, create_clients, pool_shards


def test_shard_count_follows_max_streams_and_can_be_set() -> None:
    assert pool_shards(Settings(upstream="http://u")) == 32  # default max_streams 512
    assert pool_shards(Settings(upstream="http://u", max_streams=10)) == 1
    assert pool_shards(Settings(upstream="http://u", max_streams=100_000)) == 64
    assert pool_shards(Settings(upstream="http://u", upstream_pool_shards=3)) == 3


def test_a_given_transport_is_one_pool() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(200))
    assert len(create_clients(Settings(upstream="http://u"), transport)) == 1


async def test_pools_fill_one_after_the_other_and_all_close() -> None:
    clients = create_clients(Settings(upstream="http://u", upstream_pool_shards=4))
    assert len({id(c) for c in clients}) == 4
    used: list[int] = []
    for i, c in enumerate(clients):
        c._transport = httpx.MockTransport(  # one recording transport per pool
            lambda r, i=i: (used.append(i), httpx.Response(200, json={"ok": True}))[1]
        )
    up = Upstream(clients, "http://u", None)
    # One at a time: always the first pool, whose warm connections are reused.
    for _ in range(8):
        status, obj = await up.json("GET", "/health")
        assert status == 200 and obj == {"ok": True}
    assert used == [0] * 8
    # Concurrent: the first pool takes PER_POOL requests, then the next one fills.
    used.clear()
    n = Upstream.PER_POOL + 4
    open_ = [await up.open("GET", "/health") for _ in range(n)]
    assert used == [0] * Upstream.PER_POOL + [1] * 4
    for resp in open_:
        await resp.aclose()
        await resp.aclose()  # closing twice releases once
    used.clear()
    await up.json("GET", "/health")
    assert used == [0]
    assert not up.is_closed
    await up.aclose()
    assert up.is_closed and all(c.is_closed for c in clients)


async def test_a_failed_send_gives_its_place_back() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    clients = create_clients(
        Settings(upstream="http://u", upstream_pool_shards=2), httpx.MockTransport(refuse)
    )
    up = Upstream(clients, "http://u", None)
    for _ in range(Upstream.PER_POOL + 1):
        with pytest.raises(UpstreamUnreachable):
            await up.open("GET", "/health")
    assert up._pick() == 0  # nothing stayed counted in flight
    await up.aclose()


def test_no_clients_is_an_error() -> None:
    with pytest.raises(ValueError):
        Upstream([], "http://u", None)
