from __future__ import annotations

import numpy as np
import pytest

from guard.risk.chain import (
    END_FLOOR,
    absorption_probability,
    finite_horizon,
    hitting_table,
    simulate_hits,
    smooth_transitions,
)


def test_single_state_closed_form() -> None:
    a, e = 0.03, 0.07
    q = np.array([[1 - a - e]])
    r = np.array([a])
    assert absorption_probability(q, r)[0] == pytest.approx(a / (a + e))


def test_two_state_closed_form() -> None:
    # 0 -> 1 w.p. p, 0 -> END w.p. 1-p; 1 -> HARM w.p. x, 1 -> 0 w.p. y, 1 -> END otherwise
    p, x, y = 0.6, 0.3, 0.5
    q = np.array([[0.0, p], [y, 0.0]])
    r = np.array([0.0, x])
    h1 = x / (1 - y * p)
    h0 = p * h1
    h = absorption_probability(q, r)
    assert h == pytest.approx([h0, h1])


def _random_chain(rng: np.random.Generator, d: int, n: int) -> np.ndarray:
    p = rng.random((d + 1, n, n + 2)) ** 3
    p[:, :, n + 1] += 0.05
    return p / p.sum(axis=2, keepdims=True)


def test_finite_horizon_converges_to_infinite() -> None:
    rng = np.random.default_rng(0)
    p = _random_chain(rng, 0, 5)[0]
    q, r = p[:, :5], p[:, 5]
    inf = absorption_probability(q, r)
    prev = finite_horizon(q, r, 0)
    assert np.all(prev == 0)
    for k in (1, 5, 20, 80, 400):
        hk = finite_horizon(q, r, k)
        assert np.all(hk >= prev - 1e-12)  # monotone in the horizon
        prev = hk
    assert prev == pytest.approx(inf, abs=1e-9)


def test_hitting_table_homogeneous_is_tail_solution_everywhere() -> None:
    rng = np.random.default_rng(1)
    one = _random_chain(rng, 0, 4)
    p = np.repeat(one, 6, axis=0)
    h = hitting_table(p)
    for d in range(6):
        assert h[d] == pytest.approx(h[5], abs=1e-12)


def test_hitting_table_matches_monte_carlo() -> None:
    rng = np.random.default_rng(2)
    p = _random_chain(rng, 3, 4)
    h = hitting_table(p)
    sim_rng = np.random.default_rng(3)
    for s in range(4):
        est = simulate_hits(p, s, 20_000, sim_rng)
        sd = np.sqrt(h[0, s] * (1 - h[0, s]) / 20_000)
        assert abs(est - h[0, s]) < 4 * sd + 1e-3


def test_smoothing_rows_are_distributions_with_end_mass() -> None:
    rng = np.random.default_rng(4)
    counts = rng.integers(0, 5, size=(3, 4, 6)).astype(float)
    counts[1, 2] = 0  # an empty row backs off to the pooled row
    p = smooth_transitions(counts, kappa=3.0)
    assert p.sum(axis=2) == pytest.approx(np.ones((3, 4)))
    assert np.all(p[:, :, 5] >= END_FLOOR - 1e-15)
    assert np.all(p > 0)
    pooled = counts.sum(axis=0)[2]
    m = p[1, 2]
    # the empty row is the pooled row, smoothed: it follows the pooled counts' ordering
    assert np.argmax(m) == np.argmax(pooled)


def test_smoothing_approaches_mle_with_many_counts() -> None:
    counts = np.zeros((1, 2, 4))
    counts[0, 0] = [1e7, 2e7, 3e7, 4e7]
    counts[0, 1] = [0, 5e7, 0, 5e7]
    p = smooth_transitions(counts, kappa=1.0)
    assert p[0, 0] == pytest.approx([0.1, 0.2, 0.3, 0.4], abs=1e-5)


def test_fitted_chain_agrees_with_monte_carlo(small_fit) -> None:  # type: ignore[no-untyped-def]
    model = small_fit.model
    rng = np.random.default_rng(5)
    visited = np.flatnonzero(small_fit.arrays["counts"][0].sum(axis=1) > 0)
    assert visited.size > 0
    for s in visited[:3]:
        est = simulate_hits(model.P, int(s), 20_000, rng)
        sd = np.sqrt(model.H[0, s] * (1 - model.H[0, s]) / 20_000)
        assert abs(est - model.H[0, s]) < 4 * sd + 2e-3
