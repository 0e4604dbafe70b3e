"""Raw ASGI for tests that need the exact moment of a disconnect or of each body message."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio

Receive = Callable[[], Awaitable[dict[str, Any]]]


def chat_scope() -> dict[str, Any]:
    """The HTTP scope of a POST to /v1/chat/completions (a fresh dict each call)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"host", b"guard")],
        "client": ("127.0.0.1", 5555),
        "server": ("127.0.0.1", 8080),
    }


def request_receiver(body: bytes, gone: anyio.Event | None = None) -> Receive:
    """``receive`` as a server gives it: the request body once, then nothing until the client
    goes (``gone`` set: ``http.disconnect``; no ``gone``: never)."""
    asked = {"n": 0}

    async def receive() -> dict[str, Any]:
        asked["n"] += 1
        if asked["n"] == 1:
            return {"type": "http.request", "body": body, "more_body": False}
        if gone is None:
            await anyio.sleep_forever()
        else:
            await gone.wait()
        return {"type": "http.disconnect"}

    return receive
