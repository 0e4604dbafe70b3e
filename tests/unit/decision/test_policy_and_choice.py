from __future__ import annotations

from pathlib import Path

from guard.config import load_settings
from guard.decision.choice import REASON_MODEL_ERROR, REASON_RISK, ChoiceGuard
from guard.decision.policy import PolicyBook
from tests.support.scripted import KeywordRiskModel

ROOT = Path(__file__).resolve().parents[3]


def test_policy_resolution_first_match_wins() -> None:
    s = load_settings(ROOT / "deploy" / "guard.example.yaml", env={})
    book = PolicyBook(s, KeywordRiskModel(depth=16, threshold=0.5))
    assert book.resolve("tiny", "internal-tools", "chat").mode == "shadow"
    comp = book.resolve("tiny", "support-bot", "completions")
    assert comp.hold_back == 4 and comp.threshold == 0.4
    default = book.resolve("tiny", "support-bot", "chat")
    assert default.mode == "enforce" and default.threshold == 0.5 and default.depth == 16


class _Scripted:
    def __init__(self, risks: list[float], fail_at: int = -1) -> None:
        self.risks = risks
        self.tokens = 0
        self.fail_at = fail_at

    def feed(self, text: str, n_tokens: int = 1) -> None:
        if self.tokens == self.fail_at:
            raise RuntimeError("broken model")
        self.tokens += n_tokens

    def risk(self) -> float:
        return self.risks[min(self.tokens, len(self.risks)) - 1]

    def state(self) -> dict[str, int]:
        return {"t": self.tokens}


def _policy(**env: str):  # type: ignore[no-untyped-def]
    base = {"GUARD_UPSTREAM": "http://x:1"}
    base.update(env)
    return PolicyBook(load_settings(env=base), KeywordRiskModel(depth=4, threshold=0.5)).default


def test_debounce_needs_consecutive_checks() -> None:
    g = ChoiceGuard(_Scripted([0.9, 0.1, 0.9, 0.9]), _policy(GUARD_DEBOUNCE="2"))
    assert [g.observe("x", 1) for _ in range(4)] == [None, None, None, REASON_RISK]
    assert g.crossed_at == 4


def test_sparse_checks_after_depth() -> None:
    risks = [0.0] * 4 + [0.9] * 40
    g = ChoiceGuard(_Scripted(risks), _policy(GUARD_SPARSE_EVERY="8"))
    results = [g.observe("x", 1) for _ in range(12)]
    # Tokens 5..11 are past depth 4 and not yet at the first sparse check (4 + 8 = 12).
    assert results == [None] * 11 + [REASON_RISK]
    assert g.checks == 5  # 4 in depth + the sparse one


def test_sparse_off_stops_checking_after_depth() -> None:
    g = ChoiceGuard(_Scripted([0.0] * 4 + [0.9] * 40), _policy(GUARD_SPARSE_EVERY="0"))
    assert all(g.observe("x", 1) is None for _ in range(30))


def test_fail_open_and_fail_closed() -> None:
    opened = ChoiceGuard(_Scripted([0.0] * 9, fail_at=2), _policy())
    assert [opened.observe("x", 1) for _ in range(5)] == [None] * 5 and opened.failed
    closed = ChoiceGuard(_Scripted([0.0] * 9, fail_at=2), _policy(GUARD_FAIL_MODE="closed"))
    assert [closed.observe("x", 1) for _ in range(3)] == [None, None, REASON_MODEL_ERROR]
