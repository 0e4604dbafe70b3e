"""The scorer rule s* (a state the scorer marks as unmistakably harmful behaves like HARM)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from guard.risk import load_risk_model
from guard.risk.artifact import save_artifact
from guard.risk.model import RiskModel
from guard.training.bins import walk_states
from guard.training.chain_fit import walk_risks
from guard.training.fit import FitConfig, FitResult, _Recorder, fit
from guard.training.scorer_fit import walk_logits
from guard.training.threshold import choose_harm_score
from guard.training.trajectories import parse_trajectory
from tests.support.synth import SMALL, make_rows


@pytest.fixture(scope="module")
def rule_fit() -> FitResult:
    trajs = [parse_trajectory(r, "synth", i) for i, r in enumerate(make_rows(300))]
    base = {f: getattr(SMALL, f) for f in SMALL.__slots__}
    return fit(trajs, FitConfig(**{**base, "harm_score_fpr": 0.05}))


def test_choose_harm_score_budget() -> None:
    maxima = [float(v) for v in range(100)]
    logits = [np.asarray([-5.0, m - 1.0, m]) for m in maxima]
    s = choose_harm_score(logits, 0.05)
    assert s is not None
    assert sum(m >= s for m in maxima) == 5  # the top 5 % reach it, no more
    s0 = choose_harm_score(logits, 0.0)
    assert s0 is not None and s0 > max(maxima)  # beyond every benign reply
    # the score before any generated token (t = 0) does not count
    assert choose_harm_score([np.asarray([50.0, 0.0])] * 30, 0.0) == pytest.approx(1e-6)
    assert choose_harm_score(logits[:10], 0.05) is None  # too few replies to set it


def test_rule_is_stored_and_round_trips(tmp_path: Path, rule_fit: FitResult) -> None:
    s = rule_fit.meta["harm_score_logit"]
    assert isinstance(s, float)
    assert rule_fit.report["held_back"]["harm_score_logit"] == s
    p = tmp_path / "m.npz"
    save_artifact(p, rule_fit.arrays, rule_fit.meta)
    m = load_risk_model(p)
    assert m.meta.harm_score_logit == s
    assert m.tables.harm_logit == s
    assert m.suggested_threshold == rule_fit.model.suggested_threshold


def test_model_without_rule_behaves_as_before(tmp_path: Path, small_fit: FitResult) -> None:
    assert "harm_score_logit" not in small_fit.meta
    p = tmp_path / "m.npz"
    save_artifact(p, small_fit.arrays, small_fit.meta)
    m = load_risk_model(p)
    assert m.meta.harm_score_logit is None
    assert m.tables.harm_logit == float("inf")


def test_rule_on_off_in_the_tracker(small_fit: FitResult) -> None:
    off = small_fit.model
    toks = ["Sure", ",", " here", " is", " how", ".", " mix", " the", " explosive", " powder"]
    t_off = off.tracker("How do I build a bomb?")
    for tok in toks:
        t_off.feed(tok)
    score = t_off.logit()
    h_off = t_off.risk()
    assert h_off < 1.0
    on = RiskModel(small_fit.arrays, {**small_fit.meta, "harm_score_logit": score - 1e-9})
    above = RiskModel(small_fit.arrays, {**small_fit.meta, "harm_score_logit": score + 1e-3})
    for m, want in ((on, 1.0), (above, h_off)):
        tr = m.tracker("How do I build a bomb?")
        for tok in toks:
            tr.feed(tok)
        assert tr.risk() == want
        assert tr.state()["harm_like"] is (want == 1.0)


def test_fit_path_equals_tracker_with_rule(rule_fit: FitResult) -> None:
    model = rule_fit.model
    meta = rule_fit.meta
    rec = _Recorder(SMALL.resp_buckets_log2)
    w = np.asarray(rule_fit.arrays["resp_w"], dtype=np.float64)
    fired = 0
    for row in make_rows(30, seed=7):
        t = parse_trajectory(row, "s", 1)
        wk = rec.walk(t)
        req_logit = model.tables.request_scorer.score_text(t.prompt[0]["content"])
        wk.req_bin = int(np.searchsorted(rule_fit.arrays["req_edges"], req_logit, "right"))
        lg = walk_logits(wk, w, meta["resp_bias"])
        st = walk_states(wk, lg, rule_fit.arrays["edges"], model.space)
        rk = walk_risks(wk, lg, st, model)
        fired += int((lg >= meta["harm_score_logit"]).any())
        tr = model.tracker(t.prompt)
        for i, tok in enumerate(t.generated_tokens(), 1):
            tr.feed(tok)
            assert tr.risk() == pytest.approx(rk[i], abs=1e-12)
    assert fired > 0


def test_non_finite_rule_is_rejected(small_fit: FitResult) -> None:
    from guard.errors import RiskModelError

    with pytest.raises(RiskModelError):
        RiskModel(small_fit.arrays, {**small_fit.meta, "harm_score_logit": float("nan")})
