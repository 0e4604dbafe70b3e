"""Non-streaming responses: the assembly of the guarded stream into one completion object.

The guard streams from the upstream internally even for ``stream: false`` so it can stop a
harmful generation early; this module folds the (guarded) chunks back into the object the client
asked for, keeping vLLM's extra fields.
"""

from __future__ import annotations

from typing import Any

_SKIP = {"index", "delta", "logprobs", "finish_reason", "text"}


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
    choices: dict[int, dict[str, Any]] = {}
    guards: list[dict[str, Any]] = []
    usage = None
    for ch in chunks:
        if ch.get("usage") is not None:
            usage = ch["usage"]
        if "guard" in ch:
            guards.append(ch["guard"])
        for c in ch.get("choices") or ():
            idx = c.get("index", 0)
            acc = choices.get(idx)
            if acc is None:
                acc = {
                    "index": idx,
                    "parts": [],
                    "reasoning": [],
                    "tools": {},
                    "lp": None,
                    "finish_reason": None,
                    "extra": {},
                }
                choices[idx] = acc
            if chat:
                delta = c.get("delta") or {}
                if delta.get("content"):
                    acc["parts"].append(delta["content"])
                r = delta.get("reasoning_content") or delta.get("reasoning")
                if r:
                    acc["reasoning"].append(r)
                for call in delta.get("tool_calls") or ():
                    _merge_tool(acc["tools"], call)
                lp = c.get("logprobs")
                if lp and lp.get("content") is not None:
                    if acc["lp"] is None:
                        acc["lp"] = {"content": []}
                    acc["lp"]["content"].extend(lp["content"])
            else:
                if c.get("text"):
                    acc["parts"].append(c["text"])
                lp = c.get("logprobs")
                if lp:
                    if acc["lp"] is None:
                        acc["lp"] = {
                            "tokens": [],
                            "token_logprobs": [],
                            "top_logprobs": [],
                            "text_offset": [],
                        }
                    for k in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
                        acc["lp"][k].extend(lp.get(k) or [])
            if c.get("finish_reason") is not None:
                acc["finish_reason"] = c["finish_reason"]
            for k, v in c.items():
                if k in _SKIP:
                    continue
                if k == "token_ids" and isinstance(v, list):
                    acc["extra"].setdefault("token_ids", []).extend(v)
                elif v is not None or k not in acc["extra"]:
                    acc["extra"][k] = v
    result = []
    for idx in sorted(choices):
        acc = choices[idx]
        item: dict[str, Any] = {"index": idx}
        if chat:
            msg: dict[str, Any] = {"role": "assistant", "content": "".join(acc["parts"]) or None}
            if acc["reasoning"]:
                msg["reasoning_content"] = "".join(acc["reasoning"])
            if acc["tools"]:
                msg["tool_calls"] = [acc["tools"][k] for k in sorted(acc["tools"])]
            else:
                msg["tool_calls"] = []
            item["message"] = msg
        else:
            item["text"] = "".join(acc["parts"])
        item["logprobs"] = acc["lp"]
        item["finish_reason"] = acc["finish_reason"]
        item.update(acc["extra"])
        result.append(item)
    out["choices"] = result
    if usage is not None:
        out["usage"] = usage
    return out, guards


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
