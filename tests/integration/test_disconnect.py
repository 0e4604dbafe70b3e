"""Client disconnects, driven through raw ASGI so the exact moment can be chosen.

Every disconnect must close the upstream response (vLLM aborts and frees the KV cache), bring the
active-streams gauge back to 0, and leave no task behind.
"""

from __future__ import annotations

import gc
import json
import random
from typing import Any

import anyio
import anyio.lowlevel

from tests.support.asgi import chat_scope, request_receiver
from tests.support.scripted import DONE, Script, chat_events
from tests.support.sse import BENIGN, CHAT


async def call_and_leave(app: Any, body: dict[str, Any], leave_after: int) -> int:
    """Send one request; disconnect after ``leave_after`` body messages. Returns messages seen."""
    raw = json.dumps(body).encode()
    sent = {"n": 0}
    gone = anyio.Event()
    receive = request_receiver(raw, gone)

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            sent["n"] += 1
            if sent["n"] >= leave_after:
                gone.set()
        await anyio.lowlevel.checkpoint()

    scope = chat_scope()
    with anyio.fail_after(10):  # never a hang
        await app(scope, receive, send)
    return sent["n"]


LONG = b"".join(chat_events(BENIGN * 12)) + DONE


def long_stream(path: str, req: dict[str, Any]) -> Script:
    return Script(LONG)


async def test_disconnect_closes_upstream_and_gauge_returns_to_zero(harness) -> None:
    h = harness(long_stream)
    seen = await call_and_leave(h.app, CHAT, leave_after=3)
    assert seen < 20
    assert h.upstream.closed_early == 1 and h.upstream.open_streams == 0
    assert h.metric("guard_active_streams") == 0
    assert h.metric("guard_client_disconnects_total") == 1
    assert (
        h.metric("guard_requests_total", {"endpoint": "chat", "outcome": "client_disconnect"}) == 1
    )


async def test_thousand_random_disconnects_leak_nothing(harness) -> None:
    h = harness(long_stream)
    h.upstream.record = False
    rng = random.Random(7)
    # Warm up, then count live objects around the bounded loop: a leaked generator, task,
    # response or tracker per stream would show up as thousands of objects.
    for _ in range(100):
        await call_and_leave(h.app, CHAT, leave_after=rng.randint(1, 120))
    gc.collect()
    before = len(gc.get_objects())
    for _ in range(1000):
        await call_and_leave(h.app, CHAT, leave_after=rng.randint(1, 120))
    gc.collect()
    after = len(gc.get_objects())
    assert h.upstream.open_streams == 0
    assert h.metric("guard_active_streams") == 0
    assert h.upstream.closed_early + h.upstream.completed == 1100
    assert h.upstream.closed_early > 900  # most left mid-stream
    assert after - before < 500, f"{after - before} more live objects after 1000 streams"


async def test_non_streaming_request_cancelled_mid_generation_closes_upstream(harness) -> None:
    # A non-streaming request runs the guarded generation inside the handler; if the handler is
    # cancelled (server shutdown, client gone), the upstream is closed and the request accounted.
    h = harness(lambda p, r: Script(LONG, stall_after=3))
    raw = json.dumps(dict(CHAT, stream=False)).encode()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        raise AssertionError(f"nothing may be sent: {message['type']}")

    scope = chat_scope()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(h.app, scope, receive, send)
            await anyio.wait_all_tasks_blocked()  # the upstream stalled after 3 reads
            assert h.upstream.open_streams == 1
            tg.cancel_scope.cancel()
    assert h.upstream.open_streams == 0 and h.upstream.closed_early == 1
    assert h.metric("guard_active_streams") == 0
    assert (
        h.metric("guard_requests_total", {"endpoint": "chat", "outcome": "client_disconnect"}) == 1
    )
