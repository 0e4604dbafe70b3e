"""The request-intent probe as the external dimension: fit with an in-process encoder, the
block-diagonal chain, the artifact round trip, the fingerprint, evaluation with and without it.

The encoder here is a deterministic stand-in (hashed bag of words, L2-normalised), enough to test
the pipeline's contracts; the real one (all-MiniLM-L6-v2 served by vLLM) is tested end to end in
tests/e2e/test_encoder_vllm.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from guard.errors import DataError, RiskModelError
from guard.risk.artifact import save_artifact
from guard.risk.model import load_risk_model
from guard.risk.probe import CANARY
from guard.training.evaluate import evaluate, request_probs, trace
from guard.training.fit import FitConfig, FitResult, fit
from guard.training.probe_fit import auroc, bin_edges
from guard.training.trajectories import parse_trajectory
from tests.support.fake_encoder import DIM, HashEncoder
from tests.support.synth import SMALL, make_rows


class _Const:
    def score_batch(self, texts: list[str]) -> list[float]:
        return [0.5] * len(texts)


def _cfg(**kw: object) -> FitConfig:
    base = {f: getattr(SMALL, f) for f in SMALL.__slots__}
    return FitConfig(**{**base, "encoder_probe": True, "probe_iterations": 150, **kw})


@pytest.fixture(scope="module")
def trajs() -> list:
    return [parse_trajectory(r, "synth", i) for i, r in enumerate(make_rows(300))]


@pytest.fixture(scope="module")
def probe_fit(trajs: list) -> FitResult:
    return fit(trajs, _cfg(cross_fit=3), encoder=HashEncoder())


def test_encoder_probe_needs_an_encoder(trajs: list) -> None:
    with pytest.raises(DataError, match="sentence encoder"):
        fit(trajs, _cfg())


def test_probe_is_one_external_dimension_only(trajs: list) -> None:
    with pytest.raises(DataError, match="external dimension"):
        fit(
            trajs,
            _cfg(scorer="combined"),
            encoder=HashEncoder(),
            external_scorer=_Const(),
        )


def test_block_model_shapes_and_meta(probe_fit: FitResult) -> None:
    m = probe_fit.model
    k = m.space.n_external_bins
    assert m.blocks and k == len(m.raw_meta["external"]["edges"]) + 2
    assert probe_fit.arrays["counts"].shape == (
        k,
        m.depth + 1,
        m.space.n_states // k,
        m.space.n_states // k + 2,
    )
    assert m.H.shape == (m.depth + 1, m.space.n_states)
    assert m.probe is not None and len(m.probe.w) == DIM
    assert m.raw_meta["encoder"]["name"] == "hash-bow"
    assert m.raw_meta["external"]["target"] == "request"


def test_every_walk_also_counts_in_the_no_verdict_chain(probe_fit: FitResult) -> None:
    counts = probe_fit.arrays["counts"]
    # bin 0 holds a copy of every walk: as many transitions as all verdict bins together
    assert counts[0].sum() == pytest.approx(counts[1:].sum(), rel=1e-6)


def test_hitting_probability_never_falls_as_the_request_looks_worse(probe_fit: FitResult) -> None:
    m = probe_fit.model
    k = m.space.n_external_bins
    h = m.H.reshape(m.depth + 1, -1, k)[:, :, 1:]
    assert np.all(np.diff(h, axis=2) >= -1e-12)


def test_transition_probs_read_the_blocks(probe_fit: FitResult) -> None:
    m = probe_fit.model
    k = m.space.n_external_bins
    n = m.space.n_states
    s = 5 * k + 2  # base state 5, external bin 2
    # every row of the full chain sums to 1 over its reachable targets (own block + absorbing)
    to = np.concatenate((np.arange(2, n, k), [n, n + 1]))
    p = m.transition_probs(np.zeros(to.size, int), np.full(to.size, s), to)
    assert p.sum() == pytest.approx(1.0)
    assert m.transition_probs([0], [s], [s + 1])[0] == 0.0  # another block: unreachable


def test_artifact_round_trip_keeps_probe_and_tables(probe_fit: FitResult, tmp_path: Path) -> None:
    path = tmp_path / "m.npz"
    save_artifact(path, probe_fit.arrays, probe_fit.meta)
    m2 = load_risk_model(path)
    assert np.array_equal(m2.H, probe_fit.model.H)
    assert m2.probe == probe_fit.model.probe


def test_fingerprint_accepts_its_encoder_and_refuses_another(probe_fit: FitResult) -> None:
    spec = probe_fit.model.probe.encoder  # type: ignore[union-attr]
    vec = HashEncoder().embed([CANARY])[0]
    assert spec.check_fingerprint(vec.tolist()) > 0.9999
    with pytest.raises(RiskModelError, match="not the encoder"):
        spec.check_fingerprint(HashEncoder().embed(["something else entirely"])[0].tolist())
    with pytest.raises(RiskModelError, match="16-d"):
        spec.check_fingerprint([0.25] * 16)


def test_request_verdict_moves_the_risk(probe_fit: FitResult, trajs: list) -> None:
    m = probe_fit.model
    harmful = next(t for t in trajs if t.harmful and t.prefill == "")
    none = trace(m, harmful).risk
    low = trace(m, harmful, request_p=0.0).risk
    high = trace(m, harmful, request_p=1.0).risk
    assert high.max() >= low.max()
    assert not np.array_equal(none, high)  # the verdict is in the state


def test_evaluation_with_and_without_the_encoder(probe_fit: FitResult, trajs: list) -> None:
    m = probe_fit.model
    ps = request_probs(m, trajs[:20], HashEncoder())
    assert ps is not None and all(p is not None and 0.0 <= p <= 1.0 for p in ps)
    assert request_probs(m, trajs[:20], None) == [None] * 20  # the lexical fallback
    with_enc = evaluate(m, trajs, encoder=HashEncoder())
    without = evaluate(m, trajs)
    assert with_enc["model"]["version"] == without["model"]["version"]


def test_another_encoder_is_refused_in_evaluation(probe_fit: FitResult, trajs: list) -> None:
    other = HashEncoder()
    other.sha256 = "1" * 64
    with pytest.raises(DataError, match="not the one"):
        request_probs(probe_fit.model, trajs[:3], other)


def test_bin_edges_cover_both_classes() -> None:
    rng = np.random.default_rng(0)
    p = np.concatenate((rng.uniform(0, 0.3, 500), rng.uniform(0.5, 1, 100)))
    y = np.concatenate((np.zeros(500), np.ones(100)))
    e = bin_edges(p, y)
    assert list(e) == sorted(set(e)) and all(0 < x < 1 for x in e)
    assert sum(x > 0.5 for x in e) >= 2  # the harmful side has more than one bin
    assert auroc(p[y == 1], p[y == 0]) == pytest.approx(1.0)


def test_a_verdict_replaces_the_lexical_request_bin(probe_fit: FitResult, trajs: list) -> None:
    m = probe_fit.model
    assert m.tables.ext_replaces_request
    harmful = next(t for t in trajs if t.harmful)
    tr = m.tracker(harmful.prompt)
    lexical = tr.state()["request_risk"]
    assert lexical > 0 and tr.state()["request_bin_used"] == lexical  # no verdict: lexical
    tr.set_external_score(0.9)
    assert tr.state()["request_bin_used"] == 0 and tr.state()["request_risk"] == lexical


def test_the_probe_is_blind_to_the_phrasing_subspace() -> None:
    from guard.training.probe_fit import fit_request_probe, phrasing_subspace

    rng = np.random.default_rng(1)
    d = 16
    style = np.zeros(d)
    style[3] = 1.0  # the "imperative" direction
    goals = rng.normal(size=(60, d))
    y = (goals[:, 0] > 0).astype(float)  # intent lives in dimension 0
    texts, vecs, labels = [], [], []
    pairs = []
    for i, g in enumerate(goals):
        for j, shift in enumerate((0.0, 2.0)):
            v = g + shift * style + (1.5 * y[i] * style if j == 0 else 0)  # style leaks the label
            texts.append(f"goal {i} style {j}")
            vecs.append(v / np.linalg.norm(v))
            labels.append(y[i])
        pairs.append((f"goal {i} style 1", f"goal {i} style 0"))
    table = dict(zip(texts, vecs, strict=True))

    class Table:
        name, sha256, dim, max_tokens = "table", "2" * 64, d, 8

        def embed(self, ts):  # type: ignore[no-untyped-def]
            return np.stack([table.get(t, np.eye(d)[0]) for t in ts])

    x = np.stack(vecs)
    u = phrasing_subspace(x, {t: i for i, t in enumerate(texts)}, pairs, 1)
    assert u is not None and abs(u[0] @ style) > 0.9  # found the style direction
    yv = np.asarray(labels)
    plain = fit_request_probe(Table(), texts, yv, ["s"] * len(texts), {}, 0)
    blind = fit_request_probe(
        Table(), texts, yv, ["s"] * len(texts), {}, 0, style_pairs=pairs, style_dims=1
    )
    w_plain, w_blind = np.asarray(plain.probe.w), np.asarray(blind.probe.w)
    assert abs(w_blind @ u[0]) < 1e-9 < abs(w_plain @ u[0])


# -- the verdict mixed with the lexical request logit (FitConfig.probe_lexical_mix) ----------


@pytest.fixture(scope="module")
def mix_fit(trajs: list) -> FitResult:
    return fit(trajs, _cfg(cross_fit=3, probe_lexical_mix=True), encoder=HashEncoder())


def test_mix_verdict_is_the_sigmoid_of_the_weighted_logits() -> None:
    from guard.tracking.tracker import mix_verdict

    p = 0.8
    z = float(np.log(p / (1 - p)))
    got = mix_verdict((0.5, 0.25, -1.0), p, 2.0)
    assert got == pytest.approx(1 / (1 + np.exp(-(0.5 * z + 0.25 * 2.0 - 1.0))))
    # p = 0 or 1 is clipped, not infinite; a higher lexical logit never lowers the verdict
    assert 0.0 < mix_verdict((1.0, 0.0, 0.0), 0.0, 0.0) < 1e-12
    assert mix_verdict((1.0, 1.0, 0.0), 0.5, 3.0) > mix_verdict((1.0, 1.0, 0.0), 0.5, -3.0)


def test_mixed_model_stores_the_mix_and_serving_applies_it(
    mix_fit: FitResult, trajs: list, tmp_path: Path
) -> None:
    from guard.tracking.tracker import mix_verdict

    m = mix_fit.model
    a, c, d = m.raw_meta["external"]["lexical_mix"]
    assert a > 0 and c > 0  # both views push the same way
    save_artifact(tmp_path / "m.npz", mix_fit.arrays, mix_fit.meta)
    m2 = load_risk_model(tmp_path / "m.npz")
    assert m2.tables.ext_mix == pytest.approx((a, c, d))
    edges = m.tables.ext_edges
    for t in trajs[:40]:
        tr = m2.tracker(t.prompt)
        tr.set_external_score(0.6)
        mixed = mix_verdict((a, c, d), 0.6, tr._req_logit)
        expect = m.tables.ext_offset + int(np.searchsorted(edges, mixed, side="right"))
        assert tr._ext_bin == expect
        assert tr.state()["external_score"] == pytest.approx(0.6)  # the raw verdict is reported


def test_a_model_without_mix_bins_the_verdict_itself(probe_fit: FitResult) -> None:
    assert probe_fit.model.tables.ext_mix is None
    assert "lexical_mix" not in probe_fit.model.raw_meta["external"]


def test_a_malformed_mix_is_refused(mix_fit: FitResult, tmp_path: Path) -> None:
    meta = {**mix_fit.meta, "external": {**mix_fit.meta["external"], "lexical_mix": [1.0]}}
    save_artifact(tmp_path / "bad.npz", mix_fit.arrays, meta)
    with pytest.raises(RiskModelError, match="lexical_mix"):
        load_risk_model(tmp_path / "bad.npz")


def test_finer_levels_give_more_verdict_bins(trajs: list, mix_fit: FitResult) -> None:
    fine = fit(
        trajs,
        _cfg(
            cross_fit=3,
            probe_lexical_mix=True,
            probe_benign_levels=(0.5, 0.9, 0.98, 0.995, 0.999),
            probe_harmful_levels=(0.25, 0.5, 0.75, 0.9),
        ),
        encoder=HashEncoder(),
    )
    coarse_edges = mix_fit.model.raw_meta["external"]["edges"]
    fine_edges = fine.model.raw_meta["external"]["edges"]
    assert len(fine_edges) > len(coarse_edges)
    assert fine.model.space.n_external_bins == len(fine_edges) + 2
