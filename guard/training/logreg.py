"""Weighted L2 logistic regression on sparse hashed features (numpy only), and the weightings
the fit uses: class-balanced, per-(source, class), and float16 quantisation of the weights that
the artifact stores."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _sigmoid(z: FloatArray) -> FloatArray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)), dtype=np.float64)


class Adam:
    """Full-batch Adam on weights ``w`` (an array) and a scalar bias ``b``, updated in place of
    the caller's values: ``w, b = opt.step(w, b, gw, gb)``."""

    def __init__(self, n: int, lr: float, b1: float = 0.9, b2: float = 0.999) -> None:
        self.lr, self.b1, self.b2, self.eps = lr, b1, b2, 1e-8
        self.mw = np.zeros(n)
        self.vw = np.zeros(n)
        self.mb = self.vb = 0.0
        self.it = 0

    def step(self, w: FloatArray, b: float, gw: FloatArray, gb: float) -> tuple[FloatArray, float]:
        b1, b2, eps = self.b1, self.b2, self.eps
        self.it += 1
        self.mw = b1 * self.mw + (1 - b1) * gw
        self.vw = b2 * self.vw + (1 - b2) * gw * gw
        self.mb = b1 * self.mb + (1 - b1) * gb
        self.vb = b2 * self.vb + (1 - b2) * gb * gb
        c1 = 1 - b1**self.it
        c2 = 1 - b2**self.it
        w -= self.lr * (self.mw / c1) / (np.sqrt(self.vw / c2) + eps)
        b -= self.lr * (self.mb / c1) / (math.sqrt(self.vb / c2) + eps)
        return w, b


def train_logreg(
    doc: IntArray,
    feat: IntArray,
    val: FloatArray,
    y: FloatArray,
    sw: FloatArray,
    n_feat: int,
    *,
    l2: float,
    iterations: int,
    lr: float,
    step: Callable[[int, int], None] | None = None,
) -> tuple[FloatArray, float]:
    """Weighted L2 logistic regression on a sparse (doc, feat, val) matrix, full-batch Adam.

    ``step(done, total)`` is called every 10 iterations (progress)."""
    n_docs = y.shape[0]
    sw = sw / sw.sum()
    w = np.zeros(n_feat)
    b = 0.0
    opt = Adam(n_feat, lr)
    for it in range(1, iterations + 1):
        z = np.asarray(b + np.bincount(doc, weights=val * w[feat], minlength=n_docs), np.float64)
        g = np.asarray(sw * (_sigmoid(z) - y), dtype=np.float64)
        gw = np.bincount(feat, weights=val * g[doc], minlength=n_feat) + l2 * w
        w, b = opt.step(w, b, gw, float(g.sum()))
        if step is not None and (it % 10 == 0 or it == iterations):
            step(it, iterations)
    return w, b


def _sparse_docs(
    docs: Sequence[npt.NDArray[np.int32]],
    vals: Sequence[FloatArray | None] | None = None,
) -> tuple[IntArray, IntArray, FloatArray]:
    """Sparse rows: l1-normalised counts, or (with ``vals``) summed per-feature values."""
    doc_parts, feat_parts, val_parts = [], [], []
    for i, ids in enumerate(docs):
        if ids.size == 0:
            continue
        v = vals[i] if vals is not None else None
        if v is None:
            f, c = np.unique(ids, return_counts=True)
            val_parts.append(np.asarray(c / ids.size, dtype=np.float64))
        else:
            f, inv = np.unique(ids, return_inverse=True)
            val_parts.append(np.asarray(np.bincount(inv, weights=v, minlength=f.size), np.float64))
        doc_parts.append(np.full(f.size, i, dtype=np.int64))
        feat_parts.append(f.astype(np.int64))
    if not doc_parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(doc_parts), np.concatenate(feat_parts), np.concatenate(val_parts)


def _balanced(y: FloatArray, w: FloatArray) -> FloatArray:
    out = w.copy()
    for cls in (0.0, 1.0):
        m = y == cls
        tot = w[m].sum()
        if tot > 0:
            out[m] = w[m] / tot
    return out


def _source_weights(sources: Sequence[str], y: FloatArray) -> FloatArray:
    """Weights giving every (source, class) the same total."""
    cnt = Counter(zip(sources, y.tolist(), strict=True))
    return np.asarray([1.0 / cnt[(s, c)] for s, c in zip(sources, y.tolist(), strict=True)])


def _quantise(w: FloatArray) -> tuple[npt.NDArray[np.float16], FloatArray]:
    q = np.clip(w, -60000, 60000).astype(np.float16)
    return q, q.astype(np.float64)
