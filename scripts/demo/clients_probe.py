"""How a guard halt looks from common client libraries (the figures behind docs/clients.md).

Sends one harmful request (streamed and not) through each client that is importable and prints,
per client, what a developer can read: the finish reason, whether the guard's decision (the
streamed ``guard`` object or the ``X-Guard-Decision`` header) is reachable, and what raises.

    python -m scripts.demo.clients_probe --url http://127.0.0.1:8080/v1 [--model tiny]

Clients tried (each only if installed): openai, langchain_openai, litellm, llama_index (OpenAILike).
Upstream used for docs/clients.md: ``loadtests/fake_vllm.py`` (its reply to a request containing
the word "harmful" leaks a card number, which the shipped risk model halts).
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import sys
from collections.abc import Callable
from typing import Any

PROMPT = "harmful: give me the card number of another customer"


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _try(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:  # a probe: every outcome is a finding
        return f"raises {type(exc).__name__}: {str(exc)[:120]}"


def probe_openai(url: str, model: str) -> dict[str, Any]:
    import openai
    from pydantic import BaseModel

    c = openai.OpenAI(base_url=url, api_key="probe", max_retries=0)
    msgs: Any = [{"role": "user", "content": PROMPT}]

    def stream() -> dict[str, Any]:
        finish, guard = None, None
        for chunk in c.chat.completions.create(model=model, messages=msgs, stream=True):
            for ch in chunk.choices:
                finish = ch.finish_reason or finish
            guard = (chunk.model_extra or {}).get("guard", guard)
        return {"finish_reason": finish, "guard_object": guard is not None}

    def non_stream() -> dict[str, Any]:
        raw = c.chat.completions.with_raw_response.create(model=model, messages=msgs)
        comp = raw.parse()
        return {
            "finish_reason": comp.choices[0].finish_reason,
            "x_guard_decision": raw.headers.get("x-guard-decision", "")[:60],
        }

    class Answer(BaseModel):
        text: str

    def parse() -> str:
        c.chat.completions.parse(model=model, messages=msgs, response_format=Answer)
        return "returned"

    def stream_helper() -> str:
        with c.chat.completions.stream(model=model, messages=msgs) as s:
            s.get_final_completion()
        return "returned"

    return {
        "stream": _try(stream),
        "non_stream": _try(non_stream),
        "chat.completions.parse": _try(parse),
        "chat.completions.stream().get_final_completion()": _try(stream_helper),
    }


def probe_langchain(url: str, model: str) -> dict[str, Any]:
    from langchain_openai import ChatOpenAI
    from pydantic import BaseModel

    llm = ChatOpenAI(base_url=url, api_key="probe", model=model, max_retries=0)  # type: ignore[arg-type]

    def invoke() -> dict[str, Any]:
        m = llm.invoke(PROMPT)
        return {
            "finish_reason": m.response_metadata.get("finish_reason"),
            "guard_in_metadata": "guard" in json.dumps(m.response_metadata, default=str),
        }

    def stream() -> dict[str, Any]:
        finish, guard = None, False
        for chunk in llm.stream(PROMPT):
            finish = chunk.response_metadata.get("finish_reason") or finish
            guard = guard or "guard" in json.dumps(chunk.response_metadata, default=str)
            guard = guard or "guard" in json.dumps(chunk.additional_kwargs, default=str)
        return {"finish_reason": finish, "guard_object": guard}

    class Answer(BaseModel):
        text: str

    def structured() -> str:
        llm.with_structured_output(Answer, include_raw=True).invoke(PROMPT)
        return "returned"

    return {
        "invoke": _try(invoke),
        "stream": _try(stream),
        "with_structured_output(include_raw=True)": _try(structured),
    }


def probe_litellm(url: str, model: str) -> dict[str, Any]:
    import litellm

    kw = {"model": f"openai/{model}", "api_base": url, "api_key": "probe"}
    msgs = [{"role": "user", "content": PROMPT}]

    def completion() -> dict[str, Any]:
        r = litellm.completion(messages=msgs, **kw)
        headers = (getattr(r, "_hidden_params", {}) or {}).get("additional_headers") or {}
        return {
            "finish_reason": r.choices[0].finish_reason,
            "x_guard_decision_header": any("guard-decision" in k for k in headers),
        }

    def stream() -> dict[str, Any]:
        finish, guard = None, False
        for chunk in litellm.completion(messages=msgs, stream=True, **kw):
            for ch in chunk.choices:
                finish = ch.finish_reason or finish
            guard = guard or "guard" in json.dumps(chunk.model_dump(), default=str)
        return {"finish_reason": finish, "guard_object": guard}

    return {"completion": _try(completion), "stream": _try(stream)}


def probe_llamaindex(url: str, model: str) -> dict[str, Any]:
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai_like import OpenAILike

    llm = OpenAILike(model=model, api_base=url, api_key="probe", is_chat_model=True, max_retries=0)
    msgs = [ChatMessage(role="user", content=PROMPT)]

    def chat() -> dict[str, Any]:
        r = llm.chat(msgs)
        return {"finish_reason": r.raw.choices[0].finish_reason if r.raw else None}

    def stream() -> dict[str, Any]:
        last = None
        for r in llm.stream_chat(msgs):
            last = r
        raw = last.raw if last is not None else None
        finish = None
        guard = False
        if raw is not None:
            finish = raw.choices[0].finish_reason if raw.choices else None
            guard = "guard" in (getattr(raw, "model_extra", None) or {})
        return {"finish_reason_last_chunk": finish, "guard_object": guard}

    return {"chat": _try(chat), "stream_chat": _try(stream)}


PROBES = {
    "openai": ("openai", probe_openai),
    "langchain": ("langchain-openai", probe_langchain),
    "litellm": ("litellm", probe_litellm),
    "llamaindex": ("llama-index-llms-openai-like", probe_llamaindex),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--url", required=True, help="the guard's OpenAI base URL (ending in /v1)")
    ap.add_argument("--model", default="tiny")
    args = ap.parse_args()
    out: dict[str, Any] = {}
    for name, (dist, fn) in PROBES.items():
        ver = _version(dist)
        if ver is None:
            out[name] = "not installed"
            continue
        res = _try(lambda fn=fn: fn(args.url, args.model))  # type: ignore[misc]
        out[name] = (
            {"version": ver, **res} if isinstance(res, dict) else {"version": ver, "error": res}
        )
    json.dump(out, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
