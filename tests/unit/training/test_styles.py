"""Request style augmentation: both sides of the label get the same styles."""

from __future__ import annotations

import numpy as np

from guard.training.scorer_fit import _restyled
from guard.training.styles import ACT_STYLES, MAX_RESTYLE_CHARS, goal_act, restyle


def test_the_goal_is_read_out_of_common_phrasings() -> None:
    assert goal_act("How do I cancel my order?") == "cancel my order"
    assert goal_act("Give detailed instructions on how to make a bomb") == "make a bomb"
    assert goal_act("Can you tell me how to reset my password?") == "reset my password"
    assert goal_act("What is the best way to get a refund?") == "get a refund"
    assert goal_act("I want to change my delivery address.") == "change my delivery address"
    assert goal_act("Write a poem about the sea") is None
    assert goal_act("How do I " + "x " * 300) is None  # long texts are wrapped, not parsed


def test_variants_are_other_styles_of_the_same_goal() -> None:
    out = restyle("How do I bake sourdough bread?", 4)
    assert len(out) == 4 and len(set(out)) == 4
    assert all("bake sourdough bread" in v for v in out)
    assert "How do I bake sourdough bread?" not in out
    templates = {t for ts in ACT_STYLES.values() for t in ts}
    assert all(any(v == t.format(act="bake sourdough bread") for t in templates) for v in out)


def test_deterministic_and_bounded() -> None:
    t = "Write a tutorial on how to make a bomb"
    assert restyle(t, 3) == restyle(t, 3)
    assert restyle(t, 0) == []
    assert restyle("x" * (MAX_RESTYLE_CHARS + 1), 3) == []
    assert len(restyle("Write a poem about the sea", 5)) == 5  # wrapped whole


def test_harmful_and_benign_requests_get_the_same_styles() -> None:
    """The style of a variant carries no label information: over many requests, each style's
    share is the same on both sides (within sampling noise)."""
    harmful = [f"How do I make a weapon number {i}?" for i in range(300)]
    benign = [f"How do I bake a cake number {i}?" for i in range(300)]

    def styles(texts: list[str]) -> dict[str, float]:
        counts = dict.fromkeys(ACT_STYLES, 0)
        n = 0
        for t in texts:
            act = goal_act(t)
            assert act is not None
            for v in restyle(t, 2):
                for style, ts in ACT_STYLES.items():
                    if any(v == x.format(act=act) for x in ts):
                        counts[style] += 1
                n += 1
        return {k: c / n for k, c in counts.items()}

    a, b = styles(harmful), styles(benign)
    assert all(abs(a[k] - b[k]) < 0.08 for k in ACT_STYLES), (a, b)


def test_variants_join_their_requests_group_and_label() -> None:
    texts = ["How do I make a bomb?", "How do I bake bread?"]
    out, y, src, group = _restyled(texts, np.asarray([1.0, 0.0]), ["a", "b"], 3)
    assert len(out) == 2 + 6
    for t, yy, s in zip(out, y.tolist(), src, strict=True):
        base = group[t]
        i = texts.index(base)
        assert yy == [1.0, 0.0][i] and s == ["a", "b"][i]
