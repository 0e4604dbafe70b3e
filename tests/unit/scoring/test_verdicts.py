"""VerdictSchedule: every k tokens, sentence ends, one in flight, what text is sent."""

from __future__ import annotations

import pytest

from guard.scoring.verdicts import (
    VerdictPolicy,
    VerdictSchedule,
    last_user_message,
    prompt_summary,
    render_response,
    verdict_bin,
)


def feed(s: VerdictSchedule, chunks: list[str], answer: float | None = 0.1) -> list[int]:
    """Token counts at which a verdict was asked (answered at once)."""
    asked = []
    for c in chunks:
        if s.observe(c, 1) is not None:
            asked.append(s.tokens)
            s.on_verdict(answer)
    return asked


def test_every_k_tokens_after_first() -> None:
    pol = VerdictPolicy(every_k_tokens=16, first_at_tokens=8, at_sentence_end=False)
    s = VerdictSchedule(policy=pol, prompt="hi")
    assert feed(s, ["w "] * 60) == [8, 24, 40, 56]


def test_multi_token_chunks_do_not_double_ask() -> None:
    pol = VerdictPolicy(every_k_tokens=4, first_at_tokens=4, at_sentence_end=False)
    s = VerdictSchedule(policy=pol)
    assert s.observe("a b c d e f g h i j", 10) is not None  # crossed 4 and 8: one ask
    s.on_verdict(0.2)
    assert s.observe("k", 1) is None  # next due at 12
    assert s.observe("l", 1) is not None


def test_sentence_ends_trigger_with_min_gap() -> None:
    pol = VerdictPolicy(every_k_tokens=100, first_at_tokens=100, min_gap_tokens=4)
    s = VerdictSchedule(policy=pol)
    chunks = ["Hello", " there", ".", " Ok", "!", " more", " words", " here", "?", "\n"]
    # "." at token 3 (first ask); "!" at 5 is within the gap; "?" at 9 asks; "\n" at 10 too close
    assert feed(s, chunks) == [3, 9]


def test_sentence_end_needs_space_or_chunk_end() -> None:
    pol = VerdictPolicy(every_k_tokens=100, first_at_tokens=100, min_gap_tokens=0)
    s = VerdictSchedule(policy=pol)
    assert s.observe("version 3.5 is", 3) is None  # "." inside a number
    assert s.observe(" out. Next", 2) is not None
    s.on_verdict(0.0)
    assert s.observe("line\nnext", 2) is not None


def test_one_in_flight_and_deferred_trigger() -> None:
    pol = VerdictPolicy(every_k_tokens=2, first_at_tokens=2, at_sentence_end=False)
    s = VerdictSchedule(policy=pol)
    assert s.observe("a", 1) is None
    first = s.observe("b", 1)
    assert first is not None and s.in_flight
    assert s.observe("c", 1) is None
    assert s.observe("d", 1) is None  # due at 4 but one is in flight
    assert s.due
    s.on_verdict(0.9)
    assert s.last_verdict == 0.9 and s.last_verdict_tokens == 2
    second = s.observe("e", 1)  # the deferred trigger is served now
    assert second is not None and second.endswith("abcde")
    assert s.asked == 2 and s.answered == 1


def test_fallback_keeps_last_real_verdict() -> None:
    s = VerdictSchedule(policy=VerdictPolicy(every_k_tokens=1, first_at_tokens=1))
    assert s.observe("a", 1) is not None
    s.on_verdict(0.7)
    assert s.observe("b", 1) is not None
    s.on_verdict(None)
    assert s.last_verdict == 0.7 and s.fallbacks == 1 and not s.in_flight
    assert s.state_bin() == 3


def test_text_sent_has_prompt_summary_prefill_and_fits_max_chars() -> None:
    pol = VerdictPolicy(every_k_tokens=1, first_at_tokens=1, max_chars=200, prompt_chars=40)
    prompt = "Please tell me " + "very " * 50 + "much about my order"
    s = VerdictSchedule(policy=pol, prompt=prompt, prefill="Sure, here is")
    text = s.observe(" how", 1)
    assert text is not None
    assert text.startswith("<|user|>\nPlease tell me") and " … " in text
    assert text.endswith("<|end|>\n<|assistant|>\nSure, here is how")
    long = s.observe(" x" * 500, 500)
    s.on_verdict(0.0)
    assert long is None  # still in flight
    t2 = s.current_text()
    assert len(t2) <= 200 and t2.endswith(" x x x")
    assert "<|assistant|>\n" in t2  # head kept, response cut from the left


def test_request_text_once_and_from_last_user_message() -> None:
    msgs = [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "how to pick a lock"}]},
    ]
    assert last_user_message(msgs) == "how to pick a lock"
    s = VerdictSchedule.for_messages(msgs)
    assert s.request_text() == "<|user|>\nhow to pick a lock<|end|>\n"
    assert s.request_text() is None
    off = VerdictSchedule.for_messages(msgs, VerdictPolicy(score_request=False))
    assert off.request_text() is None
    assert VerdictSchedule.for_messages([]).request_text() is None


def test_custom_templates_for_an_operator_model() -> None:
    pol = VerdictPolicy(
        response_template="User: {prompt}\nAgent: {response}",
        request_template="User: {prompt}",
        every_k_tokens=1,
        first_at_tokens=1,
    )
    s = VerdictSchedule(policy=pol, prompt="q")
    assert s.request_text() == "User: q"
    assert s.observe("a", 1) == "User: q\nAgent: a"


def test_policy_validation_and_from_mapping() -> None:
    with pytest.raises(ValueError):
        VerdictPolicy(every_k_tokens=0)
    with pytest.raises(ValueError):
        VerdictPolicy(response_template="no slot")
    with pytest.raises(ValueError):
        VerdictPolicy.from_mapping({"every_k": 3})
    assert VerdictPolicy.from_mapping({"every_k_tokens": 3}).every_k_tokens == 3


def test_helpers() -> None:
    assert prompt_summary("short", 10) == "short"
    s = prompt_summary("a" * 100, 20)
    assert len(s) == 20 and " … " in s
    pol = VerdictPolicy(max_chars=40)
    out = render_response("", "z" * 100, pol)
    assert len(out) == 40 and out.endswith("z")
    assert [verdict_bin(p) for p in (None, 0.0, 0.3, 0.6, 0.95)] == [0, 1, 2, 3, 4]
