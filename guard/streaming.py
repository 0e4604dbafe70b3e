"""An ASGI streaming response whose body is a coroutine that writes, with a total deadline.

Starlette's ``StreamingResponse`` pulls from an async generator and, when the client disconnects,
cancels the send loop but leaves the generator suspended at its ``yield``; its ``finally`` (which
closes the upstream response, the thing that makes vLLM abort the generation) would then only run
whenever the generator is garbage-collected. Here the body is a coroutine handed a ``write``
function, running inside the response's task group: a disconnect or the deadline cancels it
wherever it waits, and its own ``finally`` runs at once.

``write`` only queues the bytes (an ``Outbox``); a writer task sends what queued up
(``write(chunk, flush=True)`` waits until the writer has taken it: the first token and a halt
leave at once). While the
body runs without waiting (a burst of chunks httpx has already received from one socket read, the
common case under load) the writer cannot run, so the whole burst leaves in one ``send``: one
system call for many tokens instead of one each. As soon as the body waits for anything, the
writer sends: no byte is held while the guard waits for the network. A client that reads slower
than the upstream writes makes ``write`` wait once more than ``max_buffer`` bytes are queued (up
to about twice that is in memory: the queue plus the piece being sent).

The total deadline is one timer per stream (not a cancel scope per read, which is costly on the
per-token path): when it fires, the body is cancelled, and what was queued (a piece a slow client
had not taken yet included) plus ``deadline_body`` (an SSE error event and ``[DONE]``) end the
response cleanly. ``on_deadline`` may decline (the body has all it needs, e.g. the upstream said
``[DONE]``); once the body has returned, the deadline no longer applies to sending the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send


class GuardedStreamResponse(Response):
    """A Response subclass only so FastAPI hands it through untouched."""

    def __init__(
        self,
        body: Callable[[Callable[..., Awaitable[None]]], Awaitable[None]],
        *,
        headers: Mapping[str, str],
        media_type: str,
        status_code: int = 200,
        deadline_s: float | None = None,
        on_deadline: Callable[[], bool] | None = None,
        deadline_body: bytes = b"",
        max_buffer: int = 1 << 18,
    ) -> None:
        self.write_body = body
        self.status_code = status_code
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        raw.append((b"content-type", media_type.encode("latin-1")))
        self.raw_headers = raw
        self.background = None
        self.deadline_s = deadline_s
        self.on_deadline = on_deadline
        self.deadline_body = deadline_body
        self.max_buffer = max_buffer  # bytes queued for a slow client before the body waits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = {"started": False, "finished": False, "timed_out": False}
        box = Outbox(self.max_buffer)
        async with anyio.create_task_group() as tg:

            async def watch_disconnect() -> None:
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        tg.cancel_scope.cancel()
                        return

            async def deadline(seconds: float) -> None:
                await anyio.sleep(seconds)
                if state["finished"]:
                    return
                if self.on_deadline is not None and not self.on_deadline():
                    return  # the body says it is as good as done (e.g. the upstream said [DONE])
                state["timed_out"] = True
                tg.cancel_scope.cancel()

            async def writer() -> None:
                # The writer sends the response start too, so the body always runs (and its
                # ``finally`` closes the upstream) even when the client is gone at once.
                try:
                    await send(
                        {
                            "type": "http.response.start",
                            "status": self.status_code,
                            "headers": self.raw_headers,
                        }
                    )
                    state["started"] = True
                    while await box.ready():
                        body = box.take()
                        box.sending = True
                        try:
                            await send(
                                {"type": "http.response.body", "body": body, "more_body": True}
                            )
                            box.sending = False
                        except BaseException:
                            # Not sent (servers wait for a slow client before they write): it
                            # goes out with the deadline's end, if that is what stopped us.
                            box.put_back(body)
                            raise
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                except OSError:
                    pass  # the client went away mid-send: as good as a disconnect
                tg.cancel_scope.cancel()  # the response is over (the body too, if it was not)

            tg.start_soon(watch_disconnect)
            if self.deadline_s is not None:
                tg.start_soon(deadline, self.deadline_s)
            tg.start_soon(writer)
            await self.write_body(box.write)
            state["finished"] = True
            box.close()  # the writer sends what is left, ends the body, and ends the group
        if state["timed_out"] and state["started"]:
            with contextlib.suppress(OSError):
                await send(
                    {
                        "type": "http.response.body",
                        "body": box.take() + self.deadline_body,
                        "more_body": False,
                    }
                )


class Outbox:
    """Bytes written by the body and not sent yet (one producer, one consumer, same loop)."""

    __slots__ = ("_closed", "_drained", "_parts", "_ready", "_size", "limit", "sending")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sending = False  # the consumer is inside a send (set by it)
        self._parts: list[bytes] = []
        self._size = 0
        self._closed = False
        self._ready = asyncio.Event()  # something to send, or closed
        self._drained = asyncio.Event()  # the queue was taken (a producer over the limit goes on)

    async def write(self, chunk: bytes, flush: bool = False) -> None:
        """Queue ``chunk``; wait only when more than ``limit`` bytes are queued, or, with
        ``flush``, until the consumer has taken what is queued (it is being sent). A flush does
        not wait for a consumer busy sending to a slow client: what is queued goes next anyway,
        and a halt must not wait for the client before the upstream is closed."""
        if chunk:
            self._parts.append(chunk)
            self._size += len(chunk)
        if not self._parts:
            return
        self._ready.set()
        if (flush and not self.sending) or self._size > self.limit:
            self._drained.clear()
            await self._drained.wait()

    def close(self) -> None:
        """No more writes: the consumer sends what is left, then stops."""
        self._closed = True
        self._ready.set()

    async def ready(self) -> bool:
        """Wait until there is something to send (True) or the outbox is closed and empty."""
        while not self._parts:
            if self._closed:
                return False
            self._ready.clear()
            await self._ready.wait()
        return True

    def put_back(self, body: bytes) -> None:
        """``body`` (taken, then not sent) goes back to the front of the queue."""
        self._parts.insert(0, body)
        self._size += len(body)

    def take(self) -> bytes:
        """Everything queued, as one piece."""
        parts = self._parts
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        self._parts = []
        self._size = 0
        self._drained.set()
        return body
