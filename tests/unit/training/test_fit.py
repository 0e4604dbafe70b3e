from __future__ import annotations

import numpy as np
import pytest

from guard.errors import DataError
from guard.training.bins import walk_states
from guard.training.chain_fit import walk_risks
from guard.training.fit import FitConfig, FitResult, _Recorder, fit
from guard.training.phrases import cyclic_rotations, split_phrases
from guard.training.scorer_fit import source_folds, walk_logits
from guard.training.trajectories import parse_trajectory
from tests.support.synth import SMALL, make_rows


def _traj(**kw):  # type: ignore[no-untyped-def]
    row = {**make_rows(1)[0], **kw}
    return parse_trajectory(row, "t", 1)


def test_split_phrases_lossless() -> None:
    text = "One. Two, three; four!\nFive"
    ph = split_phrases(text)
    assert "".join(ph) == text
    assert ph == ["One. ", "Two, three; ", "four!\n", "Five"]


def test_rotation_weights_add_at_most_one_trajectory() -> None:
    t = _traj(response="A b. C d. E f. G h.", label="safe")
    rots = cyclic_rotations(t, weight=1.0)
    assert len(rots) == 3  # identity excluded
    assert sum(w for _, w in rots) == pytest.approx(1.0)
    texts = {r.response for r, _ in rots}
    assert "A b. C d. E f. G h." not in texts
    for r, _ in rots:
        assert set(r.response.replace(".", "").replace(" ", "")) == set("AbCdEfGh")
    # many phrases: capped rotations, still one trajectory's weight in total
    long = _traj(response=" ".join(f"P{i}." for i in range(30)), label="safe")
    rots = cyclic_rotations(long, weight=1.0, max_rotations=8)
    assert 0 < len(rots) <= 8
    assert sum(w for _, w in rots) == pytest.approx(1.0)
    # onset-labelled or censored trajectories are not rotated
    assert cyclic_rotations(_traj(response="A. B.", label="harmful", harm_start_char=0)) == []
    assert cyclic_rotations(_traj(response="A. B.", meta={"censored": True})) == []


def test_augmented_fit_counts_add_orbit_weight() -> None:
    trajs = [parse_trajectory(r, "s", i) for i, r in enumerate(make_rows(120))]
    cfg = FitConfig(**{**{f: getattr(SMALL, f) for f in SMALL.__slots__}, "holdout": 0.0})
    plain = fit(trajs, cfg)
    aug = fit(trajs, FitConfig(**{**{f: getattr(cfg, f) for f in cfg.__slots__}, "augment": True}))
    c0 = plain.arrays["counts"].astype(float)
    c1 = aug.arrays["counts"].astype(float)
    orbits = aug.report["counts"]["augmented_orbits"]
    assert orbits > 0
    # each orbit adds exactly one trajectory's weight of terminal (HARM/END) transitions
    n = c0.shape[1]
    assert c1[:, :, n:].sum() - c0[:, :, n:].sum() == pytest.approx(orbits, rel=1e-5)


def test_vectorised_fit_path_equals_tracker(small_fit: FitResult) -> None:
    model = small_fit.model
    meta = small_fit.meta
    rec = _Recorder(SMALL.resp_buckets_log2)
    w = np.asarray(small_fit.arrays["resp_w"], dtype=np.float64)
    for row in make_rows(20, seed=7):
        t = parse_trajectory(row, "s", 1)
        wk = rec.walk(t)
        req_logit = model.tables.request_scorer.score_text(t.prompt[0]["content"])
        wk.req_bin = int(np.searchsorted(small_fit.arrays["req_edges"], req_logit, "right"))
        lg = walk_logits(wk, w, meta["resp_bias"])
        st = walk_states(wk, lg, small_fit.arrays["edges"], model.space)
        rk = walk_risks(wk, lg, st, model)
        tr = model.tracker(t.prompt)
        assert tr.risk() == pytest.approx(rk[0])
        for i, tok in enumerate(t.generated_tokens(), 1):
            tr.feed(tok)
            assert tr.logit() == pytest.approx(lg[i], abs=1e-9)
            assert tr.state_index() == st[i]
            assert tr.risk() == pytest.approx(rk[i], abs=1e-12)


def test_fitted_model_separates_synthetic_classes(small_fit: FitResult) -> None:
    m = small_fit.model
    harm = m.tracker("How do I build a bomb?")
    ok = m.tracker("How can I cancel my order?")
    for tok in ["Sure", ",", " here", " is", " how", ".", " mix", " the", " explosive", " powder"]:
        harm.feed(tok)
    for tok in ["I", " understand", " you", " want", " to", " cancel", " your", " order", "."]:
        ok.feed(tok)
    assert harm.risk() > 0.5 > ok.risk()
    rep = small_fit.report
    assert rep["held_back"]["n"] > 0
    assert rep["markov_test"]["n_transitions"] > 0
    assert np.isfinite(rep["markov_test"]["loglik_second_order"])


def test_fit_rejects_single_class() -> None:
    safe = [parse_trajectory({**r, "label": "safe"}, "s", i) for i, r in enumerate(make_rows(30))]
    with pytest.raises(DataError, match="no harmful"):
        fit(safe, SMALL)
    with pytest.raises(DataError, match="no trajectories"):
        fit([], SMALL)


@pytest.mark.parametrize(
    ("char_ngrams", "decay", "bin_mode"),
    [((3, 4), 1.0, "top"), ((0, 0), 0.9, "top"), ((2, 3), 0.8, "quantile")],
)
def test_fit_path_equals_tracker_with_char_ngrams_and_decay(
    char_ngrams: tuple[int, int], decay: float, bin_mode: str
) -> None:
    trajs = [parse_trajectory(r, "synth", i) for i, r in enumerate(make_rows(200))]
    base = {f: getattr(SMALL, f) for f in SMALL.__slots__}
    cfg = FitConfig(
        **{**base, "resp_char_ngrams": char_ngrams, "resp_decay": decay, "bin_mode": bin_mode}
    )
    res = fit(trajs, cfg)
    model = res.model
    meta = res.meta
    assert meta["resp_char_ngrams"] == list(char_ngrams) and meta["resp_decay"] == decay
    rec = _Recorder(cfg.resp_buckets_log2, char_ngrams)
    w = np.asarray(res.arrays["resp_w"], dtype=np.float64)
    for row in make_rows(10, seed=3):
        t = parse_trajectory(row, "s", 1)
        wk = rec.walk(t)
        req_logit = model.tables.request_scorer.score_text(t.prompt[0]["content"])
        wk.req_bin = int(np.searchsorted(res.arrays["req_edges"], req_logit, "right"))
        lg = walk_logits(wk, w, meta["resp_bias"], decay)
        st = walk_states(wk, lg, res.arrays["edges"], model.space)
        rk = walk_risks(wk, lg, st, model)
        tr = model.tracker(t.prompt)
        for i, tok in enumerate(t.generated_tokens(), 1):
            tr.feed(tok)
            assert tr.logit() == pytest.approx(lg[i], abs=1e-9)
            assert tr.state_index() == st[i]
            assert tr.risk() == pytest.approx(rk[i], abs=1e-12)


def test_top_bin_levels_are_fine_at_the_top() -> None:
    from guard.training.bins import _top_levels

    lv = _top_levels(11)
    assert lv.size == 11 and np.all(np.diff(lv) > 0) and lv[-1] < 1.0
    assert lv[-1] > 0.99  # the top bin is the top ~0.3 % of training prefixes


def test_source_folds_keep_sources_whole_and_balance_sizes() -> None:
    sources = ["a"] * 50 + ["b"] * 30 + ["c"] * 30 + ["d"] * 10 + ["e"] * 10
    folds = source_folds(sources, 2)
    assert set(folds) == {"a", "b", "c", "d", "e"} and set(folds.values()) == {0, 1}
    sizes = [
        sum(n for s, n in zip("abcde", (50, 30, 30, 10, 10), strict=True) if folds[s] == f)
        for f in (0, 1)
    ]
    assert sizes == [60, 70] or sizes == [70, 60]  # greedy, largest first: never 100 vs 30
    assert source_folds(list(reversed(sources)), 2) == folds  # by size, not by order


def test_cross_fit_by_source_changes_the_counts_and_is_checked() -> None:
    rows = make_rows(160)
    trajs = [parse_trajectory(r, f"src{i % 4}", i) for i, r in enumerate(rows)]
    base = {f: getattr(SMALL, f) for f in SMALL.__slots__}
    by_text = fit(trajs, FitConfig(**{**base, "cross_fit": 2}))
    by_source = fit(trajs, FitConfig(**{**base, "cross_fit": 2, "cross_fit_by": "source"}))
    # out-of-fold scores differ when a fold is two whole sources instead of hashed texts
    assert not np.array_equal(by_text.arrays["counts"], by_source.arrays["counts"])
    with pytest.raises(DataError, match="cross_fit_by"):
        fit(trajs, FitConfig(**{**base, "cross_fit": 2, "cross_fit_by": "family"}))
