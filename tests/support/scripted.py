"""A scripted upstream for fast, deterministic proxy tests: vLLM-shaped SSE bytes, in-process.

It plugs into the app as an ``httpx.MockTransport`` (no sockets), records every request it got,
and records whether each response stream was closed early (the abort that frees vLLM's slot).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx


def chat_events(
    tokens: list[str],
    *,
    index: int = 0,
    finish: str | None = "stop",
    rid: str = "chatcmpl-test",
    model: str = "tiny",
    created: int = 1700000000,
    usage: tuple[int, int] | None = None,
    token_ids: bool = False,
    role_chunk: bool = True,
) -> list[bytes]:
    """vLLM's chat stream for one choice: role chunk, one chunk per token, finish, usage."""

    def chunk(
        delta: dict[str, Any],
        fin: str | None,
        extra: dict[str, Any] | None = None,
    ) -> bytes:
        choice: dict[str, Any] = {
            "index": index,
            "delta": delta,
            "logprobs": None,
            "finish_reason": fin,
        }
        if extra:
            choice.update(extra)
        obj = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [choice],
        }
        return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"

    out = []
    if role_chunk:
        out.append(chunk({"role": "assistant", "content": ""}, None))
    for i, tok in enumerate(tokens):
        extra = {"token_ids": [1000 + i]} if token_ids else None
        out.append(
            chunk({"content": tok}, finish if (i == len(tokens) - 1 and finish) else None, extra)
        )
    if not tokens and finish:
        out.append(chunk({}, finish))
    if usage is not None:
        obj = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": {
                "prompt_tokens": usage[0],
                "completion_tokens": usage[1],
                "total_tokens": usage[0] + usage[1],
            },
        }
        out.append(b"data: " + json.dumps(obj).encode() + b"\n\n")
    return out


def completion_events(
    tokens: list[str], *, finish: str = "length", rid: str = "cmpl-test", model: str = "tiny"
) -> list[bytes]:
    out = []
    for i, tok in enumerate(tokens):
        obj = {
            "id": rid,
            "object": "text_completion",
            "created": 1700000000,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "text": tok,
                    "logprobs": None,
                    "finish_reason": finish if i == len(tokens) - 1 else None,
                }
            ],
        }
        out.append(b"data: " + json.dumps(obj).encode() + b"\n\n")
    return out


DONE = b"data: [DONE]\n\n"


@dataclass
class Script:
    """One scripted response: status, and body bytes split into reads of ``split`` bytes."""

    body: bytes
    status: int = 200
    content_type: str = "text/event-stream; charset=utf-8"
    split: int | None = None  # bytes per network read; None: one event per read
    events: list[bytes] | None = None
    stall_after: int | None = None  # hang (until closed) after this many reads
    delay: float = 0.0  # seconds between reads (a model generating tokens)
    # all reads back to back, never suspending: what is already buffered after one network read
    burst: bool = False
    # awaited before read i (i >= 1): lets a test pace the upstream by what the client has seen
    before_read: Callable[[int], Awaitable[None]] | None = None


@dataclass
class ScriptedUpstream:
    """Route -> function(request json) -> Script."""

    handler: Callable[[str, dict[str, Any]], Script]
    requests: list[tuple[str, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    closed_early: int = 0
    completed: int = 0
    open_streams: int = 0
    record: bool = True  # keep every request (off for long loops that measure memory)
    #: awaited before the response headers (an upstream that takes its time to answer)
    before_open: Callable[[], Awaitable[None]] | None = None

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(await request.aread() or b"null")
        if self.record:
            self.requests.append((request.url.path, body, dict(request.headers)))
        script = self.handler(request.url.path, body)
        if self.before_open is not None:
            await self.before_open()
        return httpx.Response(
            script.status,
            headers={"content-type": script.content_type},
            stream=_Stream(self, script),
        )


class _Stream(httpx.AsyncByteStream):
    def __init__(self, owner: ScriptedUpstream, script: Script) -> None:
        self.owner = owner
        self.script = script
        self.done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        import anyio

        s = self.script
        if s.events is not None and s.split is None:
            pieces = s.events
        elif s.split is None and s.content_type.startswith("text/event-stream"):
            pieces = [p + b"\n\n" for p in s.body.split(b"\n\n") if p]
        else:
            data = s.body if s.events is None else b"".join(s.events)
            size = s.split or len(data) or 1
            pieces = [data[i : i + size] for i in range(0, len(data), size)]
        self.owner.open_streams += 1
        for i, piece in enumerate(pieces):
            if s.stall_after is not None and i >= s.stall_after:
                await anyio.sleep(3600)
            if i and s.before_read is not None:
                await s.before_read(i)
            if i == len(pieces) - 1:
                self.done = True
            yield piece
            if s.delay:
                await anyio.sleep(s.delay)
            elif not s.burst:
                await anyio.lowlevel.checkpoint()
        self.done = True

    async def aclose(self) -> None:
        self.owner.open_streams -= 1
        if self.done:
            self.owner.completed += 1
        else:
            self.owner.closed_early += 1


class KeywordRiskModel:
    """A transparent test risk model: h jumps to 1.0 once a trigger word has been generated.

    Lets proxy tests assert the exact token a halt happens at; the real model is tested in
    tests/unit/risk and end to end.
    """

    def __init__(
        self, triggers: tuple[str, ...] = ("HARM",), depth: int = 16, threshold: float = 0.5
    ) -> None:
        self.triggers = triggers
        self._depth = depth
        self._threshold = threshold

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def suggested_threshold(self) -> float:
        return self._threshold

    def tracker(self, prompt: Any, prefill: str = "") -> _KwTracker:
        return _KwTracker(self.triggers, prefill)


class _KwTracker:
    def __init__(self, triggers: tuple[str, ...], prefill: str) -> None:
        self.triggers = triggers
        self.text = prefill
        self.tokens = 0
        self.external: float | None = None  # a guard model's verdict joins the state

    def set_external_score(self, p: float) -> None:
        self.external = p

    def feed(self, text: str, n_tokens: int = 1) -> None:
        self.text += text
        self.tokens += n_tokens

    def risk(self) -> float:
        if any(t in self.text for t in self.triggers):
            return 1.0
        return self.external if self.external is not None else 0.01

    def state(self) -> dict[str, Any]:
        return {"tokens": self.tokens}
