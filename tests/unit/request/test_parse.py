"""Reading a generation request: JSON, shape, what the guard needs from it; per-policy limits."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from guard.config import load_settings
from guard.decision.policy import PolicyBook, check_limits
from guard.errors import ClientError, InvalidJSON, UnsupportedMediaType
from guard.request.parse import decode_json, parse_generation
from tests.support.scripted import KeywordRiskModel


def test_decode_json_refuses_what_is_not_a_json_object() -> None:
    assert decode_json(b'{"a": 1}', "application/json; charset=utf-8") == {"a": 1}
    with pytest.raises(UnsupportedMediaType):
        decode_json(b"{}", "text/plain")
    with pytest.raises(InvalidJSON, match="UTF-8"):
        decode_json(b"\xff\xfe", None)
    with pytest.raises(InvalidJSON, match="JSON object"):
        decode_json(b"[1]", None)
    deep: Any = {}
    node = deep
    for _ in range(70):
        node["x"] = {}
        node = node["x"]
    import json

    with pytest.raises(InvalidJSON, match="nested deeper"):
        decode_json(json.dumps(deep).encode(), None)


def TEXT(t: str) -> dict[str, str]:
    return {"type": "text", "text": t}


def test_chat_prefill_is_the_continued_assistant_text() -> None:
    body = {
        "model": "tiny",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [TEXT("Sure"), TEXT(", here")]},
        ],
        "continue_final_message": True,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_completion_tokens": 9,
    }  # fmt: skip
    req = parse_generation("chat", body)
    assert req.prefill == "Sure, here" and req.continues_final
    assert req.stream and req.include_usage and req.max_tokens == 9 and req.n == 1
    assert req.body is body  # forwarded unchanged


def test_prefill_needs_a_final_assistant_message() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "continue_final_message": True}
    with pytest.raises(ClientError, match="assistant"):
        parse_generation("chat", body)


def test_completions_take_one_prompt() -> None:
    assert parse_generation("completions", {"prompt": ["one"]}).prompt == "one"
    with pytest.raises(ClientError, match="one prompt"):
        parse_generation("completions", {"prompt": ["one", "two"]})


def test_limits_come_from_the_policy() -> None:
    base = {"GUARD_UPSTREAM": "http://u"}
    pol = replace(
        PolicyBook(load_settings(env=base), KeywordRiskModel()).default,
        max_n=2,
        max_tokens_limit=10,
        max_top_logprobs=3,
    )
    ok = parse_generation("chat", {"messages": [{"role": "user", "content": "x"}], "n": 2})
    check_limits(ok, pol)
    for extra, param in [
        ({"n": 3}, "n"),
        ({"max_tokens": 11}, "max_tokens"),
        ({"logprobs": True, "top_logprobs": 4}, "top_logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
    ]:
        req = parse_generation("chat", {"messages": [{"role": "user", "content": "x"}], **extra})
        with pytest.raises(ClientError) as exc:
            check_limits(req, pol)
        assert exc.value.param == param
