"""Non-streaming responses: the relay's guarded chunk objects folded into one completion.

The guard streams from the upstream even for ``stream: false`` so it can stop a harmful generation
early. The relay (``collect=True``) keeps the chunk objects it would have sent; this module folds
them into the object vLLM itself returns for a non-streaming request: every field vLLM sends in the
stream is carried over (``token_ids`` concatenated, ``prompt_token_ids``, ``system_fingerprint``,
``stop_reason``, unknown fields too), in vLLM's non-streaming shape. Fields vLLM computes only for
non-streaming requests (:data:`NON_STREAMING_ONLY`) are present with vLLM's default, ``null``, as
documented in docs/wire.md; the guard never drops a key vLLM's own response has.
"""

from __future__ import annotations

from typing import Any, Final

from guard import wire

#: Fields of vLLM's non-streaming response besides id/object/created/model/choices, in its order;
#: null unless the stream carried them.
_CHAT_TOP: Final = (
    "service_tier",
    "system_fingerprint",
    "usage",
    "prompt_logprobs",
    "prompt_token_ids",
    "prompt_text",
    "kv_transfer_params",
    "ec_transfer_params",
    "metrics",
)
_COMPLETION_TOP: Final = (
    "service_tier",
    "system_fingerprint",
    "usage",
    "kv_transfer_params",
    "ec_transfer_params",
    "metrics",
)
#: Fields of a non-streaming message besides role/content (vLLM's defaults: null).
_MESSAGE: Final = ("refusal", "annotations", "audio", "function_call", "reasoning")
#: Fields of a choice after finish_reason (completions carry the prompt's per choice).
_CHAT_CHOICE: Final = ("stop_reason", "token_ids", "routed_experts")
_COMPLETION_CHOICE: Final = (
    "stop_reason",
    "token_ids",
    "prompt_logprobs",
    "prompt_token_ids",
    "routed_experts",
)
_USAGE_DETAILS: Final = ("prompt_tokens_details", "completion_tokens_details")
#: Fields vLLM computes only for a non-streaming request: never in a stream, so an assembled
#: response carries vLLM's default (null) for them (docs/wire.md). ``prompt_logprobs``: vLLM
#: refuses them with ``stream: true`` (the guard passes that 400 on); ``kv_transfer_params`` and
#: ``ec_transfer_params`` (disaggregated serving), ``metrics`` and ``routed_experts`` are results
#: of vLLM's non-streaming path only.
NON_STREAMING_ONLY: Final = (
    "prompt_logprobs",
    "kv_transfer_params",
    "ec_transfer_params",
    "metrics",
    "routed_experts",
)

_CHOICE_OWN: Final = frozenset({"index", "delta", "logprobs", "finish_reason", "text"})
_TOP_OWN: Final = frozenset({"id", "object", "created", "model", "choices", "usage", "guard"})


class _Acc:
    __slots__ = ("extra", "finish", "lp", "parts", "reasoning", "reasoning_key", "tools")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.reasoning: list[str] = []
        self.reasoning_key = "reasoning"
        self.tools: dict[int, dict[str, Any]] = {}
        self.lp: dict[str, Any] | None = None
        self.finish: Any = None
        self.extra: dict[str, Any] = {}


def assemble(
    chunks: list[dict[str, Any]], chat: bool
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Fold chunks into a completion; returns (completion, guard details of each choice)."""
    first = chunks[0] if chunks else {}
    out: dict[str, Any] = {
        "id": first.get("id", ""),
        "object": "chat.completion" if chat else "text_completion",
        "created": first.get("created", 0),
        "model": first.get("model", ""),
    }
    accs: dict[int, _Acc] = {}
    guards: list[dict[str, Any]] = []
    usage = None
    top: dict[str, Any] = {}
    for ch in chunks:
        if ch.get("usage") is not None:
            usage = ch["usage"]
        if "guard" in ch:
            guards.append(ch["guard"])
        for k, v in ch.items():
            if k not in _TOP_OWN and (v is not None or k not in top):
                top[k] = v
        for c in ch.get("choices") or ():
            idx = c.get("index", 0)
            acc = accs.get(idx)
            if acc is None:
                acc = accs[idx] = _Acc()
            _fold(acc, c, chat)
    out["choices"] = [_choice(idx, accs[idx], chat) for idx in sorted(accs)]
    for k in _CHAT_TOP if chat else _COMPLETION_TOP:
        if k == "usage":
            if usage is not None:
                out["usage"] = _usage(usage)
        else:
            out[k] = top.pop(k, None)
    out.update(top)  # anything else vLLM streamed at the top level
    return out, guards


def _fold(acc: _Acc, c: dict[str, Any], chat: bool) -> None:
    if chat:
        delta = c.get("delta") or {}
        if delta.get("content"):
            acc.parts.append(delta["content"])
        for key in ("reasoning", "reasoning_content"):
            r = delta.get(key)
            if r:
                acc.reasoning.append(r)
                acc.reasoning_key = key
        for call in delta.get("tool_calls") or ():
            _merge_tool(acc.tools, call)
        lp = c.get("logprobs")
        if lp and lp.get("content") is not None:
            if acc.lp is None:
                acc.lp = {"content": []}
            acc.lp["content"].extend(lp["content"])
    else:
        text, _, _ = wire.generated(c, False)
        if text:
            acc.parts.append(text)
        lp = c.get("logprobs")
        if lp:
            if acc.lp is None:
                acc.lp = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
            for k in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
                acc.lp[k].extend(lp.get(k) or [])
    if c.get("finish_reason") is not None:
        acc.finish = c["finish_reason"]
    for k, v in c.items():
        if k in _CHOICE_OWN:
            continue
        if k == "token_ids" and isinstance(v, list):
            acc.extra.setdefault("token_ids", []).extend(v)
        elif v is not None or k not in acc.extra:
            acc.extra[k] = v


def _choice(idx: int, acc: _Acc, chat: bool) -> dict[str, Any]:
    item: dict[str, Any] = {"index": idx}
    if chat:
        msg: dict[str, Any] = {"role": "assistant", "content": "".join(acc.parts) or None}
        for k in _MESSAGE:
            msg[k] = None
        if acc.reasoning:
            msg[acc.reasoning_key] = "".join(acc.reasoning)
        if acc.tools:
            msg["tool_calls"] = [acc.tools[k] for k in sorted(acc.tools)]
        item["message"] = msg
    else:
        item["text"] = "".join(acc.parts)
    item["logprobs"] = acc.lp
    item["finish_reason"] = acc.finish
    for k in _CHAT_CHOICE if chat else _COMPLETION_CHOICE:
        item[k] = acc.extra.pop(k, None)
    item.update(acc.extra)
    return item


def _usage(usage: dict[str, Any]) -> dict[str, Any]:
    out = dict(usage)
    for k in _USAGE_DETAILS:
        out.setdefault(k, None)
    return out


def _merge_tool(tools: dict[int, dict[str, Any]], call: dict[str, Any]) -> None:
    idx = call.get("index", 0)
    cur = tools.get(idx)
    fn = call.get("function") or {}
    if cur is None:
        cur = {
            "id": call.get("id"),
            "type": call.get("type", "function"),
            "function": {"name": fn.get("name") or "", "arguments": ""},
        }
        tools[idx] = cur
    if call.get("id"):
        cur["id"] = call["id"]
    if fn.get("name"):
        cur["function"]["name"] = fn["name"]
    if fn.get("arguments"):
        cur["function"]["arguments"] += fn["arguments"]
