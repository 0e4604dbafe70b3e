"""Bytes the guard writes itself: halt chunks, usage chunks, SSE error events, ``[DONE]``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from guard import jsonfast

DONE = b"data: [DONE]\n\n"
CONTENT_FILTER = "content_filter"


@dataclass(frozen=True, slots=True)
class StreamMeta:
    """What every chunk of one stream shares: the client must see one id, created, model."""

    id: str
    object: str  # chat.completion.chunk | text_completion
    created: int
    model: str
    chat: bool


def sse(obj: Any) -> bytes:
    return b"data: " + jsonfast.dumps(obj) + b"\n\n"


def content_obj(meta: StreamMeta, index: int, text: str) -> dict[str, Any]:
    choice: dict[str, Any]
    if meta.chat:
        choice = {
            "index": index,
            "delta": {"content": text},
            "logprobs": None,
            "finish_reason": None,
        }
    else:
        choice = {"index": index, "text": text, "logprobs": None, "finish_reason": None}
    return _chunk(meta, [choice])


def finish_obj(
    meta: StreamMeta, index: int, reason: str, guard: dict[str, Any] | None
) -> dict[str, Any]:
    choice: dict[str, Any]
    if meta.chat:
        choice = {"index": index, "delta": {}, "logprobs": None, "finish_reason": reason}
    else:
        choice = {"index": index, "text": "", "logprobs": None, "finish_reason": reason}
    obj = _chunk(meta, [choice])
    if guard is not None:
        obj["guard"] = guard
    return obj


def usage_obj(
    meta: StreamMeta, prompt_tokens: int | None, completion_tokens: int
) -> dict[str, Any]:
    obj = _chunk(meta, [])
    obj["usage"] = usage(prompt_tokens, completion_tokens)
    return obj


def content_chunk(meta: StreamMeta, index: int, text: str) -> bytes:
    return sse(content_obj(meta, index, text))


def finish_chunk(meta: StreamMeta, index: int, reason: str, guard: dict[str, Any] | None) -> bytes:
    return sse(finish_obj(meta, index, reason, guard))


def usage_chunk(meta: StreamMeta, prompt_tokens: int | None, completion_tokens: int) -> bytes:
    return sse(usage_obj(meta, prompt_tokens, completion_tokens))


def usage(prompt_tokens: int | None, completion_tokens: int) -> dict[str, Any]:
    p = prompt_tokens or 0
    return {
        "prompt_tokens": p,
        "completion_tokens": completion_tokens,
        "total_tokens": p + completion_tokens,
    }


def error_event(message: str, err_type: str, code: str | int | None, status: int) -> bytes:
    """Mid-stream error as vLLM sends it: HTTP stays 200, then ``data: {"error": ...}``."""
    return sse(
        {
            "error": {
                "message": message,
                "type": err_type,
                "param": None,
                "code": code,
                "status": status,
            }
        }
    )


def error_body(
    message: str, err_type: str, code: str | int | None, param: str | None = None
) -> bytes:
    return jsonfast.dumps(
        {"error": {"message": message, "type": err_type, "param": param, "code": code}}
    )


def _chunk(meta: StreamMeta, choices: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": meta.id,
        "object": meta.object,
        "created": meta.created,
        "model": meta.model,
        "choices": choices,
    }
