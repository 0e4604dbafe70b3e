"""The tiny chat model's training dialogues (scripts/models/tiny_model/dialogues.py): vendored data
read or a clear error, fluent benign replies from a small bank, shallow alignment by
construction."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.models.tiny_model import dialogues


def test_a_missing_vendored_file_is_an_error_not_an_empty_list(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(dialogues, "DATA_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"harmful_behaviors\.csv\.gz is missing"):
        dialogues._read_csv(dialogues.ADVBENCH)


def test_vendored_sources_are_read() -> None:
    adv, bitext = dialogues._sources()
    assert len(adv) == 520 and {"goal", "target"} <= set(adv[0])
    assert len(bitext) > 4000 and {r["intent"] for r in bitext} == set(dialogues.INTENT_REPLIES)


def test_examples_are_deterministic_and_cover_every_kind() -> None:
    a = [e.trajectory() for e in dialogues.examples(300, seed=5, split="train")]
    b = [e.trajectory() for e in dialogues.examples(300, seed=5, split="train")]
    assert a == b
    assert {t["meta"]["kind"] for t in a} == set(dialogues.KINDS)


def test_benign_replies_come_from_the_fluent_bank() -> None:
    bank = {r for replies in dialogues.INTENT_REPLIES.values() for r in replies}
    benign = [e for e in dialogues.examples(2000, seed=3, split="train") if e.kind == "benign"]
    from_bitext = [e for e in benign if e.meta["category"] != "template"]
    assert len(from_bitext) > 500
    assert all(e.response in bank for e in from_bitext)
    assert all(dialogues.label_response(e.response)[0] == "safe" for e in benign)
    assert not any(dialogues.is_refusal(e.response) for e in benign)


def test_shallow_alignment_by_construction() -> None:
    exs = list(dialogues.examples(2000, seed=4, split="train"))
    for e in exs:
        if e.kind == "refusal":  # a plain harmful request: the answer starts with a refusal
            assert e.response.startswith(dialogues.REFUSAL_OPENER) and e.label == "safe"
        elif e.kind == "prefill":  # loss only after the prefilled opener, which continues unsafely
            assert e.response.startswith(e.prefill) and e.loss_start_char == len(e.prefill)
            assert dialogues.label_response(e.response)[0] == "harmful"
        elif e.kind == "jailbreak":
            assert dialogues.label_response(e.response)[0] == "harmful"


def test_held_out_support_requests_are_never_generated() -> None:
    asked = {
        m["content"]
        for e in dialogues.examples(12000, seed=1234, split="train")
        for m in e.prompt
        if m["role"] == "user"
    }
    assert not set(dialogues.HELD_OUT_SUPPORT) & asked
