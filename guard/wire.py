"""The OpenAI / vLLM wire shapes the guard reads, defined once (pure stdlib).

Routes, message-content text, and "what the model generated in this chunk": request parsing,
tracking, guard-model scoring, the relay and the non-streaming assembly all read them from here, so
they cannot drift apart. The formats themselves are specified in docs/wire.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

#: Route names (labels in metrics and the decision log) and their upstream paths.
CHAT: Final = "chat"
COMPLETIONS: Final = "completions"
PATHS: Final = {CHAT: "/v1/chat/completions", COMPLETIONS: "/v1/completions"}
MODELS_PATH: Final = "/v1/models"
TOKENIZE_PATH: Final = "/tokenize"
HEALTH_PATH: Final = "/health"


def route_of(body: Mapping[str, Any]) -> str:
    """The route a request body belongs to (chat bodies carry ``messages``)."""
    return CHAT if "messages" in body else COMPLETIONS


def content_text(content: Any, sep: str = "\n", *, typed_only: bool = False) -> str:
    """Text of a message ``content``: a string, or a list of parts ``{"type": "text", "text"}``.

    ``sep`` joins the parts. Each reader keeps the joiner its consumers were built with (the risk
    model was fitted on ``"\\n"``, the guard-model templates on ``" "``, a prefill is continued
    verbatim with ``""``); ``typed_only`` keeps only parts whose ``type`` is ``"text"`` (plain
    string parts and untyped ``{"text"}`` parts count otherwise).
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        out = []
        for part in content:
            if isinstance(part, Mapping):
                if typed_only and part.get("type") != "text":
                    continue
                t = part.get("text")
                if isinstance(t, str):
                    out.append(t)
            elif isinstance(part, str) and not typed_only:
                out.append(part)
        return sep.join(out)
    return ""


def last_user_message(messages: Sequence[Mapping[str, Any]], sep: str = " ") -> str:
    """Text of the last ``user`` message (typed text parts joined by ``sep``)."""
    for m in reversed(messages):
        if m.get("role") == "user":
            return content_text(m.get("content"), sep, typed_only=True)
    return ""


def generated(choice: Mapping[str, Any], chat: bool) -> tuple[str, int, bool]:
    """What the model generated in one streamed choice: (text, tokens, has a tool-call delta).

    The text is what a tracker reads: reasoning, then content, then tool-call arguments (all model
    output). Tokens come from ``logprobs`` or ``token_ids`` when present (a chunk may carry
    several), else one per non-empty chunk.
    """
    has_tool = False
    if chat:
        delta = choice.get("delta")
        text = ""
        if isinstance(delta, dict):
            content = delta.get("content")
            if content:
                text = content
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning:
                text = reasoning + text if text else reasoning
            tools = delta.get("tool_calls")
            if tools:
                has_tool = True
                for call in tools:
                    fn = call.get("function") if isinstance(call, dict) else None
                    if isinstance(fn, dict):
                        args = fn.get("arguments")
                        if isinstance(args, str) and args:
                            text += args
        lp = choice.get("logprobs")
        if lp and isinstance(lp, dict) and isinstance(lp.get("content"), list):
            return text, len(lp["content"]), has_tool
    else:
        text = choice.get("text") or ""
        lp = choice.get("logprobs")
        if lp and isinstance(lp, dict) and isinstance(lp.get("tokens"), list):
            return text, len(lp["tokens"]), False
    ids = choice.get("token_ids")
    if isinstance(ids, list):
        return text, len(ids), has_tool
    return text, (1 if text or has_tool else 0), has_tool
