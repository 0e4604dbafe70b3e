"""Async micro-batcher: coalesce verdict requests from many concurrent streams into few HTTP calls.

Each :meth:`MicroBatcher.submit` queues one text and returns an ``asyncio.Future`` that resolves to
P(unsafe) or to ``None`` -- the *fallback signal* (timeout, error, queue full, closed). A future
never raises and always resolves within ``timeout_s`` of its submission, so a stream that waits
on (or polls) its verdict cannot hang on the scorer. Callers may cancel their future (a stream
that ended); cancelled texts are dropped before they are sent.

Flushing: a batch goes out when ``max_batch`` texts are queued, or ``window_ms`` after the first
text of the batch was queued, whichever is first. At most ``max_concurrent_calls`` HTTP calls are
in flight; while they are, texts keep queueing (up to ``max_queue``; beyond that ``submit``
answers ``None`` at once -- load shedding, outcome ``"overflow"``).

Observability: an :class:`ScorerObserver` gets one ``on_call`` per HTTP call (outcome ``ok`` |
``timeout`` | ``error``, latency, batch size) and one ``on_drop`` per text answered ``None``
without a score (reason ``timeout`` | ``error`` | ``overflow`` | ``closed``). The app maps them to
``guard_scorer_calls_total{scorer,outcome}`` and ``guard_scorer_latency_seconds{scorer}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "CountingObserver",
    "MicroBatcher",
    "ScoreFn",
    "ScorerObserver",
]

ScoreFn = Callable[[Sequence[str]], Awaitable[list[float]]]


class ScorerObserver(Protocol):
    def on_call(self, scorer: str, outcome: str, latency_s: float, size: int) -> None:
        """One HTTP call finished: outcome ok | timeout | error."""

    def on_drop(self, scorer: str, reason: str) -> None:
        """One text was answered with the fallback (None): timeout | error | overflow | closed."""


@dataclass
class CountingObserver:
    """In-memory observer: counters and latencies (tests, debugging, a /debug endpoint)."""

    calls: Counter[str] = field(default_factory=Counter)
    drops: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)

    def on_call(self, scorer: str, outcome: str, latency_s: float, size: int) -> None:
        self.calls[outcome] += 1
        self.latencies.append(latency_s)
        self.sizes.append(size)

    def on_drop(self, scorer: str, reason: str) -> None:
        self.drops[reason] += 1


class _NullObserver:
    def on_call(self, scorer: str, outcome: str, latency_s: float, size: int) -> None:
        pass

    def on_drop(self, scorer: str, reason: str) -> None:
        pass


@dataclass
class _Item:
    text: str
    fut: asyncio.Future[float | None]
    timer: asyncio.TimerHandle | None = None


class MicroBatcher:
    """Coalesces ``submit`` calls into batched ``score_fn`` calls. Create inside a running loop
    or lazily; the worker task starts on the first submit. Close with :meth:`aclose`."""

    def __init__(
        self,
        score_fn: ScoreFn,
        *,
        name: str = "model",
        max_batch: int = 32,
        window_ms: float = 2.0,
        max_queue: int = 1024,
        timeout_s: float = 1.0,
        max_concurrent_calls: int = 2,
        observer: ScorerObserver | None = None,
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_concurrent_calls < 1:
            raise ValueError("max_batch, max_queue and max_concurrent_calls must be >= 1")
        if timeout_s <= 0 or window_ms < 0:
            raise ValueError("timeout_s must be > 0 and window_ms >= 0")
        self.score_fn = score_fn
        self.name = name
        self.max_batch = max_batch
        self.window_s = window_ms / 1000.0
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self.max_concurrent_calls = max_concurrent_calls
        self.observer: ScorerObserver = observer or _NullObserver()
        self._queue: deque[_Item] = deque()
        self._wake: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._worker: asyncio.Task[None] | None = None
        self._calls: set[asyncio.Task[None]] = set()
        self._closed = False

    # -- public API ---------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        return len(self._calls)

    def submit(self, text: str) -> asyncio.Future[float | None]:
        """Queue ``text``; the future resolves to P(unsafe) or None (fallback), never raises."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[float | None] = loop.create_future()
        if self._closed:
            self._drop(fut, "closed")
            return fut
        if len(self._queue) >= self.max_queue:
            self._drop(fut, "overflow")
            return fut
        item = _Item(text, fut)
        item.timer = loop.call_later(self.timeout_s, self._expire, item)
        self._queue.append(item)
        self._ensure_worker()
        assert self._wake is not None
        self._wake.set()
        return fut

    async def score(self, text: str) -> float | None:
        """Submit and wait (bounded by ``timeout_s``); None is the fallback signal."""
        return await self.submit(text)

    async def score_many(self, texts: Sequence[str]) -> list[float | None]:
        futs = [self.submit(t) for t in texts]
        return list(await asyncio.gather(*futs))

    async def aclose(self) -> None:
        """Stop the worker, cancel in-flight calls, answer every waiting caller None."""
        if self._closed:
            return
        self._closed = True
        tasks = [t for t in (self._worker, *self._calls) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        while self._queue:
            self._drop_item(self._queue.popleft(), "closed")

    # -- internals ----------------------------------------------------------------------------
    def _drop(self, fut: asyncio.Future[float | None], reason: str) -> None:
        if not fut.done():
            fut.set_result(None)
            self.observer.on_drop(self.name, reason)

    def _drop_item(self, item: _Item, reason: str) -> None:
        if item.timer is not None:
            item.timer.cancel()
        self._drop(item.fut, reason)

    def _expire(self, item: _Item) -> None:
        self._drop(item.fut, "timeout")

    def _ensure_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._wake = asyncio.Event()
            self._slots = asyncio.Semaphore(self.max_concurrent_calls)
            self._worker = asyncio.get_running_loop().create_task(
                self._run(), name=f"scorer-batcher-{self.name}"
            )

    def _take(self) -> list[_Item]:
        batch: list[_Item] = []
        while self._queue and len(batch) < self.max_batch:
            item = self._queue.popleft()
            if item.fut.done():  # expired or cancelled by its stream
                if item.timer is not None:
                    item.timer.cancel()
                continue
            batch.append(item)
        return batch

    async def _run(self) -> None:
        assert self._wake is not None and self._slots is not None
        wake, slots = self._wake, self._slots
        while not self._closed:
            if not self._queue:
                wake.clear()
                await wake.wait()
                continue
            # window: wait for more texts unless the batch is already full
            if len(self._queue) < self.max_batch and self.window_s > 0:
                deadline = time.monotonic() + self.window_s
                while len(self._queue) < self.max_batch:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), left)
            await slots.acquire()
            batch = self._take()
            if not batch:
                slots.release()
                continue
            task = asyncio.get_running_loop().create_task(self._call(batch, slots))
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)

    async def _call(self, batch: list[_Item], slots: asyncio.Semaphore) -> None:
        t0 = time.perf_counter()
        outcome = "ok"
        try:
            scores = await asyncio.wait_for(
                self.score_fn([it.text for it in batch]), self.timeout_s
            )
            if len(scores) != len(batch):
                raise ValueError(f"scorer returned {len(scores)} scores for {len(batch)} texts")
        except TimeoutError:
            outcome = "timeout"
        except asyncio.CancelledError:
            for it in batch:
                self._drop_item(it, "closed")
            raise
        except Exception:  # ScorerError and anything unexpected: fall back, never raise
            outcome = "error"
        finally:
            slots.release()
        self.observer.on_call(self.name, outcome, time.perf_counter() - t0, len(batch))
        if outcome == "ok":
            for it, s in zip(batch, scores, strict=True):
                if it.timer is not None:
                    it.timer.cancel()
                if not it.fut.done():
                    it.fut.set_result(float(s))
        else:
            for it in batch:
                self._drop_item(it, outcome)
