"""The upstream client shards its connection pool and spreads requests round-robin."""

from __future__ import annotations

import httpx
import pytest

from guard.config import Settings
from guard.upstream.client import Upstream, create_clients, pool_shards


def test_shard_count_follows_max_streams_and_can_be_set() -> None:
    assert pool_shards(Settings(upstream="http://u")) == 32  # default max_streams 512
    assert pool_shards(Settings(upstream="http://u", max_streams=10)) == 1
    assert pool_shards(Settings(upstream="http://u", max_streams=100_000)) == 64
    assert pool_shards(Settings(upstream="http://u", upstream_pool_shards=3)) == 3


def test_a_given_transport_is_one_pool() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(200))
    assert len(create_clients(Settings(upstream="http://u"), transport)) == 1


async def test_requests_go_round_robin_over_every_pool_and_all_close() -> None:
    clients = create_clients(Settings(upstream="http://u", upstream_pool_shards=4))
    assert len({id(c) for c in clients}) == 4
    used: list[int] = []
    for i, c in enumerate(clients):
        c._transport = httpx.MockTransport(  # one recording transport per pool
            lambda r, i=i: (used.append(i), httpx.Response(200, json={"ok": True}))[1]
        )
    up = Upstream(clients, "http://u", None)
    for _ in range(8):
        status, obj = await up.json("GET", "/health")
        assert status == 200 and obj == {"ok": True}
    assert sorted(used) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert not up.is_closed
    await up.aclose()
    assert up.is_closed and all(c.is_closed for c in clients)


def test_no_clients_is_an_error() -> None:
    with pytest.raises(ValueError):
        Upstream([], "http://u", None)
