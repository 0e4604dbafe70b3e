"""Absorbing Markov chain math: smoothing, hitting probabilities, simulation (numpy only).

Layout: transient states ``0..n-1``; column ``n`` is HARM, column ``n + 1`` is END. A transition
tensor ``P`` has shape ``(D + 1, n, n + 2)``: ``P[d]`` is used from depth index ``d`` (``d = D`` is
the homogeneous tail).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

#: every smoothed row keeps at least this probability of END (so ``I - Q_tail`` is invertible)
END_FLOOR = 1e-3
#: share of the back-off base row spread uniformly over all targets
UNIFORM_MIX = 0.01


def smooth_transitions(
    counts: npt.ArrayLike, kappa: float, end_floor: float = END_FLOOR
) -> FloatArray:
    """Dirichlet smoothing with back-off to the depth-pooled row.

    ``P[d, i] = (n[d, i] + kappa * m_i) / (n[d, i].sum() + kappa)`` where ``m_i`` is the pooled
    (over depths) row of state ``i``, itself smoothed towards a base row that stays put and exits
    to HARM/END at the global per-step rates. Every row keeps at least ``end_floor`` on END.
    """
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 3 or c.shape[2] != c.shape[1] + 2:
        raise ValueError("counts must have shape (D+1, n, n+2)")
    if np.any(c < 0) or not np.all(np.isfinite(c)):
        raise ValueError("counts must be finite and non-negative")
    if kappa <= 0:
        raise ValueError("kappa must be positive")
    _, n, _ = c.shape
    pooled = c.sum(axis=0)
    total = pooled.sum()
    if total > 0:
        p_harm = pooled[:, n].sum() / total
        p_end = pooled[:, n + 1].sum() / total
    else:
        p_harm, p_end = 0.0, 0.0
    p_end = max(p_end, end_floor)
    base = np.zeros((n, n + 2))
    base[np.arange(n), np.arange(n)] = max(0.0, 1.0 - p_harm - p_end)
    base[:, n] = p_harm
    base[:, n + 1] = p_end
    base /= base.sum(axis=1, keepdims=True)
    # a little mass everywhere, so no transition seen in held-back data has probability zero
    base = (1.0 - UNIFORM_MIX) * base + UNIFORM_MIX / (n + 2)
    m = (pooled + kappa * base) / (pooled.sum(axis=1, keepdims=True) + kappa)
    p = (c + kappa * m[None]) / (c.sum(axis=2, keepdims=True) + kappa)
    low = p[:, :, n + 1] < end_floor
    if np.any(low):
        p[:, :, n + 1] = np.maximum(p[:, :, n + 1], end_floor)
        p /= p.sum(axis=2, keepdims=True)
    return np.asarray(p, dtype=np.float64)


def absorption_probability(q: npt.ArrayLike, r: npt.ArrayLike) -> FloatArray:
    """Infinite-horizon hitting probability ``h = (I - Q)^-1 r``."""
    qa = np.asarray(q, dtype=np.float64)
    ra = np.asarray(r, dtype=np.float64)
    h = np.linalg.solve(np.eye(qa.shape[0]) - qa, ra)
    return np.asarray(np.clip(h, 0.0, 1.0), dtype=np.float64)


def finite_horizon(q: npt.ArrayLike, r: npt.ArrayLike, k: int) -> FloatArray:
    """``h^(k)``: probability of hitting HARM within ``k`` steps (``h^(0) = 0``)."""
    qa = np.asarray(q, dtype=np.float64)
    ra = np.asarray(r, dtype=np.float64)
    h = np.zeros(qa.shape[0])
    for _ in range(k):
        h = ra + qa @ h
    return h


def hitting_table(p: npt.ArrayLike) -> FloatArray:
    """``H[d, s]`` for ``d = 0..D``: the tail by a linear solve, then backward recursion."""
    pa = np.asarray(p, dtype=np.float64)
    d_max = pa.shape[0] - 1
    n = pa.shape[1]
    h = np.empty((d_max + 1, n))
    h[d_max] = absorption_probability(pa[d_max, :, :n], pa[d_max, :, n])
    for d in range(d_max - 1, -1, -1):
        h[d] = pa[d, :, n] + pa[d, :, :n] @ h[d + 1]
    return np.asarray(np.clip(h, 0.0, 1.0), dtype=np.float64)


def simulate_hits(
    p: npt.ArrayLike,
    start: int,
    n_runs: int,
    rng: np.random.Generator,
    max_steps: int = 10_000,
) -> float:
    """Monte-Carlo estimate of the hitting probability of HARM from ``start`` at depth 0."""
    pa = np.asarray(p, dtype=np.float64)
    d_max = pa.shape[0] - 1
    n = pa.shape[1]
    cum = np.cumsum(pa, axis=2)
    cum[:, :, -1] = 1.0
    state = np.full(n_runs, start, dtype=np.int64)
    alive = np.ones(n_runs, dtype=bool)
    harm = np.zeros(n_runs, dtype=bool)
    for t in range(max_steps):
        if not alive.any():
            break
        d = min(t, d_max)
        idx = np.flatnonzero(alive)
        u = rng.random(idx.size)
        rows = cum[d, state[idx]]
        nxt = (u[:, None] > rows).sum(axis=1)
        harm[idx[nxt == n]] = True
        alive[idx[nxt >= n]] = False
        state[idx] = np.where(nxt < n, nxt, state[idx])
    return float(harm.mean())


def monotone_in_request(h: npt.ArrayLike, n_request_bins: int) -> FloatArray:
    """``h`` (depth rows x states, the request bin the slowest index of a state) made
    non-decreasing in the request bin, every other component fixed: a request that looks more
    harmful never makes harm less likely. The fitted cells of neighbouring request bins are
    noisy (a bin of templated jailbreaks answered evasively sits between two bins of plain
    harmful requests); the running maximum over the request axis removes that noise in the one
    direction the model's meaning fixes."""
    a = np.asarray(h, dtype=np.float64)
    rows, n = a.shape
    per_bin = n // n_request_bins
    out = np.maximum.accumulate(a.reshape(rows, n_request_bins, per_bin), axis=1)
    return np.asarray(out.reshape(rows, n), dtype=np.float64)
