"""The scorers stage of ``fit``: the lexical response and request scorers and the request probe.

Takes the checked inputs and the walks (``guard.training.fit``: ``Inputs``, ``Walks``) and gives
the trained scorers, each shipped (quantised) and, with ``cross_fit``, once per fold without it
(out-of-fold scores keep the bins and counts honest):

- ``fit_request_scorer``: hashed n-gram logistic regression on the training prompts (plus extra
  request examples and style variants) -> ``RequestScorerFit``;
- ``attach_request_probe`` (``encoder_probe``): the sentence-encoder probe on the same texts and
  folds (``guard.training.probe_fit``) -> ``ProbeFit``, and every walk's external bin set;
- ``fit_response_scorer``: the response scorer on every training walk's prefixes at
  ``PREFIX_POINTS`` -> ``ResponseScorerFit``.

``word_logits`` / ``walk_logits`` replay a response scorer over a walk exactly as the serving
stream computes it.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from guard.errors import DataError
from guard.tracking import LexicalScorer, request_text, split_words, text_feature_ids
from guard.tracking.lexical import content_words
from guard.tracking.text import PHASE_REFUSING
from guard.tracking.tracker import mix_verdict
from guard.training.embeddings import WordVectors
from guard.training.logreg import (
    _balanced,
    _quantise,
    _source_weights,
    _sparse_docs,
    train_logreg,
)
from guard.training.probe_fit import (
    BENIGN_LEVELS,
    HARMFUL_LEVELS,
    Encoder,
    ProbeFit,
    auroc,
    bin_edges,
    embed_checked,
    fit_request_probe,
)
from guard.training.styles import restyle
from guard.training.trajectories import Trajectory

if TYPE_CHECKING:  # guard.training.fit imports this module
    from guard.training.fit import FitConfig, Inputs, Progress, RequestExample, Steps, Walk, Walks

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

#: the response scorer trains on every walk's prefixes after these many tokens (and the whole)
PREFIX_POINTS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


# -- a response scorer over a walk (the serving stream's recursion) -------------------------


def word_logits(
    walk: Walk, w: FloatArray, bias: float, decay: float = 1.0, u: FloatArray | None = None
) -> FloatArray:
    """Score after k completed words, k = 0..n_words (the serving stream's recursion).

    ``u``: the embedding word table by vocabulary row (a vocabulary word adds ``u`` and counts
    as one more feature)."""
    wend = walk.wend
    if wend is None or wend.size == 0:
        return np.full(1, bias)
    cs = np.concatenate(([0.0], np.cumsum(w[walk.ids])))
    ends = cs[wend]
    s_w = np.diff(np.concatenate(([0.0], ends)))
    m_w = np.diff(np.concatenate(([0], wend))).astype(np.float64)
    if u is not None and walk.wrow is not None:
        known = walk.wrow >= 0
        s_w = s_w + np.where(known, u[np.maximum(walk.wrow, 0)], 0.0)
        m_w = m_w + known
    out = np.empty(wend.size + 1)
    out[0] = bias
    if decay == 1.0:
        out[1:] = bias + np.cumsum(s_w) / np.cumsum(m_w)
        return out
    num = den = 0.0
    vals = []
    for sj, mj in zip(s_w.tolist(), m_w.tolist(), strict=True):
        num = decay * num + sj
        den = decay * den + mj
        vals.append(num / den)
    out[1:] = bias + np.asarray(vals)
    return out


def walk_logits(
    walk: Walk, w: FloatArray, bias: float, decay: float = 1.0, u: FloatArray | None = None
) -> FloatArray:
    """Score after t generated tokens, t = 0..T."""
    assert walk.nw is not None
    return np.asarray(word_logits(walk, w, bias, decay, u)[walk.nw], dtype=np.float64)


# -- cross-fitting folds --------------------------------------------------------------------


def _fold(key: str, k: int) -> int:
    return zlib.crc32(f"fold:{key.split('#rot')[0]}".encode()) % k


def source_folds(sources: Sequence[str], k: int) -> dict[str, int]:
    """Whole sources to ``k`` folds of about equal size (largest first, to the lightest fold)."""
    sizes = Counter(sources)
    load = [0] * k
    out: dict[str, int] = {}
    for name, n in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0])):
        f = min(range(k), key=load.__getitem__)
        out[name] = f
        load[f] += n
    return out


# -- shared by the scorers' training --------------------------------------------------------


def _stepper(steps: Steps | None, label: str) -> Callable[[int, int], None] | None:
    if steps is None:
        return None
    return lambda done, total: steps(label, done, total)


def _word_weights(
    vec: FloatArray | None, w_e: FloatArray | None
) -> tuple[npt.NDArray[np.float16] | None, FloatArray | None]:
    """The embedding read-out ``w_e`` as a quantised per-word table (vocabulary order)."""
    if w_e is None or vec is None:
        return None, None
    return _quantise(vec @ w_e)


# -- response scorer ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResponseScorerFit:
    """The response scorer as shipped (quantised) and, with cross-fitting, per fold."""

    w16: npt.NDArray[np.float16]
    w: FloatArray
    bias: float
    #: embedding word table (by vocabulary row), when the response scorer reads embeddings
    u16: npt.NDArray[np.float16] | None
    u: FloatArray | None
    #: out-of-fold (weights, bias, word table) by fold; empty without cross-fitting
    oof: dict[int, tuple[FloatArray, float, FloatArray | None]]
    k_folds: int
    decay: float
    #: fold of every source, when folds are whole sources (``cross_fit_by="source"``)
    source_fold: dict[str, int] | None = None

    def fold(self, wk: Walk) -> int:
        if self.source_fold is not None:
            return self.source_fold.get(wk.source, 0)
        return _fold(wk.tid, self.k_folds)

    def logits(self, wk: Walk) -> FloatArray:
        """The shipped scorer's score after t tokens (held-back walks)."""
        return walk_logits(wk, self.w, self.bias, self.decay, self.u)

    def train_logits(self, wk: Walk) -> FloatArray:
        """A training walk's scores: out-of-fold when cross-fitting (honest bins and counts)."""
        if self.oof:
            wf, bf, uf = self.oof[self.fold(wk)]
            return walk_logits(wk, wf, bf, self.decay, uf)
        return self.logits(wk)


def fit_response_scorer(
    inp: Inputs, walks: Walks, cfg: FitConfig, say: Progress, steps: Steps | None
) -> ResponseScorerFit:
    """Train the response scorer on the training walks (not the augmented ones); with
    ``cross_fit``, also once without each fold."""
    resp_vec = inp.vec if cfg.resp_embed else None
    if inp.use_lex:
        say("training the response scorer")
        w_raw, resp_bias, resp_we = _train_response(
            walks.train, cfg, resp_vec, _stepper(steps, "training the response scorer")
        )
    else:
        w_raw, resp_bias, resp_we = np.zeros(1 << cfg.resp_buckets_log2), 0.0, None
    resp_w16, resp_w = _quantise(w_raw)
    resp_u16, resp_u = _word_weights(inp.vec, resp_we)
    # out-of-fold scorer weights for the training walks (honest bins and counts)
    oof_resp: dict[int, tuple[FloatArray, float, FloatArray | None]] = {}
    k_folds = inp.k_folds
    by_source = (
        source_folds([wk.source for wk in walks.train], k_folds)
        if k_folds and cfg.cross_fit_by == "source"
        else None
    )
    fit = ResponseScorerFit(
        resp_w16, resp_w, resp_bias, resp_u16, resp_u, oof_resp, k_folds, cfg.resp_decay, by_source
    )
    if inp.use_lex and k_folds:
        for f in range(k_folds):
            say(f"  cross-fit response scorer, fold {f + 1}/{k_folds}")
            wf, bf, wef = _train_response(
                [wk for wk in walks.train if fit.fold(wk) != f], cfg, resp_vec
            )
            oof_resp[f] = (_quantise(wf)[1], bf, _word_weights(inp.vec, wef)[1])
    return fit


def _response_docs(
    walks: Sequence[Walk], cfg: FitConfig, vectors: FloatArray | None = None
) -> tuple[
    list[npt.NDArray[np.int32]], list[FloatArray | None], FloatArray, FloatArray, FloatArray | None
]:
    """Training documents of the response scorer: each walk's prefixes at ``PREFIX_POINTS``.

    With ``vectors``, also each document's summed word vectors and vocabulary-word count
    (column ``-1``) for the embedding read-out."""
    docs, ys, sws = [], [], []
    vals: list[FloatArray | None] = []
    dense: list[FloatArray] = []
    g = cfg.resp_decay
    per_src = Counter((wk.source, wk.harmful) for wk in walks)
    risky_from = cfg.n_request_bins - cfg.resp_risky_bins
    for wk in walks:
        tw = wk.weight / per_src[(wk.source, wk.harmful)] if cfg.balance_sources else wk.weight
        if (
            cfg.resp_risky_weight != 1.0
            and wk.req_bin >= risky_from
            and int(wk.phase[-1]) != PHASE_REFUSING
        ):
            tw *= cfg.resp_risky_weight
        t_eff = wk.nf.size - 1
        assert wk.nw is not None and wk.wend is not None
        pts = sorted({p for p in PREFIX_POINTS if p <= t_eff} | {t_eff})
        nws = sorted({int(wk.nw[p]) for p in pts if wk.nw[p] > 0})
        widx = None
        if g != 1.0 and nws:
            m = np.diff(np.concatenate(([0], wk.wend)))
            widx = np.repeat(np.arange(wk.wend.size), m)
        cum = None
        if vectors is not None and wk.wrow is not None and nws:
            known = wk.wrow >= 0
            rows = np.where(known[:, None], vectors[np.maximum(wk.wrow, 0)], 0.0)
            ext = np.concatenate((rows, known[:, None].astype(np.float64)), axis=1)
            cum = np.cumsum(ext, axis=0)
        for k in nws:
            nf = int(wk.wend[k - 1])
            docs.append(wk.ids[:nf])
            if widx is None:
                vals.append(None)
            else:
                v = g ** (k - 1 - widx[:nf]).astype(np.float64)
                vals.append(v / v.sum())
            if vectors is not None:
                dense.append(
                    cum[k - 1] if cum is not None else np.zeros(vectors.shape[1] + 1, np.float64)
                )
            ys.append(1.0 if wk.harmful else 0.0)
            sws.append(tw / len(nws))
    dmat = np.asarray(dense, dtype=np.float64) if vectors is not None else None
    return docs, vals, np.asarray(ys), np.asarray(sws), dmat


def _join_dense(
    doc: IntArray,
    feat: IntArray,
    val: FloatArray,
    n_ids: FloatArray,
    dense: FloatArray,
    n_hash: int,
) -> tuple[IntArray, IntArray, FloatArray]:
    """Hashed part re-normalised by (features + vocabulary words), plus the mean-vector columns.

    ``dense[:, :-1]`` are summed word vectors, ``dense[:, -1]`` the vocabulary-word count: serving
    counts every vocabulary word as one more feature, so both parts share that denominator."""
    total = n_ids + dense[:, -1]
    safe = np.where(total > 0, total, 1.0)
    val = val * (n_ids / safe)[doc]
    n_docs, d1 = dense.shape
    dd = np.repeat(np.arange(n_docs, dtype=np.int64), d1 - 1)
    ff = np.tile(np.arange(n_hash, n_hash + d1 - 1, dtype=np.int64), n_docs)
    vv = (dense[:, :-1] / safe[:, None]).reshape(-1)
    return (
        np.concatenate((doc, dd)),
        np.concatenate((feat, ff)),
        np.concatenate((val, vv)),
    )


def _train_response(
    walks: Sequence[Walk],
    cfg: FitConfig,
    vectors: FloatArray | None = None,
    step: Callable[[int, int], None] | None = None,
) -> tuple[FloatArray, float, FloatArray | None]:
    """Hashed weights, bias and (with ``vectors``) the embedding read-out ``w_e``."""
    n_hash = 1 << cfg.resp_buckets_log2
    docs, vals, y, sw, dense = _response_docs(walks, cfg, vectors)
    if y.size == 0 or not 0 < y.sum() < y.size:
        return np.zeros(n_hash), 0.0, None if vectors is None else np.zeros(vectors.shape[1])
    doc, feat, val = _sparse_docs(docs, vals)
    n_feat = n_hash
    if dense is not None and vectors is not None:
        n_ids = np.asarray([d.size for d in docs], dtype=np.float64)
        doc, feat, val = _join_dense(doc, feat, val, n_ids, dense, n_hash)
        n_feat += vectors.shape[1]
    w, b = train_logreg(
        doc,
        feat,
        val,
        y,
        _balanced(y, sw),
        n_feat,
        l2=cfg.l2,
        iterations=cfg.iterations,
        lr=cfg.learning_rate,
        step=step,
    )
    return w[:n_hash], b, (w[n_hash:] if vectors is not None else None)


# -- request scorer -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestScorerFit:
    """The request scorer, its training texts and, with cross-fitting, per-fold scorers."""

    texts: list[str]
    y: FloatArray
    w16: npt.NDArray[np.float16]
    bias: float
    u16: npt.NDArray[np.float16] | None
    scorer: LexicalScorer
    #: fold of every training text, and the scorer fitted without that fold
    text_fold: dict[str, int]
    oof: dict[int, LexicalScorer]
    #: the source of every training text (``texts`` order)
    sources: tuple[str, ...] = ()

    def logit(self, text: str, oof: bool) -> float:
        if oof and text in self.text_fold:
            return self.oof[self.text_fold[text]].score_text(text)
        return self.scorer.score_text(text)


def fit_request_scorer(
    inp: Inputs,
    cfg: FitConfig,
    requests: Sequence[RequestExample],
    embeddings: WordVectors | None,
    say: Progress,
    steps: Steps | None,
) -> RequestScorerFit:
    """Train the request scorer on the training prompts plus ``requests``; with ``cross_fit``,
    also once without each fold of the texts."""
    say("training the request scorer")
    texts, ry, rsrc = _request_examples(inp.train, requests, cfg.req_max_chars, cfg.req_last_user)
    #: the request each text renders (itself, or the request a style variant was made from)
    group = {s: s for s in texts}
    if cfg.req_styles > 0:
        texts, ry, rsrc, group = _restyled(texts, ry, rsrc, cfg.req_styles)
    req_vec = inp.vec if cfg.req_embed else None
    rw_raw, req_bias, req_we = _train_request(
        texts, ry, rsrc, cfg, req_vec, inp.emb_index, _stepper(steps, "training the request scorer")
    )
    req_w16, req_w = _quantise(rw_raw)
    req_u16, req_u = _word_weights(inp.vec, req_we)

    def scorer(w: FloatArray, bias: float, u: FloatArray | None) -> LexicalScorer:
        # the shipped scorer and every out-of-fold one score texts the same way
        return LexicalScorer(
            w.tolist(),
            bias,
            char_ngrams=cfg.req_char_ngrams,
            word_table=_word_table(embeddings, u),
            norm=cfg.req_norm,
            window=cfg.req_window,
            content_only=cfg.req_content_only,
        )

    req_scorer = scorer(req_w, req_bias, req_u)
    text_fold: dict[str, int] = {}
    oof_req: dict[int, LexicalScorer] = {}
    if inp.k_folds:
        if cfg.cross_fit_by == "source":
            by_source = source_folds(rsrc, inp.k_folds)
            text_fold = {s: by_source[src] for s, src in zip(texts, rsrc, strict=True)}
        else:
            text_fold = {s: _fold(group[s], inp.k_folds) for s in texts}
        for f in range(inp.k_folds):
            keep = [i for i, s in enumerate(texts) if text_fold[s] != f]
            wf, bf, wef = _train_request(
                [texts[i] for i in keep],
                ry[keep],
                [rsrc[i] for i in keep],
                cfg,
                req_vec,
                inp.emb_index,
            )
            oof_req[f] = scorer(_quantise(wf)[1], bf, _word_weights(inp.vec, wef)[1])
    return RequestScorerFit(
        texts, ry, req_w16, req_bias, req_u16, req_scorer, text_fold, oof_req, tuple(rsrc)
    )


def _request_examples(
    trajs: Sequence[Trajectory],
    extra: Sequence[RequestExample],
    max_chars: int = 0,
    last_user: bool = False,
) -> tuple[list[str], FloatArray, list[str]]:
    labels: dict[str, bool] = {}
    sources: dict[str, str] = {}
    for t in trajs:
        text = request_text(t.prompt, max_chars, last_user)
        rl = t.meta.get("request_label")
        harmful = rl == "harmful" if rl in ("harmful", "benign") else t.harmful
        labels[text] = labels.get(text, False) or harmful
        sources.setdefault(text, t.source)
    for ex in extra:
        text = ex.text[-max_chars:] if max_chars else ex.text
        labels[text] = labels.get(text, False) or ex.harmful
        sources.setdefault(text, ex.source)
    texts = [k for k in labels if k.strip()]
    y = np.asarray([1.0 if labels[k] else 0.0 for k in texts])
    return texts, y, [sources[k] for k in texts]


def _restyled(
    texts: list[str], ry: FloatArray, rsrc: list[str], n: int
) -> tuple[list[str], FloatArray, list[str], dict[str, str]]:
    """``texts`` plus up to ``n`` style variants of each (same label and source); a variant
    that is also a text of its own (or of the other label) is not added twice."""
    group = {s: s for s in texts}
    out_t, out_y, out_s = list(texts), ry.tolist(), list(rsrc)
    for s, yy, src in zip(texts, ry.tolist(), rsrc, strict=True):
        for v in restyle(s, n):
            if v in group:
                continue
            group[v] = s
            out_t.append(v)
            out_y.append(yy)
            out_s.append(src)
    return out_t, np.asarray(out_y), out_s, group


def _word_table(embeddings: WordVectors | None, u: FloatArray | None) -> dict[str, float] | None:
    if u is None or embeddings is None:
        return None
    return dict(zip(embeddings.words, u.tolist(), strict=True))


def _train_request(
    texts: Sequence[str],
    ry: FloatArray,
    rsrc: Sequence[str],
    cfg: FitConfig,
    vectors: FloatArray | None = None,
    word_index: dict[str, int] | None = None,
    step: Callable[[int, int], None] | None = None,
) -> tuple[FloatArray, float, FloatArray | None]:
    n_hash = 1 << cfg.req_buckets_log2
    rmask = n_hash - 1
    if not (ry.size and 0 < ry.sum() < ry.size):
        return np.zeros(n_hash), 0.0, None if vectors is None else np.zeros(vectors.shape[1])
    rdocs = [
        np.asarray(
            text_feature_ids(s, rmask, cfg.req_char_ngrams, cfg.req_content_only), dtype=np.int32
        )
        for s in texts
    ]
    rdoc, rfeat, rval = _sparse_docs(rdocs)
    if cfg.req_norm == "l2":
        n_distinct = np.bincount(rdoc, minlength=len(texts)).astype(np.float64)
        rval = 1.0 / np.sqrt(np.maximum(n_distinct, 1.0))[rdoc]
    n_feat = n_hash
    if vectors is not None and word_index is not None:
        dense = np.zeros((len(texts), vectors.shape[1] + 1))
        for i, s in enumerate(texts):
            words = split_words(s)
            if cfg.req_content_only:
                words = content_words(words)
            rows = [r for r in (word_index.get(w, -1) for w in words) if r >= 0]
            if rows:
                dense[i, :-1] = vectors[rows].sum(axis=0)
                dense[i, -1] = len(rows)
        if cfg.req_norm == "l2":
            known = np.maximum(dense[:, -1], 1.0)
            dd = np.repeat(np.arange(len(texts), dtype=np.int64), vectors.shape[1])
            ff = np.tile(np.arange(n_hash, n_hash + vectors.shape[1], dtype=np.int64), len(texts))
            vv = (dense[:, :-1] / known[:, None]).reshape(-1)
            rdoc, rfeat, rval = (
                np.concatenate((rdoc, dd)),
                np.concatenate((rfeat, ff)),
                np.concatenate((rval, vv)),
            )
        else:
            n_ids = np.asarray([d.size for d in rdocs], dtype=np.float64)
            rdoc, rfeat, rval = _join_dense(rdoc, rfeat, rval, n_ids, dense, n_hash)
        n_feat += vectors.shape[1]
    w, b = train_logreg(
        rdoc,
        rfeat,
        rval,
        ry,
        _balanced(ry, _source_weights(rsrc, ry) if cfg.balance_sources else np.ones(ry.size)),
        n_feat,
        l2=cfg.l2 if cfg.req_l2 is None else cfg.req_l2,
        iterations=cfg.iterations,
        lr=cfg.learning_rate,
        step=step,
    )
    return w[:n_hash], b, (w[n_hash:] if vectors is not None else None)


# -- the request probe ----------------------------------------------------------------------


def attach_request_probe(
    inp: Inputs,
    walks: Walks,
    req: RequestScorerFit,
    encoder: Encoder,
    cfg: FitConfig,
    say: Progress,
    steps: Steps | None,
) -> ProbeFit:
    """Train the request probe on the request scorer's texts and folds; set every walk's
    external bin for its whole length: training and augmented walks from their request's
    out-of-fold probability, held-back ones from the shipped probe's."""
    texts, y = list(req.texts), req.y
    sources = list(req.sources or ("" for _ in req.texts))
    text_fold = dict(req.text_fold)
    variant_of: dict[str, str] = {}
    if cfg.probe_styles > 0:
        texts, y, sources, variant_of = _restyled(texts, y, sources, cfg.probe_styles)
        for v, orig in variant_of.items():
            if v not in text_fold and orig in text_fold:
                text_fold[v] = text_fold[orig]
    say(f"request probe on {encoder.name}: embedding {len(texts)} request texts")
    pf = fit_request_probe(
        encoder,
        texts,
        y,
        sources,
        text_fold,
        inp.k_folds,
        l2=cfg.probe_l2,
        iterations=cfg.probe_iterations,
        balance_sources=cfg.balance_sources,
        step=_stepper(steps, "training the request probe"),
        style_pairs=[(v, o) for v, o in variant_of.items() if v != o],
        style_dims=cfg.probe_style_dims,
    )
    if cfg.probe_lexical_mix:
        pf = mix_with_lexical(pf, req, cfg.probe_benign_levels, cfg.probe_harmful_levels)
    others = sorted({wk.req_text for wk in walks.held + walks.train + walks.aug} - set(pf.oof))
    shipped: dict[str, float] = {}
    if others:
        shipped = dict(
            zip(others, pf.probe.probs(embed_checked(encoder, others)).tolist(), strict=True)
        )
        if pf.mix is not None:
            mix = pf.mix
            shipped = {s: mix_verdict(mix, p, req.scorer.score_text(s)) for s, p in shipped.items()}
    for group, oof in ((walks.train, True), (walks.aug, True), (walks.held, False)):
        for wk in group:
            p = pf.oof.get(wk.req_text) if oof else None
            if p is None:
                p = shipped.get(wk.req_text)
            if p is None:  # a held-back walk whose request is also a training text
                p = float(pf.probe.probs(embed_checked(encoder, [wk.req_text]))[0])
                if pf.mix is not None:
                    p = mix_verdict(pf.mix, p, req.scorer.score_text(wk.req_text))
                shipped[wk.req_text] = p
            wk.ext = np.full(wk.nf.size, pf.bin_of(p), dtype=np.int8)
    say(f"request probe: out-of-fold AUROC {pf.auroc}, {len(pf.edges)} edges")
    return pf


def mix_with_lexical(
    pf: ProbeFit,
    req: RequestScorerFit,
    benign_levels: Sequence[float] = BENIGN_LEVELS,
    harmful_levels: Sequence[float] = HARMFUL_LEVELS,
) -> ProbeFit:
    """``pf`` with its verdict mixed with the lexical request scorer's logit: both logits
    standardised on the benign training requests' out-of-fold scores, then averaged
    (``guard.tracking.tracker.mix_verdict``). Edges and AUROC of the mixed verdict, from the
    request scorer's own texts (out of fold on both sides)."""
    texts = [t for t in req.texts if t in pf.oof]
    y = np.asarray([req.y[i] for i, t in enumerate(req.texts) if t in pf.oof])
    p = np.clip(np.asarray([pf.oof[t] for t in texts]), 1e-12, 1 - 1e-12)
    zp = np.log(p / (1.0 - p))
    zl = np.asarray([req.logit(t, True) for t in texts])
    ben = y == 0
    if not (ben.any() and (~ben).any()):
        raise DataError("mixing the verdict needs benign and harmful request texts")
    sp = max(float(zp[ben].std()), 1e-6)
    sl = max(float(zl[ben].std()), 1e-6)
    mix = (0.5 / sp, 0.5 / sl, -0.5 * (float(zp[ben].mean()) / sp + float(zl[ben].mean()) / sl))
    mixed = np.asarray([mix_verdict(mix, pi, li) for pi, li in zip(p, zl, strict=True)])
    oof = dict(pf.oof)
    oof.update(zip(texts, mixed.tolist(), strict=True))
    # a style variant that is not a request scorer text: mixed with the shipped lexical score
    for t in set(pf.oof) - set(texts):
        oof[t] = mix_verdict(mix, pf.oof[t], req.scorer.score_text(t))
    edges = bin_edges(mixed, y, benign_levels, harmful_levels)
    return ProbeFit(pf.probe, oof, edges, auroc(mixed[~ben], mixed[ben]), mix)
