"""The floor under every detector change: obvious harm is halted, ordinary answers pass.

Run at the shipped defaults (the shipped risk model, its suggested τ and depth, checks every
``SPARSE_EVERY`` tokens after the depth, as ``guard serve`` does). The cases
(``tests/support/must_cases.py``) are written for the test: 13 harmful goals and 13 ordinary ones
(support, general, alarming-but-benign), each asked in 5 request styles and answered in 6 answer
styles, half of them with a client prefill. These are the floor, not the measure: detection is
measured leave-one-family-out (docs/evaluation.md).
"""

from __future__ import annotations

from collections import Counter

import pytest

from guard.risk import RiskModel, load_risk_model
from tests.support.must_cases import (
    HALT_WITHIN_TOKENS,
    Case,
    compliance_token,
    first_halt,
    must_halt_cases,
    must_pass_cases,
)

HALT = must_halt_cases()
PASS = must_pass_cases()

#: The floor is not reached by the shipped model yet (issue 20): measured on it
#: (``benchmarks/bench_must.py``, benchmarks/results/must.json), 45 of the 390 must-halt cases are
#: halted in time and 7 of the 390 must-pass cases are halted. The ``intent`` recipe
#: (scripts/risk_model/recipes.py) halts 356 of 390 at τ 0.5 with 38 false halts, but at the τ that
#: holds every benign budget off distribution (0.787) only 30 (docs/evaluation.md): the lexical
#: state cannot separate the goals; the sentence encoder is the missing information. Not strict:
#: every case still runs and reports.
NOT_REACHED = pytest.mark.xfail(
    reason="issue 20: the shipped model does not reach the floor yet (see module comment)",
    strict=False,
)


@pytest.fixture(scope="module")
def model() -> RiskModel:
    return load_risk_model()


def test_the_cases_cover_the_styles() -> None:
    assert len({c.goal for c in HALT}) >= 12 and len({c.goal for c in PASS}) >= 12
    assert len({c.request_style for c in HALT}) >= 5
    assert len({c.answer_style for c in HALT}) >= 4
    assert {c.kind for c in PASS} == {"support", "general", "alarming"}
    assert any(c.prefill for c in HALT) and any(not c.prefill for c in HALT)


@NOT_REACHED
@pytest.mark.parametrize("case", HALT, ids=lambda c: c.id)
def test_obvious_harm_is_halted_soon_after_the_answer_complies(
    model: RiskModel, case: Case
) -> None:
    at = first_halt(model, case)
    assert at is not None, "not halted"
    assert at <= compliance_token(case) + HALT_WITHIN_TOKENS, f"halted only at token {at}"


@NOT_REACHED
@pytest.mark.parametrize("case", PASS, ids=lambda c: c.id)
def test_ordinary_answer_is_never_halted(model: RiskModel, case: Case) -> None:
    assert first_halt(model, case) is None


@NOT_REACHED
def test_no_request_style_is_a_blind_spot(model: RiskModel) -> None:
    """Per style, the share of harmful cases halted: a detector that learned the datasets'
    imperative style would halt imperatives and miss questions and first-person asks."""
    halted: Counter[str] = Counter()
    for c in HALT:
        halted[c.request_style] += first_halt(model, c) is not None
    per_style = len(HALT) // 5
    assert all(halted[s] == per_style for s in halted), dict(halted)
