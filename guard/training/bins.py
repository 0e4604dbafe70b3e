"""The bins stage of ``fit``: request-score and response-score bins, the state space, walk states.

Takes the walks and the scorers (``RequestScorerFit``, ``ResponseScorerFit``, the probe's
``ProbeFit``) and gives

- ``assign_request_bins``: the request-score edges (by ``request_bin_mode``), every walk's
  ``req_bin`` set (training walks by their out-of-fold score);
- ``response_bins`` -> ``Bins``: per-depth edges of the training walks' (out-of-fold) response
  scores (by ``bin_mode``), the certain ("HARM-like") rule, the ``StateSpace`` and every training
  walk's states (``walk_states``), which the chain stage counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from guard.tracking import StateSpace
from guard.tracking.text import N_PHASES
from guard.training.probe_fit import ProbeFit
from guard.training.scorer_fit import RequestScorerFit, ResponseScorerFit

if TYPE_CHECKING:  # guard.training.fit imports this module
    from guard.training.fit import FitConfig, Inputs, Progress, Walk, Walks

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


# -- request bins ---------------------------------------------------------------------------


def assign_request_bins(walks: Walks, req: RequestScorerFit, cfg: FitConfig) -> FloatArray:
    """The request-score edges; sets every walk's ``req_bin`` (training and augmented walks by
    their out-of-fold score, held-back ones by the shipped scorer's). Returns the edges."""
    if cfg.request_bin_mode == "two-sided" and cfg.n_request_bins > 2:
        req_edges = _two_sided_edges(req, cfg.n_request_bins)
    elif cfg.request_bin_mode == "benign-tail" and cfg.n_request_bins > 1:
        benign_req = np.asarray(
            [req.logit(s, True) for s, yy in zip(req.texts, req.y.tolist(), strict=True) if yy == 0]
        )
        levels = _tail_levels(cfg.n_request_bins - 1, 0.5, 0.2, top_is_max=False)
        req_edges = np.quantile(benign_req, levels) if benign_req.size else np.zeros(len(levels))
    else:
        probs = np.linspace(0, 1, cfg.n_request_bins + 1)[1:-1]
        req_edges = np.log(probs / (1 - probs)) if probs.size else np.zeros(0)
    _set_request_bins(walks.train, req_edges, req, True)
    _set_request_bins(walks.aug, req_edges, req, True)
    _set_request_bins(walks.held, req_edges, req, False)
    return np.asarray(req_edges, dtype=np.float64)


#: "two-sided" request bins: edges at these quantiles of the benign requests' out-of-fold scores
#: (fine in their tail, where false halts are decided) ...
TWO_SIDED_BENIGN: Final = (0.5, 0.9, 0.98, 0.995, 0.999)


#: ... and at these of the harmful requests' (so harmful requests spread over several bins and h
#: rises with the request score instead of jumping at one edge)
TWO_SIDED_HARMFUL: Final = (0.1, 0.25, 0.5, 0.75)


def _two_sided_edges(req: RequestScorerFit, n_bins: int) -> FloatArray:
    """``n_bins - 1`` edges: the first of ``TWO_SIDED_BENIGN`` and ``TWO_SIDED_HARMFUL`` (about
    half each), from out-of-fold scores; sorted, equal edges moved apart."""
    n_edges = n_bins - 1
    n_harm = min(len(TWO_SIDED_HARMFUL), n_edges // 2)
    n_ben = min(len(TWO_SIDED_BENIGN), n_edges - n_harm)
    ys = req.y.tolist()
    scores = np.asarray([req.logit(s, True) for s in req.texts])
    yv = np.asarray(ys)
    ben, harm = scores[yv == 0], scores[yv == 1]
    edges: list[float] = []
    if ben.size:
        edges += np.quantile(ben, TWO_SIDED_BENIGN[:n_ben]).tolist()
    if harm.size:
        lv = np.linspace(TWO_SIDED_HARMFUL[0], TWO_SIDED_HARMFUL[-1], n_harm)
        edges += np.quantile(harm, lv).tolist() if n_harm else []
    while len(edges) < n_edges:
        edges.append((edges[-1] if edges else 0.0) + 1.0)
    out = np.sort(np.asarray(edges[:n_edges], dtype=np.float64))
    for i in range(1, out.size):  # strictly increasing: every bin can be reached
        out[i] = max(out[i], out[i - 1] + 1e-6)
    return out


def _set_request_bins(
    ws: list[Walk], req_edges: FloatArray, req: RequestScorerFit, oof: bool
) -> None:
    cache: dict[str, int] = {}
    for wk in ws:
        b = cache.get(wk.req_text)
        if b is None:
            b = int(np.searchsorted(req_edges, req.logit(wk.req_text, oof), "right"))
            cache[wk.req_text] = b
        wk.req_bin = b


def _tail_levels(n_edges: int, first: float, ratio: float, top_is_max: bool) -> list[float]:
    """Quantile levels 1 - first, 1 - first*ratio, ... (the last one the maximum if asked)."""
    levels = [1.0 - first * ratio**i for i in range(n_edges)]
    if top_is_max and n_edges >= 2:
        levels[-1] = 1.0
    return levels


# -- response bins, state space, certain rule -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Bins:
    """Response-score bins per depth, the state space and the certain ("HARM-like") rule."""

    n_risk_bins: int
    edges: FloatArray
    certain_logit: float
    certain_min: int
    n_ext: int
    space: StateSpace
    #: scores and states of the training walks (``Walks.all_train`` order)
    logits: list[FloatArray]
    states: list[IntArray]
    #: a verdict replaces the lexical request bin (``FitConfig.probe_replaces_request``)
    replaces_request: bool = False


def response_bins(
    inp: Inputs,
    walks: Walks,
    resp: ResponseScorerFit,
    cfg: FitConfig,
    say: Progress,
    probe: ProbeFit | None = None,
) -> Bins:
    """Per-depth edges of the training walks' (out-of-fold) scores, the certain rule, the state
    space, and every training walk's states."""
    say("binning")
    all_train = walks.all_train
    logits_all = [resp.train_logits(wk) for wk in all_train]
    logits_train = logits_all[: len(walks.train)]
    lg = np.concatenate(logits_train)
    dd = np.concatenate([np.minimum(np.arange(x.size), cfg.depth) for x in logits_train])
    benign_mask = np.concatenate([np.full(wk.nf.size, not wk.harmful) for wk in walks.train])
    n_risk_bins = cfg.n_risk_bins if inp.use_lex else 1
    if not inp.use_lex:
        edges = np.zeros((cfg.depth + 1, 0))
    elif cfg.bin_mode == "benign-tail":
        edges = _benign_tail_edges(lg, dd, benign_mask, cfg.depth, n_risk_bins)
    else:
        edges = _quantile_edges(lg, dd, cfg.depth, n_risk_bins, top=cfg.bin_mode == "top")
    certain_logit, certain_min = _certain_rule(inp, walks.train, lg, benign_mask, cfg)
    n_ext = probe.n_bins if probe is not None else cfg.external.n_bins if inp.use_ext else 1
    space = StateSpace(cfg.n_request_bins, n_risk_bins, n_ext, N_PHASES)
    states_train = [
        walk_states(wk, lgt, edges, space, probe is not None and cfg.probe_replaces_request)
        for wk, lgt in zip(all_train, logits_all, strict=True)
    ]
    return Bins(
        n_risk_bins,
        edges,
        certain_logit,
        certain_min,
        n_ext,
        space,
        logits_all,
        states_train,
        probe is not None and cfg.probe_replaces_request,
    )


def _benign_tail_edges(
    lg: FloatArray, dd: FloatArray, benign: npt.NDArray[np.bool_], depth: int, n_bins: int
) -> FloatArray:
    levels = _tail_levels(n_bins - 1, 0.5, 0.5, top_is_max=True)
    edges = np.zeros((depth + 1, n_bins - 1))
    for d in range(depth + 1):
        m = (dd == d) & benign
        if m.sum() >= 2:
            edges[d] = np.quantile(lg[m], levels)
        elif d > 0:
            edges[d] = edges[d - 1]
    return edges


def _top_levels(n_edges: int) -> FloatArray:
    """Quantile levels fine at the top: a third of the edges at 1/4, 1/2, ..., the rest at
    1 - 0.2 * 0.6^i (0.88, 0.928, 0.957, ...), where halting decisions are made."""
    n_lin = max(1, n_edges // 3)
    lin = np.linspace(0, 0.8, n_lin + 1)[1:]
    tail = 1 - 0.2 * 0.6 ** np.arange(1, n_edges - n_lin + 1)
    return np.concatenate((lin, tail))


def _quantile_edges(
    lg: FloatArray, dd: FloatArray, depth: int, n_bins: int, top: bool = False
) -> FloatArray:
    qs = _top_levels(n_bins - 1) if top else np.linspace(0, 1, n_bins + 1)[1:-1]
    edges = np.zeros((depth + 1, n_bins - 1))
    for d in range(depth + 1):
        m = dd == d
        if m.any():
            edges[d] = np.quantile(lg[m], qs)
        elif d > 0:
            edges[d] = edges[d - 1]
    return edges


def _certain_rule(
    inp: Inputs,
    train_w: Sequence[Walk],
    lg: FloatArray,
    benign_mask: npt.NDArray[np.bool_],
    cfg: FitConfig,
) -> tuple[float, int]:
    """(logit, minimum features) of the certain rule (1e9: off)."""
    # HARM-like: beyond every benign training prefix with enough words
    nf_all = np.concatenate([wk.n_features() for wk in train_w])
    # "enough words" in features: cfg.certain_min_features counts word uni+bigram features (2 per
    # word); with character n-grams a word has more, so scale by the mean features per word
    n_words_tot = sum(int(wk.wend.size) for wk in train_w if wk.wend is not None)
    n_feat_tot = sum(int(wk.n_features()[-1]) for wk in train_w)
    per_word = n_feat_tot / n_words_tot if n_words_tot else 2.0
    certain_min = max(1, round(cfg.certain_min_features * per_word / 2.0))
    ok = (nf_all >= certain_min) & benign_mask
    certain_logit = (
        float(lg[ok].max() + cfg.certain_margin)
        if ok.any() and inp.use_lex and cfg.certain_rule
        else 1e9
    )
    return certain_logit, certain_min


def walk_states(
    walk: Walk,
    logits: FloatArray,
    edges: FloatArray,
    space: StateSpace,
    ext_replaces_request: bool = False,
) -> IntArray:
    d_max = edges.shape[0] - 1
    t = np.arange(logits.size)
    d = np.minimum(t, d_max)
    bins = np.empty(logits.size, dtype=np.int64)
    for dd in np.unique(d):
        m = d == dd
        bins[m] = np.searchsorted(edges[dd], logits[m], side="right")
    req = np.full(logits.size, walk.req_bin, dtype=np.int64)
    if ext_replaces_request and walk.ext is not None:
        req[walk.ext > 0] = 0  # a verdict in force replaces the lexical request bin
    st = (
        (req * space.n_phases + walk.phase.astype(np.int64)) * space.n_risk_bins + bins
    ) * space.n_external_bins
    if space.n_external_bins > 1 and walk.ext is not None:
        st = st + walk.ext.astype(np.int64)
    return np.asarray(st, dtype=np.int64)
