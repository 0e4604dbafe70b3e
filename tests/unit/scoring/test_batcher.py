"""MicroBatcher: coalescing, timeouts -> fallback None (never hangs), errors counted, shutdown."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import anyio
import httpx
import pytest

from guard.scoring import ClassifyClient, CountingObserver, MicroBatcher, ScorerError


def _classify_transport(calls: list[int], delay: float = 0.0) -> httpx.MockTransport:
    async def handler(req: httpx.Request) -> httpx.Response:
        texts = json.loads(req.content)["input"]
        calls.append(len(texts))
        if delay:
            await asyncio.sleep(delay)
        data = [
            {
                "index": i,
                "probs": [1 - float(t.startswith("bad")), float(t.startswith("bad"))],
                "num_classes": 2,
            }
            for i, t in enumerate(texts)
        ]
        return httpx.Response(200, json={"data": data})

    return httpx.MockTransport(handler)


async def test_many_concurrent_submits_coalesce_into_few_http_calls() -> None:
    calls: list[int] = []
    obs = CountingObserver()
    async with httpx.AsyncClient(transport=_classify_transport(calls, delay=0.005)) as ac:
        client = ClassifyClient("http://x", model="m", client=ac)
        b = MicroBatcher(client.score, name="m", max_batch=32, window_ms=2, observer=obs)
        with anyio.fail_after(5):
            texts = [("bad " if i % 3 == 0 else "ok ") + str(i) for i in range(100)]
            out = await asyncio.gather(*(b.score(t) for t in texts))
        await b.aclose()
    assert out == [1.0 if i % 3 == 0 else 0.0 for i in range(100)]
    assert sum(calls) == 100
    assert len(calls) <= 5, calls  # 100 texts, batches of <= 32
    assert max(calls) == 32
    assert obs.calls["ok"] == len(calls) and not obs.drops


async def test_window_flushes_a_partial_batch() -> None:
    calls: list[int] = []
    async with httpx.AsyncClient(transport=_classify_transport(calls)) as ac:
        b = MicroBatcher(ClassifyClient("http://x", client=ac).score, window_ms=2)
        with anyio.fail_after(2):
            assert await b.score("bad") == 1.0
            a, c = await asyncio.gather(b.score("ok"), b.score("bad"))
        await b.aclose()
    assert (a, c) == (0.0, 1.0)
    assert calls == [1, 2]


class _SignallingObserver(CountingObserver):
    """Counts like CountingObserver and sets ``called`` at every finished HTTP call."""

    def __init__(self) -> None:
        super().__init__()
        self.called = asyncio.Event()

    def on_call(self, scorer: str, outcome: str, latency_s: float, size: int) -> None:
        super().on_call(scorer, outcome, latency_s, size)
        self.called.set()


async def test_timeout_gives_fallback_none_without_hanging() -> None:
    started: list[int] = []

    async def stuck(texts: Sequence[str]) -> list[float]:
        started.append(len(texts))
        await asyncio.Event().wait()  # never answers
        return [0.5] * len(texts)

    obs = _SignallingObserver()
    b = MicroBatcher(stuck, timeout_s=0.05, window_ms=1, observer=obs)
    with anyio.fail_after(1):
        out = await asyncio.gather(*(b.score(f"t{i}") for i in range(10)))
    assert out == [None] * 10
    assert obs.drops["timeout"] == 10
    with anyio.fail_after(1):
        await obs.called.wait()  # the call's own wait_for timed out too, and was counted
    assert obs.calls == {"timeout": 1}  # every call that finished timed out; none answered
    assert started and sum(started) <= 10
    await b.aclose()


async def test_queue_wait_is_bounded_by_the_per_request_timeout() -> None:
    # one slot, a slow call in flight: later texts wait in the queue, but never past timeout_s
    async def slow(texts: Sequence[str]) -> list[float]:
        await asyncio.Event().wait()  # never answers
        return [0.0] * len(texts)

    b = MicroBatcher(slow, timeout_s=0.1, max_concurrent_calls=1, window_ms=0, max_batch=1)
    with anyio.fail_after(1):
        out = await asyncio.gather(*(b.score("x") for _ in range(5)))
    assert out == [None] * 5
    await b.aclose()


async def test_errors_fall_back_and_are_counted() -> None:
    n = {"calls": 0}

    async def flaky(texts: Sequence[str]) -> list[float]:
        n["calls"] += 1
        if n["calls"] == 1:
            raise ScorerError("HTTP 500")
        if n["calls"] == 2:
            return [0.1]  # wrong length
        return [0.3] * len(texts)

    obs = CountingObserver()
    b = MicroBatcher(flaky, observer=obs, window_ms=0)
    with anyio.fail_after(2):
        assert await b.score("a") is None
        assert await b.score_many(["a", "b"]) == [None, None]
        assert await b.score("c") == 0.3
    await b.aclose()
    assert obs.calls == {"error": 2, "ok": 1}
    assert obs.drops["error"] == 3
    assert len(obs.latencies) == 3


async def test_overflow_answers_none_at_once() -> None:
    gate = asyncio.Event()
    in_flight = asyncio.Event()

    async def blocked(texts: Sequence[str]) -> list[float]:
        in_flight.set()
        await gate.wait()
        return [0.0] * len(texts)

    obs = CountingObserver()
    b = MicroBatcher(
        blocked,
        max_queue=3,
        max_batch=1,
        max_concurrent_calls=1,
        window_ms=0,
        timeout_s=5,
        observer=obs,
    )
    futs = [b.submit(str(i)) for i in range(3)]
    with anyio.fail_after(1):
        await in_flight.wait()  # the worker took one into flight; 2 remain queued
    more = [b.submit(str(i)) for i in range(3, 8)]
    over = [f for f in more if f.done()]
    assert over and all(f.result() is None for f in over)
    assert obs.drops["overflow"] == len(over)
    gate.set()
    with anyio.fail_after(2):
        res = await asyncio.gather(*futs)
    assert res == [0.0, 0.0, 0.0]
    await b.aclose()


async def test_cancelled_futures_are_not_sent() -> None:
    sent: list[list[str]] = []

    async def rec(texts: Sequence[str]) -> list[float]:
        sent.append(list(texts))
        return [0.0] * len(texts)

    b = MicroBatcher(rec, window_ms=5)
    f1, f2 = b.submit("keep"), b.submit("drop")
    f2.cancel()  # the stream ended before its verdict
    with anyio.fail_after(1):
        assert await f1 == 0.0
    await b.aclose()
    assert sent == [["keep"]]


async def test_aclose_answers_waiters_none_and_rejects_new_submits() -> None:
    in_flight = asyncio.Event()

    async def never(texts: Sequence[str]) -> list[float]:
        in_flight.set()
        await asyncio.Event().wait()
        return []

    obs = CountingObserver()
    b = MicroBatcher(never, timeout_s=30, window_ms=0, observer=obs)
    futs = [b.submit(str(i)) for i in range(4)]
    with anyio.fail_after(1):
        await in_flight.wait()
    with anyio.fail_after(1):
        await b.aclose()
        assert [await f for f in futs] == [None] * 4
    assert b.closed
    late = b.submit("late")
    assert late.done() and late.result() is None
    assert obs.drops["closed"] == 5
    await b.aclose()  # idempotent


def test_bad_parameters() -> None:
    async def f(t: Sequence[str]) -> list[float]:
        return []

    with pytest.raises(ValueError):
        MicroBatcher(f, max_batch=0)
    with pytest.raises(ValueError):
        MicroBatcher(f, timeout_s=0)
