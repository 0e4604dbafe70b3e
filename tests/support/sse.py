"""Requests and readers shared by the integration tests (scripted upstream, in-process guard)."""

from __future__ import annotations

import json
from typing import Any

CHAT: dict[str, Any] = {
    "model": "tiny",
    "messages": [{"role": "user", "content": "hi"}],
    "stream": True,
}
BENIGN = ["Hello", "!", " How", " can", " I", " help", " you", " today", "?"]
HARMFUL = ["Sure", ",", " here", " HARM", " is", " the", " card", " number"]


def events_of(body: bytes) -> list[Any]:
    """The ``data:`` payloads of an SSE body: JSON objects, or the string ``[DONE]``."""
    out = []
    for block in body.split(b"\n\n"):
        if not block.strip():
            continue
        assert block.startswith(b"data: "), block
        data = block[6:]
        out.append("[DONE]" if data == b"[DONE]" else json.loads(data))
    return out


def text_of(events: list[Any], index: int = 0) -> str:
    """The content a chat client would show for choice ``index``."""
    return "".join(
        c["delta"].get("content") or ""
        for e in events
        if isinstance(e, dict)
        for c in e.get("choices", [])
        if c["index"] == index
    )
