"""``step_now``: an item already there is taken without suspending; a read that waits is a
``Pending`` that behaves exactly like the awaited read, and unwinds cleanly when cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import anyio
import pytest

from guard.upstream.ready import Pending, step_now


async def test_buffered_items_complete_without_suspending() -> None:
    async def gen() -> AsyncIterator[int]:
        for i in range(3):
            yield i

    it = gen()
    assert [step_now(it.__anext__()) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(StopAsyncIteration):
        step_now(it.__anext__())


async def test_a_waiting_read_is_pending_and_awaits_to_its_item() -> None:
    ready = asyncio.Event()

    async def gen() -> AsyncIterator[str]:
        await ready.wait()
        yield "late"

    got = step_now(gen().__anext__())
    assert isinstance(got, Pending)
    asyncio.get_running_loop().call_soon(ready.set)
    assert await got == "late"


async def test_errors_before_and_after_the_suspension_reach_the_caller() -> None:
    async def early() -> AsyncIterator[int]:
        raise ValueError("early")
        yield 0  # pragma: no cover

    with pytest.raises(ValueError, match="early"):
        step_now(early().__anext__())

    async def late() -> AsyncIterator[int]:
        await asyncio.sleep(0)
        raise KeyError("late")
        yield 0  # pragma: no cover

    got = step_now(late().__anext__())
    assert isinstance(got, Pending)
    with pytest.raises(KeyError):
        await got


async def test_cancel_unwinds_nested_generators_innermost_first() -> None:
    order: list[str] = []

    async def inner() -> AsyncIterator[int]:
        try:
            await asyncio.sleep(3600)
            yield 1
        finally:
            order.append("inner")

    inner_it = inner()

    async def outer() -> AsyncIterator[int]:
        try:
            async for x in inner_it:
                yield x
        finally:
            order.append("outer")

    outer_it = outer()
    got = step_now(outer_it.__anext__())
    assert isinstance(got, Pending)
    got.cancel(OSError("client gone"))
    assert order == ["inner", "outer"]
    # nothing is left "running": both generators close normally now
    await inner_it.aclose()
    await outer_it.aclose()


async def test_a_cancel_scope_inside_the_read_survives_an_outer_cancellation() -> None:
    """httpcore's read timeout is an anyio scope inside the read; a task group cancelled while
    the caller writes (client gone) must not trip anyio's scope bookkeeping."""
    unwound = []

    async def reader() -> AsyncIterator[bytes]:
        try:
            with anyio.fail_after(60):
                await anyio.sleep_forever()
            yield b"never"
        finally:
            unwound.append(True)

    async def body(tg: anyio.abc.TaskGroup) -> None:
        got = step_now(reader().__anext__())
        assert isinstance(got, Pending)
        try:
            tg.cancel_scope.cancel()
            await anyio.sleep(1)  # the "write": cancelled here
        except BaseException as exc:
            got.cancel(exc)
            raise

    async with anyio.create_task_group() as tg:
        tg.start_soon(body, tg)
    assert unwound == [True]


async def test_cancellation_while_awaiting_is_thrown_into_the_read() -> None:
    unwound = []

    async def reader() -> AsyncIterator[bytes]:
        try:
            with anyio.fail_after(60):
                await anyio.sleep_forever()
            yield b"never"
        finally:
            unwound.append(True)

    with anyio.move_on_after(0.01) as scope:
        got = step_now(reader().__anext__())
        assert isinstance(got, Pending)
        await got
    assert scope.cancelled_caught and unwound == [True]
