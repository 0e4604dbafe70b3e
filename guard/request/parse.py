"""Read and validate a generation request; extract what the guard needs from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from guard import jsonfast, wire
from guard.errors import ClientError, InvalidJSON, UnsupportedMediaType
from guard.request.schema import ChatCompletionRequest, CompletionRequest
from guard.wire import CHAT, COMPLETIONS

__all__ = ["CHAT", "COMPLETIONS", "GenerationRequest", "decode_json", "parse_generation"]
_MAX_DEPTH = 64  # JSON nesting we accept: deeper is an attack, not a chat request


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    route: str  # chat | completions
    body: dict[str, Any]  # as the client sent it (forwarded unchanged)
    model: str | None
    stream: bool
    n: int
    include_usage: bool
    prompt: Any  # chat: list of messages; completions: str (or token ids)
    prefill: str  # assistant text the client forces before generation
    continues_final: bool  # chat: last assistant message continued (prefill)
    max_tokens: int | None


def request_id(header: str | None) -> str | None:
    """The client's ``X-Request-Id`` when it is fit to echo and log (printable, at most 200
    characters), else None (the guard makes one)."""
    if header and len(header) <= 200 and header.isprintable():
        return header
    return None


def decode_json(raw: bytes, content_type: str | None) -> dict[str, Any]:
    if content_type is not None:
        media = content_type.split(";", 1)[0].strip().lower()
        if media and media != "application/json" and not media.endswith("+json"):
            raise UnsupportedMediaType(
                f"Content-Type must be application/json, got {media!r}", param="content-type"
            )
    try:
        obj = jsonfast.loads(raw)
    except (ValueError, RecursionError):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidJSON("request body is not valid UTF-8") from None
        raise InvalidJSON("request body is not valid JSON") from None
    if not isinstance(obj, dict):
        raise InvalidJSON("request body must be a JSON object")
    if _too_deep(obj):
        raise InvalidJSON(f"request body is nested deeper than {_MAX_DEPTH} levels")
    return obj


def _too_deep(obj: Any) -> bool:
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > _MAX_DEPTH:
            return True
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, (dict, list)))
    return False


def _first_error(exc: ValidationError) -> ClientError:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return ClientError(f"{loc}: {err['msg']}" if loc else err["msg"], param=loc or None)


def parse_generation(route: str, body: dict[str, Any]) -> GenerationRequest:
    """Validate the shape of a chat/completions body; limits are checked by
    ``guard.decision.policy.check_limits``."""
    try:
        if route == CHAT:
            chat = ChatCompletionRequest.model_validate(body)
        else:
            comp = CompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise _first_error(exc) from None
    stream = bool(body.get("stream") or False)
    opts = body.get("stream_options") or {}
    include_usage = bool(opts.get("include_usage")) if isinstance(opts, dict) else False
    if route == CHAT:
        messages = body["messages"]
        continues = bool(chat.continue_final_message)
        prefill = ""
        if continues:
            last = chat.messages[-1]
            if last.role != "assistant":
                raise ClientError(
                    "continue_final_message needs the last message to be the assistant's",
                    param="messages",
                )
            prefill = wire.content_text(last.content, "", typed_only=True)
        max_tokens = chat.max_completion_tokens or chat.max_tokens
        return GenerationRequest(
            route,
            body,
            chat.model,
            stream,
            chat.n or 1,
            include_usage,
            messages,
            prefill,
            continues,
            max_tokens,
        )
    prompt = comp.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
        if len(prompt) != 1:
            raise ClientError(
                "the guard checks one prompt per request: send a list of prompts as separate"
                " requests",
                param="prompt",
            )
        prompt = prompt[0]
    return GenerationRequest(
        route,
        body,
        comp.model,
        stream,
        comp.n or 1,
        include_usage,
        prompt,
        "",
        False,
        comp.max_tokens,
    )
