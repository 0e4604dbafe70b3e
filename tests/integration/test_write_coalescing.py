"""When the guard writes to the client: everything already buffered upstream in one write, every
byte written before the guard waits for the network, and a failed write ends the stream as a
disconnect. Driven through raw ASGI, so each ``http.response.body`` message (one socket write
under uvicorn) can be counted."""

from __future__ import annotations

import json
from typing import Any

import anyio
import anyio.lowlevel

from guard.generation.run import YIELD_EVERY_READS
from tests.support.asgi import chat_scope, request_receiver
from tests.support.scripted import DONE, Script, chat_events
from tests.support.sse import BENIGN, CHAT

EVENTS = [*chat_events(BENIGN * 10), DONE]


async def call(app: Any, on_body: Any = None) -> list[bytes]:
    """One streaming request; the body messages the client got, in order."""
    raw = json.dumps(CHAT).encode()
    bodies: list[bytes] = []
    receive = request_receiver(raw)

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            bodies.append(message["body"])
            if on_body is not None:
                on_body(b"".join(bodies))
        await anyio.lowlevel.checkpoint()

    with anyio.fail_after(10):  # never a hang
        await app(chat_scope(), receive, send)
    return bodies


async def test_buffered_events_leave_in_few_writes_byte_identical(harness) -> None:
    events = [*chat_events(BENIGN * 40), DONE]  # several times YIELD_EVERY_READS
    h = harness(lambda path, req: Script(b"", events=events, burst=True))
    bodies = await call(h.app)
    assert b"".join(bodies) == b"".join(events)  # nothing changed, nothing lost
    # one write per run of buffered reads: not one per event; and a long burst lets the writer
    # run every YIELD_EVERY_READS reads (twice that at most per write: as many more can queue
    # while a send waits)
    assert len(bodies) <= len(events) // YIELD_EVERY_READS + 2 < len(events)
    assert max(b.count(b"\n\n") for b in bodies) <= 2 * YIELD_EVERY_READS < len(events)


async def test_the_first_content_leaves_at_once_not_with_the_burst(harness) -> None:
    """The first content delta is sent in a write of its own (with what preceded it, the role
    chunk), not coalesced with the rest of a buffered burst: the time to first token does not
    wait for YIELD_EVERY_READS reads of relay work."""
    events = [*chat_events(BENIGN * 40), DONE]
    h = harness(lambda path, req: Script(b"", events=events, burst=True))
    bodies = await call(h.app)
    assert b"".join(bodies) == b"".join(events)
    first = next(i for i, e in enumerate(events) if b'"content": "' in e and b'""' not in e)
    assert bodies[0] == b"".join(events[: first + 1]), [b.count(b"\n\n") for b in bodies]
    assert len(bodies) >= 2  # the rest still coalesces: one write per run of reads, below
    assert max(b.count(b"\n\n") for b in bodies[1:]) > 1


async def test_every_event_is_written_before_the_guard_waits_for_the_next(harness) -> None:
    seen = {"n": 0}
    changed = anyio.Event()
    state = {"changed": changed}

    def on_body(so_far: bytes) -> None:
        seen["n"] = so_far.count(b"\n\n")
        state["changed"].set()

    async def before_read(i: int) -> None:
        # The upstream sends event i only once the client has event i - 1: a guard that held
        # bytes back while it waited for the network would stall here (and fail_after fires).
        with anyio.fail_after(5):
            while seen["n"] < i:
                state["changed"] = anyio.Event()
                await state["changed"].wait()

    h = harness(lambda path, req: Script(b"", events=EVENTS, before_read=before_read))
    bodies = await call(h.app, on_body)
    assert b"".join(bodies) == b"".join(EVENTS)
    assert len(bodies) == len(EVENTS)  # paced upstream: one write per event, none held


async def test_a_client_gone_mid_write_is_a_disconnect_not_an_error(harness, caplog) -> None:
    h = harness(lambda path, req: Script(b"", events=EVENTS, delay=0.001))
    raw = json.dumps(CHAT).encode()
    writes = {"n": 0}
    receive = request_receiver(raw)

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            writes["n"] += 1
            if writes["n"] >= 3:
                raise OSError("connection reset by peer")
        await anyio.lowlevel.checkpoint()

    with anyio.fail_after(10):
        await h.app(chat_scope(), receive, send)
    assert writes["n"] == 3  # nothing written after the failed write
    assert h.upstream.closed_early == 1 and h.upstream.open_streams == 0  # vLLM aborts
    assert h.metric("guard_active_streams") == 0
    assert h.metric("guard_client_disconnects_total") == 1
    assert "internal error" not in caplog.text


async def test_the_deadline_ends_a_slow_client_stream_without_a_hole(harness) -> None:
    """The client does not read (the server waits to write, as uvicorn does for a slow client)
    while the upstream stalls; at the deadline the client gets every event it was owed, then
    the timeout error and [DONE]: nothing from the middle is lost."""
    h = harness(
        lambda path, req: Script(b"", events=EVENTS, stall_after=4),
        env={"GUARD_TOTAL_TIMEOUT": "0.5"},
    )
    raw = json.dumps(CHAT).encode()
    got: list[bytes] = []
    receive = request_receiver(raw)

    async def send(message: dict[str, Any]) -> None:
        if message["type"] != "http.response.body":
            return
        if message.get("more_body"):
            await anyio.sleep_forever()  # never drained: cancelled by the deadline, not written
        got.append(message["body"])

    with anyio.fail_after(10):
        await h.app(chat_scope(), receive, send)
    body = b"".join(got)
    assert body.startswith(b"".join(EVENTS[:4]))  # the 4 events sent before the stall, whole
    rest = body[len(b"".join(EVENTS[:4])) :]
    assert b"upstream_timeout" in rest and rest.endswith(DONE) and rest.count(b"\n\n") == 2
    assert h.upstream.open_streams == 0
    assert (
        h.metric("guard_requests_total", {"endpoint": "chat", "outcome": "upstream_timeout"}) == 1
    )


async def test_a_client_gone_before_the_headers_still_closes_the_upstream(harness) -> None:
    h = harness(lambda path, req: Script(b"", events=EVENTS, delay=0.001))
    raw = json.dumps(CHAT).encode()
    receive = request_receiver(raw)

    async def send(message: dict[str, Any]) -> None:
        raise OSError("connection reset by peer")

    with anyio.fail_after(10):
        await h.app(chat_scope(), receive, send)
    assert h.upstream.closed_early == 1 and h.upstream.open_streams == 0  # vLLM aborts
    assert h.metric("guard_client_disconnects_total") == 1
    assert h.metric("guard_active_streams") == 0
