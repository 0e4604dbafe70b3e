"""Fitting the request-intent probe on a sentence encoder's embeddings (numpy only, no I/O).

The fit receives an :class:`Encoder` (texts in, L2-normalised vectors out; the HTTP client to
vLLM's ``/v1/embeddings`` with its disk cache lives in ``guard.scoring.embeddings`` and is passed
in by the CLI and the build scripts). The probe is trained on the same request texts as the
lexical request scorer (style variants included, ``FitConfig.req_styles``), with the same
cross-fitting folds: every training request's probability is *out-of-fold* (from a probe that
never saw it, nor any phrasing of it), so the chain's cells learn how an unseen request's score
behaves, not how a memorised one does.

The probability's bin is the state's external dimension, fixed for the whole generation (the
request verdict): bin 0 = no verdict (the encoder is down or late: the lexical state alone),
bins 1.. by the edges, placed at quantiles of the out-of-fold scores of both classes so the top
of the benign side, where false halts are decided, is finely cut and harmful requests spread
over several bins instead of jumping at one edge.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from guard.errors import DataError
from guard.risk.probe import CANARY, EncoderSpec, RequestProbe
from guard.training.logreg import Adam, _balanced, _source_weights

FloatArray = npt.NDArray[np.float64]

#: edges at these quantiles of the benign requests' out-of-fold probabilities ...
BENIGN_LEVELS: Final = (0.5, 0.9, 0.98, 0.995)
#: ... and at these of the harmful ones'
HARMFUL_LEVELS: Final = (0.25, 0.5)


@runtime_checkable
class Encoder(Protocol):
    """A sentence encoder: ``embed(texts)`` -> ``(len(texts), dim)`` L2-normalised rows."""

    name: str
    sha256: str
    dim: int
    max_tokens: int

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.floating]: ...


@dataclass(frozen=True, slots=True)
class ProbeFit:
    """The shipped probe, every training text's out-of-fold probability, and the bin edges."""

    probe: RequestProbe
    oof: Mapping[str, float]
    edges: tuple[float, ...]
    #: out-of-fold AUROC on the training texts (report)
    auroc: float | None
    #: with ``FitConfig.probe_lexical_mix``: (a, c, d) of ``guard.tracking.tracker.mix_verdict``;
    #: ``oof``, ``edges`` and ``auroc`` are then of the mixed verdict
    mix: tuple[float, float, float] | None = None

    @property
    def n_bins(self) -> int:
        """``none`` + one bin per interval between edges."""
        return len(self.edges) + 2

    def bin_of(self, p: float) -> int:
        return 1 + int(np.searchsorted(np.asarray(self.edges), p, side="right"))


def embed_checked(encoder: Encoder, texts: Sequence[str]) -> FloatArray:
    """``encoder.embed`` with its contract checked (shape, finite, unit norm)."""
    if not texts:
        return np.zeros((0, encoder.dim))
    m = np.asarray(encoder.embed(list(texts)), dtype=np.float64)
    if m.shape != (len(texts), encoder.dim):
        raise DataError(f"encoder {encoder.name}: {m.shape} embeddings for {len(texts)} texts")
    if not np.all(np.isfinite(m)):
        raise DataError(f"encoder {encoder.name}: embeddings are not finite")
    norms = np.linalg.norm(m, axis=1)
    if np.any(np.abs(norms - 1.0) > 1e-2):
        raise DataError(f"encoder {encoder.name}: embeddings are not L2-normalised")
    return m


def train_dense_logreg(
    x: FloatArray,
    y: FloatArray,
    sw: FloatArray,
    *,
    l2: float,
    iterations: int,
    lr: float = 0.05,
) -> tuple[FloatArray, float]:
    """Weighted L2 logistic regression on dense rows, full-batch Adam (deterministic)."""
    sw = sw / sw.sum()
    w = np.zeros(x.shape[1])
    b = 0.0
    opt = Adam(x.shape[1], lr)
    for _ in range(iterations):
        g = sw * (0.5 * (1.0 + np.tanh(0.5 * (x @ w + b))) - y)
        w, b = opt.step(w, b, x.T @ g + l2 * w, float(g.sum()))
    return w, b


def auroc(pos: FloatArray, neg: FloatArray) -> float | None:
    """Probability that a positive outranks a negative (ties count half)."""
    if pos.size == 0 or neg.size == 0:
        return None
    allv = np.concatenate((pos, neg))
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(allv.size)
    ranks[order] = np.arange(1, allv.size + 1)
    # average ranks of ties
    _, inv, cnt = np.unique(allv, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    ranks = (sums / cnt)[inv]
    r_pos = ranks[: pos.size].sum()
    return float((r_pos - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def bin_edges(
    oof_p: FloatArray,
    y: FloatArray,
    benign_levels: Sequence[float] = BENIGN_LEVELS,
    harmful_levels: Sequence[float] = HARMFUL_LEVELS,
) -> tuple[float, ...]:
    """Edges in (0, 1), strictly increasing: benign quantiles where false halts are decided,
    harmful quantiles so the harmful side has more than one bin."""
    ben, harm = oof_p[y == 0], oof_p[y == 1]
    edges: list[float] = []
    if ben.size:
        edges += np.quantile(ben, list(benign_levels)).tolist()
    if harm.size:
        edges += np.quantile(harm, list(harmful_levels)).tolist()
    out: list[float] = []
    for e in sorted(edges):
        e = float(min(max(e, 1e-6), 1 - 1e-6))
        if not out or e > out[-1] + 1e-6:
            out.append(e)
    return tuple(out)


def phrasing_subspace(
    x: FloatArray, index: Mapping[str, int], pairs: Sequence[tuple[str, str]], dims: int
) -> FloatArray | None:
    """``(dims, d)`` orthonormal rows spanning the directions in which a request's style
    variants differ from it (the top right-singular vectors of the variant - original
    differences): how a text is phrased, not what it asks. None without pairs."""
    rows = [(index[v], index[o]) for v, o in pairs if v in index and o in index and v != o]
    if not rows or dims < 1:
        return None
    a = np.asarray([r[0] for r in rows])
    b = np.asarray([r[1] for r in rows])
    diff = x[a] - x[b]
    _, _, vt = np.linalg.svd(diff, full_matrices=False)
    return np.asarray(vt[: min(dims, vt.shape[0])], dtype=np.float64)


def fit_request_probe(
    encoder: Encoder,
    texts: Sequence[str],
    y: FloatArray,
    sources: Sequence[str],
    text_fold: Mapping[str, int],
    k_folds: int,
    *,
    l2: float = 1e-4,
    iterations: int = 300,
    balance_sources: bool = True,
    step: Callable[[int, int], None] | None = None,
    style_pairs: Sequence[tuple[str, str]] = (),
    style_dims: int = 0,
) -> ProbeFit:
    """Train the probe on ``texts`` (labels ``y``; within each class every source weighs the
    same, as the lexical request scorer is trained), out-of-fold by ``text_fold``.

    With ``style_pairs`` ((variant, original) texts, both in ``texts``) and ``style_dims``, the
    embeddings are first projected off the phrasing subspace (:func:`phrasing_subspace`), so the
    probe's weights are orthogonal to it: serving computes ``w . e`` on the raw embedding, which
    equals ``w`` on the projected one."""
    if not (y.size and 0 < y.sum() < y.size):
        raise DataError("the request probe needs harmful and benign request texts")
    x = embed_checked(encoder, texts)
    u = phrasing_subspace(x, {t: i for i, t in enumerate(texts)}, style_pairs, style_dims)
    if u is not None:
        x = x - (x @ u.T) @ u
    canary = embed_checked(encoder, [CANARY])[0]
    base_w = _source_weights(sources, y) if balance_sources else np.ones(y.size)
    n_steps = 1 + (k_folds if k_folds >= 2 else 0)
    w, b = train_dense_logreg(x, y, _balanced(y, base_w), l2=l2, iterations=iterations)
    if u is not None:
        w = w - (w @ u.T) @ u  # exactly orthogonal (the data already is)
    if step is not None:
        step(1, n_steps)
    spec = EncoderSpec(
        encoder.name, encoder.sha256, encoder.dim, encoder.max_tokens, tuple(canary.tolist())
    )
    probe = RequestProbe(spec, tuple(w.tolist()), float(b))
    oof_p = probe.probs(x)
    if k_folds >= 2:
        folds = np.asarray([text_fold.get(s, 0) for s in texts])
        for f in range(k_folds):
            out = folds == f
            if not out.any():
                continue
            keep = ~out
            yk = y[keep]
            if not (0 < yk.sum() < yk.size):
                continue
            wf, bf = train_dense_logreg(
                x[keep], yk, _balanced(yk, base_w[keep]), l2=l2, iterations=iterations
            )
            z = x[out] @ wf + bf
            oof_p[out] = 0.5 * (1.0 + np.tanh(0.5 * z))
            if step is not None:
                step(f + 2, n_steps)
    oof = dict(zip(texts, oof_p.tolist(), strict=True))
    return ProbeFit(probe, oof, bin_edges(oof_p, y), auroc(oof_p[y == 1], oof_p[y == 0]))
