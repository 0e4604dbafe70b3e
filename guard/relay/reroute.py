"""Request bodies for reroute attempts: continue a generation from the client's safe prefix."""

from __future__ import annotations

from typing import Any

from guard.request.parse import CHAT, GenerationRequest


def upstream_body(req: GenerationRequest) -> dict[str, Any]:
    """The body sent upstream when the guard must stream internally (non-streaming clients)."""
    body = dict(req.body)
    body["stream"] = True
    opts = dict(body.get("stream_options") or {})
    opts["include_usage"] = True
    body["stream_options"] = opts
    return body


def continuation_body(
    req: GenerationRequest,
    prefix: str,
    prefix_tokens: int,
    *,
    model: str | None = None,
    system_prompt: str | None = None,
    logit_bias: dict[str, float] | None = None,
    max_tokens: int | None = None,
) -> dict[str, Any] | None:
    """A body that makes the upstream continue after ``prefix``; None if that is impossible
    (completions with a token-id prompt)."""
    body = upstream_body(req)
    body.pop("n", None)
    if req.route == CHAT:
        messages = list(body["messages"])
        if req.continues_final:
            last = dict(messages[-1])
            last["content"] = req.prefill + prefix
            messages[-1] = last
        elif prefix:
            messages.append({"role": "assistant", "content": prefix})
        if system_prompt:
            messages.insert(0, {"role": "system", "content": system_prompt})
        body["messages"] = messages
        if req.continues_final or prefix:
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
    else:
        if not isinstance(req.prompt, str):
            return None
        body["prompt"] = req.prompt + prefix
    if model:
        body["model"] = model
    if logit_bias:
        merged = dict(body.get("logit_bias") or {})
        merged.update(logit_bias)
        body["logit_bias"] = merged
    remaining = None if req.max_tokens is None else req.max_tokens - prefix_tokens
    if max_tokens is not None:
        remaining = max_tokens if remaining is None else min(remaining, max_tokens)
    if remaining is not None:
        body.pop("max_completion_tokens", None)
        body["max_tokens"] = max(1, remaining)
    return body
