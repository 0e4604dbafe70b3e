"""The outbox between a generation and its writer task: what queued up leaves as one piece,
a slow client makes the producer wait past the limit, and closing drains before stopping."""

from __future__ import annotations

import asyncio

from guard.streaming import Outbox


async def test_what_queued_up_is_taken_as_one_piece_in_order() -> None:
    box = Outbox(limit=1 << 20)
    for part in (b"a", b"bc", b"def"):
        await box.write(part)
    assert await box.ready()
    assert box.take() == b"abcdef"
    box.close()
    assert not await box.ready()  # closed and empty: the writer stops


async def test_close_still_hands_over_what_is_left() -> None:
    box = Outbox(limit=1 << 20)
    await box.write(b"last words")
    box.close()
    assert await box.ready()
    assert box.take() == b"last words"
    assert not await box.ready()


async def test_the_writer_waits_for_something_to_send() -> None:
    box = Outbox(limit=1 << 20)
    waiting = asyncio.ensure_future(box.ready())
    await asyncio.sleep(0)
    assert not waiting.done()
    await box.write(b"x")
    assert await waiting is True


async def test_a_producer_past_the_limit_waits_until_the_writer_takes() -> None:
    box = Outbox(limit=10)
    await box.write(b"0123456789")  # at the limit: no wait
    blocked = asyncio.ensure_future(box.write(b"!"))
    await asyncio.sleep(0)
    assert not blocked.done()  # 11 bytes queued for a slow client: the producer waits
    assert box.take() == b"0123456789!"
    await asyncio.wait_for(blocked, 1)  # taken: it goes on
