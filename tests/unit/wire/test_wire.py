"""The wire shapes, defined once (guard/wire.py; docs/wire.md)."""

from __future__ import annotations

from guard import wire


def test_content_text_with_each_readers_joiner() -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {}}, "b",
             {"text": "c"}]  # fmt: skip
    assert wire.content_text(parts, "\n") == "a\nb\nc"  # the risk model's prompt features
    assert wire.content_text(parts, " ", typed_only=True) == "a"  # guard-model templates
    assert wire.content_text("plain") == "plain"
    assert wire.content_text(None) == "" and wire.content_text(42) == ""


def test_last_user_message() -> None:
    parts = [{"type": "text", "text": "la"}, {"type": "text", "text": "st"}]
    msgs = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "x"},
        {"role": "user", "content": parts},
    ]
    assert wire.last_user_message(msgs) == "la st"
    assert wire.last_user_message([{"role": "system", "content": "s"}]) == ""


def test_generated_chat_delta() -> None:
    choice = {
        "delta": {
            "reasoning_content": "think ",
            "content": "say",
            "tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}],
        },
        "logprobs": {"content": [{}, {}, {}]},
    }
    assert wire.generated(choice, chat=True) == ('think say{"a"', 3, True)
    assert wire.generated({"delta": {"content": "x"}, "token_ids": [1, 2]}, True) == ("x", 2, False)
    assert wire.generated({"delta": {"role": "assistant", "content": ""}}, True) == ("", 0, False)
    assert wire.generated({"delta": {"reasoning": "r"}}, True) == ("r", 1, False)


def test_generated_completion_text() -> None:
    assert wire.generated({"text": "ab", "logprobs": {"tokens": ["a", "b"]}}, False) == (
        "ab",
        2,
        False,
    )
    assert wire.generated({"text": "", "finish_reason": "stop"}, False) == ("", 0, False)


def test_routes() -> None:
    assert wire.PATHS[wire.route_of({"messages": []})] == "/v1/chat/completions"
    assert wire.PATHS[wire.route_of({"prompt": "x"})] == "/v1/completions"
