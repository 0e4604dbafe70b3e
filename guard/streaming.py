"""An ASGI streaming response that always closes its body iterator.

Starlette's ``StreamingResponse`` cancels the send loop when the client disconnects but leaves the
async generator suspended at its ``yield``; its ``finally`` (which closes the upstream response,
the thing that makes vLLM abort the generation) would then only run whenever the generator is
garbage-collected. Here the generator is closed at once, shielded from the cancellation.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send


class GuardedStreamResponse(Response):
    """A Response subclass only so FastAPI hands it through untouched."""

    def __init__(
        self,
        body: AsyncGenerator[bytes, None],
        *,
        headers: Mapping[str, str],
        media_type: str,
        status_code: int = 200,
    ) -> None:
        self.stream = body
        self.status_code = status_code
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        raw.append((b"content-type", media_type.encode("latin-1")))
        self.raw_headers = raw
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as tg:

            async def watch_disconnect() -> None:
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(watch_disconnect)
            try:
                await send(
                    {
                        "type": "http.response.start",
                        "status": self.status_code,
                        "headers": self.raw_headers,
                    }
                )
                async for chunk in self.stream:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except OSError:
                pass  # the client went away mid-send
            finally:
                with anyio.CancelScope(shield=True):
                    await self.stream.aclose()
            tg.cancel_scope.cancel()
