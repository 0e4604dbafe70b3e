"""An ASGI streaming response whose body is a coroutine that writes, with a total deadline.

Starlette's ``StreamingResponse`` pulls from an async generator and, when the client disconnects,
cancels the send loop but leaves the generator suspended at its ``yield``; its ``finally`` (which
closes the upstream response, the thing that makes vLLM abort the generation) would then only run
whenever the generator is garbage-collected. Here the body is handed a ``write`` function and runs
inside the response: a disconnect or the deadline cancels it wherever it waits, and its own
``finally`` runs at once. Writing (instead of yielding) also lets the body decide *when* to write:
the guard sends everything already buffered upstream in one write, just before it waits.

The total deadline is one timer per stream (not a cancel scope per read, which is costly on the
per-token path): when it fires, the body is cancelled, and ``deadline_body`` (an SSE error event
and ``[DONE]``) ends the response cleanly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send


class GuardedStreamResponse(Response):
    """A Response subclass only so FastAPI hands it through untouched."""

    def __init__(
        self,
        body: Callable[[Callable[[bytes], Awaitable[None]]], Awaitable[None]],
        *,
        headers: Mapping[str, str],
        media_type: str,
        status_code: int = 200,
        deadline_s: float | None = None,
        on_deadline: Callable[[], None] | None = None,
        deadline_body: bytes = b"",
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = {"finished": False, "timed_out": False}
        async with anyio.create_task_group() as tg:

            async def watch_disconnect() -> None:
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        tg.cancel_scope.cancel()
                        return

            async def deadline(seconds: float) -> None:
                await anyio.sleep(seconds)
                if not state["finished"]:
                    state["timed_out"] = True
                    if self.on_deadline is not None:
                        self.on_deadline()
                    tg.cancel_scope.cancel()

            tg.start_soon(watch_disconnect)
            if self.deadline_s is not None:
                tg.start_soon(deadline, self.deadline_s)
            try:
                await send(
                    {
                        "type": "http.response.start",
                        "status": self.status_code,
                        "headers": self.raw_headers,
                    }
                )

                async def write(chunk: bytes) -> None:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})

                await self.write_body(write)
                state["finished"] = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except OSError:
                pass  # the client went away mid-send (the body closed its upstream already)
            tg.cancel_scope.cancel()
        if state["timed_out"]:
            with contextlib.suppress(OSError):
                await send(
                    {"type": "http.response.body", "body": self.deadline_body, "more_body": False}
                )
