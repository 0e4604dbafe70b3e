"""Fitting a risk model from labelled trajectories (``guard fit``).

Pipeline: extract per-token walks (feature ids, phase) -> train the lexical scorers (hashed-feature
logistic regression, numpy) -> quantise weights -> per-depth quantile bins -> count depth-indexed
transitions (HARM at onset or at the end of a harmful trajectory, END at the end of a safe one,
nothing at the end of a censored one) -> Dirichlet smoothing with back-off -> tables.

``fit`` runs it as a pipeline of stages, each handing the next a frozen value: ``check_inputs``
(-> ``Inputs``), ``extract_walks`` (-> ``Walks``), ``fit_response_scorer`` (->
``ResponseScorerFit``), ``fit_request_scorer`` (-> ``RequestScorerFit``), ``assign_request_bins``,
``response_bins`` (-> ``Bins``), ``count_transitions``, ``build_artifact`` (-> ``Artifact``),
``score_held_back`` (-> ``HeldBack``), ``choose_scorer_rule`` (-> ``ScorerRule``),
``choose_threshold`` (-> ``Threshold``) and ``fit_report``.
"""

from __future__ import annotations

import datetime as _dt
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from guard.errors import DataError
from guard.risk.chain import END_FLOOR
from guard.risk.model import RiskModel
from guard.tracking import (
    LexicalScorer,
    StateSpace,
    request_text,
    split_words,
    text_feature_ids,
)
from guard.tracking.lexical import content_words
from guard.tracking.text import N_PHASES, PHASE_REFUSING, context_secrets, leak_watch
from guard.training.embeddings import WordVectors, vocab_array
from guard.training.external import (
    SCORER_MODES,
    ExternalScorer,
    ExternalSpec,
    ext_bin_series,
    prefix_texts,
    score_all,
    verdict_points,
)
from guard.training.logreg import (
    _balanced,
    _quantise,
    _source_weights,
    _sparse_docs,
    train_logreg,
)
from guard.training.phrases import cyclic_rotations
from guard.training.probe_fit import Encoder, ProbeFit, embed_checked, fit_request_probe
from guard.training.report_text import _summary, json_safe
from guard.training.styles import restyle
from guard.training.trajectories import Trajectory

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
Progress = Callable[[str], None]
#: progress of a long fitting step: ``(label, done, total)`` (e.g. a progress bar in the CLI)
Steps = Callable[[str, int, int], None]

PREFIX_POINTS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True, slots=True)
class FitConfig:
    depth: int = 32
    n_risk_bins: int = 8
    n_request_bins: int = 3
    kappa: float = 20.0
    augment: bool = False
    augment_weight: float = 1.0
    max_rotations: int = 8
    holdout: float = 0.1
    seed: int = 0
    resp_buckets_log2: int = 17
    req_buckets_log2: int = 16
    #: character n-grams (lo, hi) of every word in the response / request scorer ((0, 0): none)
    resp_char_ngrams: tuple[int, int] = (0, 0)
    req_char_ngrams: tuple[int, int] = (0, 0)
    #: per-word decay of the response score (1: mean over all features; < 1: recent words count
    #: more, a soft window of about 1 / (1 - decay) words)
    resp_decay: float = 1.0
    l2: float = 1e-4
    #: L2 of the request scorer (None: ``l2``)
    req_l2: float | None = None
    iterations: int = 200
    learning_rate: float = 0.1
    target_fpr: float = 0.01
    certain_min_features: int = 16
    certain_margin: float = 0.25
    #: the "beyond every benign training prefix" rule (h = 1); off: only s* and harm rules
    certain_rule: bool = True
    #: s* applies only from ``certain_min_features`` features on (a short prefix is no evidence)
    harm_score_min_features: bool = False
    #: scorer training: within each class, every source gets the same total weight
    balance_sources: bool = True
    #: "quantile": per-depth quantiles of all training prefixes; "benign-tail": per-depth
    #: quantiles of *benign* prefixes at 1/2, 3/4, 7/8, ... and the benign maximum, so the bins are
    #: fine exactly where halting decisions are made (top bin: beyond every benign prefix)
    bin_mode: str = "quantile"
    #: request bins: "probability" (edges at P = 1/n ... of the request scorer) or "benign-tail"
    #: ("top": quantiles of all training prefixes, fine at the top, see ``_top_levels``)
    #: (quantiles of benign training requests at 1/2, 9/10, 49/50, ...)
    request_bin_mode: str = "probability"
    #: K-fold cross-fitting: bins, counts and HARM-like limit use out-of-fold scores (0/1: off).
    #: The shipped recipe and ``guard fit`` use 5 (it wins leave-one-family-out); the library
    #: default stays 0 (a fit 4x cheaper, for tests and small logs)
    cross_fit: int = 0
    #: what a fold is: "text" (hashed request text / trajectory) or "source" (whole sources per
    #: fold, balanced by size: out-of-fold scores then behave like scores on an unseen source)
    cross_fit_by: str = "text"
    #: benign kind whose held-back false-halt rate sets the suggested threshold (None: all benign)
    threshold_kind: str | None = None
    #: scorer mode: "lexical" (response scorer bins), "external" (external bins only), "combined"
    scorer: str = "lexical"
    #: external-score schedule and bins (used when scorer != "lexical")
    external: ExternalSpec = ExternalSpec()  # noqa: RUF009 - frozen, immutable
    external_batch: int = 64
    #: serve-time harm rules (insult aimed at the reader, card-number-long digit runs) act as HARM
    harm_rules: bool = False
    #: scorer threshold s* (a state the scorer marks as unmistakably harmful behaves like HARM):
    #: chosen on the *held-back* split as the lowest response score that at most this share of the
    #: held-back ``threshold_kind`` benign replies (all benign when None) ever reach; at serve time
    #: a score at or above it gives ``h = 1``. None: off
    harm_score_fpr: float | None = None
    #: further budgets ``(kind, share)`` the rule must also meet on held-back benign replies of
    #: that kind (s* is the highest of the per-kind choices)
    harm_score_budgets: tuple[tuple[str, float], ...] = ()
    #: pretrained word embeddings (``fit(..., embeddings=...)``) join the response / request
    #: scorer as a linear read-out of the mean word vector (shipped as a per-word table)
    resp_embed: bool = False
    req_embed: bool = False
    #: the request scorer reads the last this many characters of the prompt (0: all of it)
    req_max_chars: int = 0
    #: ... of the latest user message only (a deployment's system prompt must not dilute it)
    req_last_user: bool = False
    #: request features: "mean" (l1-normalised counts) or "l2" (distinct features over
    #: sqrt(their number), the embedding read-out as the mean over vocabulary words): "l2"
    #: generalises much better to unseen request families (docs/evaluation.md)
    req_norm: str = "mean"
    #: request score of a text longer than this many words: also the maximum over half-overlapping
    #: windows of that many words ("l2" only; 0: whole text only)
    req_window: int = 0
    #: false-halt budgets per benign kind the suggested threshold must meet on held-back data
    #: (the highest per-kind choice wins); empty: ``target_fpr`` on ``threshold_kind``
    threshold_budgets: tuple[tuple[str, float], ...] = ()
    #: (kind, budget kind) pairs: replies of ``kind`` count as ``budget kind`` for the threshold
    #: and the scorer rule's budgets (e.g. coding and role-play answers as general answers)
    threshold_pooled: tuple[tuple[str, str], ...] = ()
    #: response scorer training: weight of a walk that does not end refusing and whose request is
    #: in the top ``resp_risky_bins`` request bins (1: no emphasis). The chain reads the response
    #: bin mostly where the request looks harmful; this makes the scorer learn that region
    resp_risky_weight: float = 1.0
    resp_risky_bins: int = 1
    #: request style augmentation (``guard.training.styles``): every training request, harmful
    #: and benign alike, also in up to this many other phrasings (imperative, question, first
    #: person, polite / hypothetical, role-play), each in its request's cross-fitting fold, so
    #: the scorer learns the goal and not the datasets' style (0: off)
    req_styles: int = 0
    #: the request scorer reads content words only (``guard.tracking.text.STYLE_WORDS`` are not
    #: features): the goal, not the phrasing ("l2" only)
    req_content_only: bool = False
    #: hitting probabilities non-decreasing in the request bin (``monotone_in_request``)
    monotone_request: bool = False
    #: the request-intent probe on a sentence encoder (``fit(..., encoder=...)``,
    #: ``guard.training.probe_fit``): its out-of-fold probability's bin is the state's external
    #: dimension, fixed for the generation (one chain per bin; bin 0: no verdict, lexical only)
    encoder_probe: bool = False
    probe_l2: float = 1e-4
    probe_iterations: int = 300
    #: the probe's own style augmentation (every request also in up to this many other styles,
    #: each variant in its request's fold), on top of ``req_styles``: cheap for the probe, whose
    #: features are 384 dense numbers, where the lexical request scorer's hashed n-grams are not
    probe_styles: int = 0
    #: project this many phrasing directions (from the style variants, ``probe_styles``) out of
    #: the embeddings the probe is trained on: its weights become blind to how a request is
    #: phrased (0: off)
    probe_style_dims: int = 0
    #: the probe's verdict replaces the lexical request bin (request bin 0 in verdict blocks):
    #: the lexical request scorer learned the datasets' phrasing, the encoder the intent; the
    #: lexical bin stays for the fallback (block 0)
    probe_replaces_request: bool = True


def threshold_at_rate(scores: npt.ArrayLike, rate: float) -> float:
    """The lowest threshold ``tau`` at which at most ``floor(rate * n)`` of the ``n`` scores reach
    it (``score >= tau`` halts). The one definition of "threshold at a false-halt rate"."""
    x = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    if x.size == 0:
        return 0.5
    k = min(int(np.floor(rate * x.size + 1e-9)), x.size - 1)
    return float(x[k]) + 1e-6


def choose_harm_score(benign_logits: Sequence[FloatArray], fpr: float) -> float | None:
    """Lowest score ``s*`` such that at most ``floor(fpr * n)`` of the ``n`` benign replies ever
    reach ``score >= s*`` after a generated token (``t >= 1``); None with under 20 replies."""
    if len(benign_logits) < 20 or not 0.0 <= fpr < 1.0:
        return None
    return threshold_at_rate(
        [float(x[1:].max()) if x.size > 1 else float(x[0]) for x in benign_logits], fpr
    )


@dataclass(frozen=True, slots=True)
class RequestExample:
    text: str
    harmful: bool
    source: str = "requests"


@dataclass(slots=True)
class Walk:
    """One trajectory seen token by token (state after t generated tokens, t = 0..T)."""

    ids: npt.NDArray[np.int32]
    nf: npt.NDArray[np.int32]
    phase: npt.NDArray[np.int8]
    end: str  # "harm" | "end" | "censored"
    weight: float
    harmful: bool
    kind: str
    req_text: str
    onset: int | None = None
    source: str = ""
    req_bin: int = 0
    tid: str = ""
    #: external bin after t tokens (0 = no verdict yet), or None
    ext: npt.NDArray[np.int8] | None = None
    #: harm rule fired by t tokens
    flag: npt.NDArray[np.bool_] | None = None
    #: completed words after t tokens, and the feature count at the end of every word
    nw: npt.NDArray[np.int32] | None = None
    wend: npt.NDArray[np.int32] | None = None
    #: embedding row of every completed word (-1: not in the vocabulary), when fitting with one
    wrow: npt.NDArray[np.int32] | None = None

    def n_features(self) -> npt.NDArray[np.int32]:
        """Features after t tokens as serving counts them (a vocabulary word adds one)."""
        if self.wrow is None or self.nw is None:
            return self.nf
        kc = np.concatenate(([0], np.cumsum(self.wrow >= 0))).astype(np.int32)
        return np.asarray(self.nf + kc[self.nw], dtype=np.int32)


@dataclass(slots=True)
class FitResult:
    model: RiskModel
    arrays: dict[str, npt.NDArray[Any]]
    meta: dict[str, Any]
    report: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# walks


class _Recorder:
    """Runs the serving-time lexical stream over a trajectory and records its features/phases."""

    def __init__(
        self,
        log2_buckets: int,
        char_ngrams: tuple[int, int] = (0, 0),
        word_index: dict[str, int] | None = None,
        req_max_chars: int = 0,
        req_last_user: bool = False,
    ) -> None:
        self.req_max_chars = req_max_chars
        self.req_last_user = req_last_user
        self.scorer = LexicalScorer([0.0] * (1 << log2_buckets), 0.0, char_ngrams=char_ngrams)
        self.word_index = word_index

    def walk(self, traj: Trajectory, weight: float = 1.0) -> Walk:
        tokens = traj.generated_tokens()
        onset = traj.onset_token(tokens)
        if onset is not None:
            tokens = tokens[:onset]
            end = "harm"
        elif traj.censored:
            end = "censored"
        else:
            end = "harm" if traj.harmful else "end"
        st = self.scorer.stream()
        # the serve-time leak rule reads the prompt's credentials (models without harm rules
        # ignore the flag)
        st.leak = leak_watch(context_secrets(traj.prompt))
        rec: list[int] = []
        rec_w: list[int] = []
        st.record = rec
        st.record_words = rec_w
        vocab: list[str] = []
        if self.word_index is not None:
            st.record_vocab = vocab
        if traj.prefill:
            st.feed(traj.prefill)
        nf = [len(rec)]
        nw = [len(rec_w)]
        ph = [st.phase]
        fl = [st.harm_flag]
        for tok in tokens:
            if tok:
                st.feed(tok)
            nf.append(len(rec))
            nw.append(len(rec_w))
            ph.append(st.phase)
            fl.append(st.harm_flag)
        return Walk(
            ids=np.asarray(rec, dtype=np.int32),
            nf=np.asarray(nf, dtype=np.int32),
            phase=np.asarray(ph, dtype=np.int8),
            end=end,
            weight=weight,
            harmful=traj.harmful,
            kind=traj.kind,
            req_text=request_text(traj.prompt, self.req_max_chars, self.req_last_user),
            onset=onset,
            source=traj.source,
            tid=traj.id,
            flag=np.asarray(fl, dtype=bool),
            nw=np.asarray(nw, dtype=np.int32),
            wend=np.asarray(rec_w, dtype=np.int32),
            wrow=None
            if self.word_index is None
            else np.asarray([self.word_index.get(w, -1) for w in vocab], dtype=np.int32),
        )


# --------------------------------------------------------------------------------------------
# helpers over walks


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


def walk_risks(walk: Walk, logits: FloatArray, states: IntArray, model: RiskModel) -> FloatArray:
    """Risk after t generated tokens as serving computes it (``TrackerTables.harm_like``)."""
    h = model.H
    d_max = h.shape[0] - 1
    t = np.arange(states.size)
    r = h[np.minimum(t, d_max), states]
    like = model.tables.harm_like
    nf = walk.n_features().tolist()
    flags = walk.flag.tolist() if walk.flag is not None else [False] * len(nf)
    hit = np.fromiter(
        (like(lg, n, f) for lg, n, f in zip(logits.tolist(), nf, flags, strict=True)),
        dtype=bool,
        count=len(nf),
    )
    return np.where(hit, 1.0, r)


def transition_keys(
    walk: Walk, states: IntArray, depth: int, n: int
) -> tuple[IntArray, IntArray, IntArray]:
    """(depth index, from, to) of every observed transition, terminal one included."""
    t_eff = states.size - 1
    d = np.minimum(np.arange(t_eff), depth)
    frm = states[:-1]
    to = states[1:]
    if walk.end != "censored":
        d = np.append(d, min(t_eff, depth))
        frm = np.append(frm, states[-1])
        to = np.append(to, n if walk.end == "harm" else n + 1)
    return d.astype(np.int64), frm.astype(np.int64), to.astype(np.int64)


# --------------------------------------------------------------------------------------------
# the fit


def holdout_key(t: Trajectory) -> str:
    """What the validation split is drawn by: ``meta.holdout_group`` when given (e.g. a question
    or a target group, so validation sees *unseen* questions as the test data does), else the
    id."""
    g = t.meta.get("holdout_group") or t.meta.get("group")
    return str(g) if g else t.id


def _is_holdout(tid: str, frac: float, seed: int) -> bool:
    if frac <= 0:
        return False
    return (zlib.crc32(f"{seed}:{tid}".encode()) % 100_000) < frac * 100_000


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


def calibration_table(
    pred: FloatArray, y: FloatArray, n_bins: int = 10
) -> tuple[list[dict[str, Any]], float]:
    """Reliability table (equal-width bins) and expected calibration error."""
    rows: list[dict[str, Any]] = []
    ece = 0.0
    n = pred.size
    if n == 0:
        return rows, float("nan")
    idx = np.minimum((pred * n_bins).astype(np.int64), n_bins - 1)
    for b in range(n_bins):
        m = idx == b
        k = int(m.sum())
        if k == 0:
            continue
        mp, obs = float(pred[m].mean()), float(y[m].mean())
        ece += k / n * abs(mp - obs)
        rows.append(
            {"bin": f"{b / n_bins:.1f}-{(b + 1) / n_bins:.1f}", "n": k, "mean_pred": mp, "obs": obs}
        )
    return rows, ece


def markov_order_test(
    train: Sequence[tuple[Walk, IntArray]],
    held: Sequence[tuple[Walk, IntArray]],
    p1: Callable[[IntArray, IntArray, IntArray], FloatArray],
    depth: int,
    n: int,
    kappa: float,
) -> dict[str, Any]:
    """Held-out log-likelihood per transition: first order vs second order (backed off to 1st)."""

    def keys(pairs: Sequence[tuple[Walk, IntArray]]) -> tuple[IntArray, ...]:
        ds, prevs, frs, tos, ws = [], [], [], [], []
        for walk, st in pairs:
            d, fr, to = transition_keys(walk, st, depth, n)
            prev = np.concatenate(([n], fr[:-1])) if fr.size else fr
            ds.append(d)
            prevs.append(prev)
            frs.append(fr)
            tos.append(to)
            ws.append(np.full(d.size, walk.weight))
        if not ds:
            z = np.zeros(0, np.int64)
            return z, z, z, z, z.astype(np.float64)
        return (
            np.concatenate(ds),
            np.concatenate(prevs),
            np.concatenate(frs),
            np.concatenate(tos),
            np.concatenate(ws),
        )

    d, prev, fr, to, w = keys(train)
    k3 = (d * (n + 1) + prev) * n + fr
    k4 = k3 * (n + 2) + to
    u3, inv3 = np.unique(k3, return_inverse=True)
    c3 = np.asarray(np.bincount(inv3, weights=w), dtype=np.float64)
    u4, inv4 = np.unique(k4, return_inverse=True)
    c4 = np.asarray(np.bincount(inv4, weights=w), dtype=np.float64)
    hd, hprev, hfr, hto, _ = keys(held)
    if hd.size == 0:
        return {"n_transitions": 0}
    base = p1(hd, hfr, hto)
    hk3 = (hd * (n + 1) + hprev) * n + hfr
    hk4 = hk3 * (n + 2) + hto

    def lookup(u: IntArray, c: FloatArray, k: IntArray) -> FloatArray:
        pos = np.searchsorted(u, k)
        pos = np.minimum(pos, max(u.size - 1, 0))
        hit = u[pos] == k if u.size else np.zeros(k.size, bool)
        return np.where(hit, c[pos] if u.size else 0.0, 0.0)

    n3 = lookup(u3, c3, hk3)
    n4 = lookup(u4, c4, hk4)
    p2 = (n4 + kappa * base) / (n3 + kappa)
    ll1 = float(np.mean(np.log(base)))
    ll2 = float(np.mean(np.log(p2)))
    change = hfr != hto
    return {
        "n_transitions": int(hd.size),
        "loglik_first_order": ll1,
        "loglik_second_order": ll2,
        "gain_per_transition": ll2 - ll1,
        "n_state_changes": int(change.sum()),
        "loglik_first_order_changes": float(np.mean(np.log(base[change]))) if change.any() else 0.0,
        "loglik_second_order_changes": float(np.mean(np.log(p2[change]))) if change.any() else 0.0,
    }


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


def _tail_levels(n_edges: int, first: float, ratio: float, top_is_max: bool) -> list[float]:
    """Quantile levels 1 - first, 1 - first*ratio, ... (the last one the maximum if asked)."""
    levels = [1.0 - first * ratio**i for i in range(n_edges)]
    if top_is_max and n_edges >= 2:
        levels[-1] = 1.0
    return levels


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


def _attach_external(
    pairs: Sequence[tuple[Trajectory, Walk]],
    scorer: ExternalScorer,
    spec: ExternalSpec,
    batch: int,
    say: Progress,
) -> int:
    """Score every walk's prefixes every ``spec.every`` tokens; set ``walk.ext``. Returns calls."""
    plan: list[tuple[Walk, list[int], int, int]] = []
    texts: list[str] = []
    for traj, wk in pairs:
        tokens = traj.generated_tokens()[: wk.nf.size - 1]
        pts = verdict_points(len(tokens), spec)
        start = len(texts)
        texts.extend(prefix_texts(traj.prefill, tokens, pts, traj.prompt))
        plan.append((wk, pts, start, len(texts)))
    say(f"external scorer: {len(texts)} prefixes (every {spec.every} tokens)")
    scores = score_all(scorer, texts, batch=batch, progress=say)
    for wk, pts, a, b in plan:
        wk.ext = ext_bin_series(wk.nf.size, pts, scores[a:b], spec)
    return len(set(texts))


# --------------------------------------------------------------------------------------------
# the fit: a pipeline of stages, each handing the next a frozen value


@dataclass(frozen=True, slots=True)
class Inputs:
    """The checked inputs: the train / held-back split and what the configuration switches on."""

    trajs: Sequence[Trajectory]
    train: list[Trajectory]
    held: list[Trajectory]
    #: external bins (scorer "external" / "combined"); lexical response bins (not "external")
    use_ext: bool
    use_lex: bool
    #: word embeddings join a scorer: their word index and vectors (float64), else None
    use_emb: bool
    emb_index: dict[str, int] | None
    vec: FloatArray | None
    #: cross-fitting folds (0: off)
    k_folds: int
    #: the external dimension is the encoder's request verdict: one chain per external bin
    blocks: bool = False


@dataclass(frozen=True, slots=True)
class Walks:
    """Every trajectory replayed token by token (the augmented ones after the training ones)."""

    train: list[Walk]
    held: list[Walk]
    aug: list[Walk]
    n_orbits: int
    #: distinct prefixes the external scorer scored (0: none)
    n_ext_texts: int

    @property
    def all_train(self) -> list[Walk]:
        return self.train + self.aug


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


@dataclass(frozen=True, slots=True)
class Artifact:
    """What is saved: the arrays and the metadata (``meta`` is completed by later stages)."""

    arrays: dict[str, npt.NDArray[Any]]
    meta: dict[str, Any]


@dataclass(frozen=True, slots=True)
class HeldBack:
    """The walks the threshold and s* are chosen on, with the shipped scorer's scores."""

    walks: list[Walk]
    logits: list[FloatArray]
    #: kinds held to another kind's budget (``FitConfig.threshold_pooled``)
    pooled: dict[str, str]


@dataclass(frozen=True, slots=True)
class ScorerRule:
    """The scorer threshold s* (``logit``; None: off) and the scores it was chosen on."""

    logit: float | None
    min_features: int
    budgets: dict[str, float]
    n: int
    #: held-back scores where the rule can apply (-inf under ``min_features`` features)
    rule_logits: list[FloatArray]

    def meta(self) -> dict[str, Any]:
        if self.logit is None:
            return {}
        return {
            "harm_score_logit": self.logit,
            "harm_score_min_features": self.min_features,
            "harm_score_rule": {"budgets": self.budgets, "n": self.n},
        }


@dataclass(frozen=True, slots=True)
class Threshold:
    """The suggested threshold and the held-back replay it was read from."""

    tau: float
    tau_set: str
    #: per held-back walk: maximum risk after a generated token, risk at min(T, D), label, kind
    max_risk: FloatArray
    pred: FloatArray
    y: FloatArray
    kinds: npt.NDArray[np.str_]
    pairs: list[tuple[Walk, IntArray]]
    #: smoothed transitions of the fitted chain, ``p(d, from, to)`` (the Markov test's first
    #: order)
    p: Callable[[IntArray, IntArray, IntArray], FloatArray]


def fit(
    trajs: Sequence[Trajectory],
    config: FitConfig = FitConfig(),
    *,
    requests: Sequence[RequestExample] = (),
    info: dict[str, Any] | None = None,
    progress: Progress | None = None,
    external_scorer: ExternalScorer | None = None,
    embeddings: WordVectors | None = None,
    steps: Steps | None = None,
    encoder: Encoder | None = None,
) -> FitResult:
    """Fit a risk model. ``external_scorer`` is required when ``config.scorer`` is ``external``
    or ``combined``: it is called (batched) on response prefixes every ``config.external.every``
    tokens of each trajectory, so the chain learns how its verdict combines with the rest."""
    cfg = config
    say = progress or (lambda _m: None)
    inp = check_inputs(trajs, cfg, external_scorer, embeddings, encoder)
    walks = extract_walks(inp, cfg, external_scorer, say, steps)
    req = fit_request_scorer(inp, cfg, requests, embeddings, say, steps)
    probe = None
    if cfg.encoder_probe:
        assert encoder is not None
        probe = attach_request_probe(inp, walks, req, encoder, cfg, say, steps)
    # sets every walk's request bin in place: the states below are read off the walks (and the
    # response scorer's training weights may depend on it)
    req_edges = assign_request_bins(walks, req, cfg)
    resp = fit_response_scorer(inp, walks, cfg, say, steps)
    bins = response_bins(inp, walks, resp, cfg, say, probe)
    counts = count_transitions(walks, bins, cfg, say, inp.blocks)
    art = build_artifact(inp, resp, req, req_edges, bins, counts, cfg, embeddings, info, probe)
    held = score_held_back(walks, resp, cfg, say)
    rule = choose_scorer_rule(inp, held, bins, cfg)
    # s* joins the metadata before the threshold is chosen: the held-back replay must halt
    # exactly as serving will, the rule included
    art.meta.update(rule.meta())
    thr = choose_threshold(held, bins, art, cfg)
    art.meta["suggested_threshold"] = thr.tau
    report = fit_report(inp, walks, req, bins, counts, held, rule, thr, cfg)
    # the report's summary ships inside the artifact, so the model is built from the final meta
    art.meta["info"] = {**art.meta["info"], "fit_report": json_safe(_summary(report))}
    model = RiskModel(art.arrays, art.meta)
    return FitResult(model=model, arrays=art.arrays, meta=art.meta, report=report)


# -- input checks ---------------------------------------------------------------------------


def check_inputs(
    trajs: Sequence[Trajectory],
    cfg: FitConfig,
    external_scorer: ExternalScorer | None,
    embeddings: WordVectors | None,
    encoder: Encoder | None = None,
) -> Inputs:
    """Reject what cannot be fitted (``DataError``) and split off the held-back trajectories."""
    if not trajs:
        raise DataError("no trajectories to fit on")
    if cfg.depth < 1 or cfg.n_risk_bins < 2 or cfg.n_request_bins < 1:
        raise DataError("depth must be >= 1 and bins >= 2")
    if cfg.scorer not in SCORER_MODES:
        raise DataError(f"unknown scorer {cfg.scorer!r} (expected one of {SCORER_MODES})")
    if cfg.bin_mode not in ("quantile", "benign-tail", "top"):
        raise DataError(f"unknown bin mode {cfg.bin_mode!r}")
    if cfg.cross_fit_by not in ("text", "source"):
        raise DataError(f"unknown cross_fit_by {cfg.cross_fit_by!r} (expected text or source)")
    use_ext = cfg.scorer != "lexical"
    if use_ext:
        cfg.external.validate()
        if external_scorer is None:
            raise DataError(f"scorer {cfg.scorer!r} needs an external scorer (none was given)")
    if cfg.encoder_probe:
        if use_ext:
            raise DataError(
                "the encoder's request probe is the external dimension: it cannot be combined "
                f"with scorer {cfg.scorer!r}"
            )
        if encoder is None:
            raise DataError("encoder_probe needs a sentence encoder (fit(..., encoder=...))")
        use_ext = True
    if (cfg.resp_embed or cfg.req_embed) and embeddings is None:
        raise DataError("resp_embed / req_embed need word embeddings (fit(..., embeddings=...))")
    use_emb = cfg.resp_embed or cfg.req_embed
    train_t = [t for t in trajs if not _is_holdout(holdout_key(t), cfg.holdout, cfg.seed)]
    held_t = [t for t in trajs if _is_holdout(holdout_key(t), cfg.holdout, cfg.seed)]
    if not any(t.harmful for t in train_t):
        raise DataError("no harmful trajectories in the training data: cannot fit a risk model")
    if all(t.harmful for t in train_t):
        raise DataError("no safe trajectories in the training data: cannot fit a risk model")
    return Inputs(
        trajs=trajs,
        train=train_t,
        held=held_t,
        use_ext=use_ext,
        use_lex=cfg.scorer != "external",
        use_emb=use_emb,
        emb_index=embeddings.index() if embeddings is not None and use_emb else None,
        vec=(
            np.asarray(embeddings.vectors, dtype=np.float64)
            if embeddings is not None and use_emb
            else None
        ),
        k_folds=cfg.cross_fit if cfg.cross_fit >= 2 else 0,
        blocks=cfg.encoder_probe,
    )


# -- walks ----------------------------------------------------------------------------------


def extract_walks(
    inp: Inputs,
    cfg: FitConfig,
    external_scorer: ExternalScorer | None,
    say: Progress,
    steps: Steps | None,
) -> Walks:
    """Replay the training and held-back trajectories (and the training ones' phrase rotations,
    with ``augment``) through the serving stream; with an external scorer, attach its bins."""
    rec = _Recorder(
        cfg.resp_buckets_log2,
        cfg.resp_char_ngrams,
        inp.emb_index if cfg.resp_embed else None,
        cfg.req_max_chars,
        cfg.req_last_user,
    )
    say(f"extracting {len(inp.train)} training + {len(inp.held)} held-back trajectories")
    train_w = _replay(rec, inp.train, "train", say, steps)
    held_w = _replay(rec, inp.held, "held-back", say, steps)
    aug_w: list[Walk] = []
    aug_t: list[Trajectory] = []
    n_orbits = 0
    if cfg.augment:
        for t in inp.train:
            rots = cyclic_rotations(t, cfg.augment_weight, cfg.max_rotations)
            if rots:
                n_orbits += 1
            for rt, w in rots:
                aug_t.append(rt)
                aug_w.append(rec.walk(rt, w))
        say(f"augmentation: {len(aug_w)} rotations from {n_orbits} trajectories")
    n_ext_texts = 0
    if inp.use_ext and not inp.blocks:
        assert external_scorer is not None
        n_ext_texts = _attach_external(
            list(zip(inp.train + inp.held + aug_t, train_w + held_w + aug_w, strict=True)),
            external_scorer,
            cfg.external,
            cfg.external_batch,
            say,
        )
    return Walks(train_w, held_w, aug_w, n_orbits, n_ext_texts)


def _replay(
    rec: _Recorder, ts: Sequence[Trajectory], label: str, say: Progress, steps: Steps | None
) -> list[Walk]:
    out = []
    for i, t in enumerate(ts):
        out.append(rec.walk(t))
        if (i + 1) % 5000 == 0:
            say(f"  {label}: {i + 1}/{len(ts)}")
        if steps is not None and ((i + 1) % 500 == 0 or i + 1 == len(ts)):
            steps(f"replaying {label} trajectories", i + 1, len(ts))
    return out


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


# -- request scorer -------------------------------------------------------------------------


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


# -- response bins, state space, certain rule -----------------------------------------------


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


# -- transition counts ----------------------------------------------------------------------


def count_transitions(
    walks: Walks, bins: Bins, cfg: FitConfig, say: Progress, blocks: bool = False
) -> FloatArray:
    """Weighted counts of the training walks' transitions, shaped (depth + 1, n, n + 2); with
    ``blocks`` (the external bin fixed per walk) one chain per external bin,
    (n_ext, depth + 1, m, m + 2) with ``m = n / n_ext``."""
    say("counting transitions")
    if blocks:
        return _count_blocks(walks, bins, cfg)
    n = bins.space.n_states
    size = (cfg.depth + 1) * n * (n + 2)
    keys, kw = [], []
    for wk, st in zip(walks.all_train, bins.states, strict=True):
        dk, fr, to = transition_keys(wk, st, cfg.depth, n)
        keys.append((dk * n + fr) * (n + 2) + to)
        kw.append(np.full(dk.size, wk.weight))
        if bins.n_ext > 1 and wk.ext is not None and wk.ext.any():
            # The same walk as serving sees it when the scorer never answers (dead, timed out,
            # or slower than the stream): external bin 0 throughout. Without this copy the
            # "no verdict" cells past the first verdict's token are never visited in training,
            # so a stream whose scorer is down would be scored from smoothing alone instead of
            # falling back to the lexical dimensions.
            dk, fr, to = transition_keys(wk, st - wk.ext.astype(np.int64), cfg.depth, n)
            keys.append((dk * n + fr) * (n + 2) + to)
            kw.append(np.full(dk.size, wk.weight))
    counts = np.bincount(np.concatenate(keys), weights=np.concatenate(kw), minlength=size)
    return np.asarray(counts.reshape(cfg.depth + 1, n, n + 2), dtype=np.float64)


def _count_blocks(walks: Walks, bins: Bins, cfg: FitConfig) -> FloatArray:
    k = bins.n_ext
    m = bins.space.n_states // k
    d1 = cfg.depth + 1
    keys, kw = [], []
    # the request bin's stride in a base state (the request bin is its slowest index)
    req_stride = bins.space.n_phases * bins.space.n_risk_bins
    for wk, st in zip(walks.all_train, bins.states, strict=True):
        base = st // k
        blk = int(wk.ext[0]) if wk.ext is not None and wk.ext.size else 0
        if blk:
            dk, fr, to = transition_keys(wk, base, cfg.depth, m)
            keys.append(((blk * d1 + dk) * m + fr) * (m + 2) + to)
            kw.append(np.full(dk.size, wk.weight))
            if bins.replaces_request:
                base = base + wk.req_bin * req_stride  # block 0 reads the lexical request bin
        # every walk also as serving sees it when the encoder never answers: block 0
        dk, fr, to = transition_keys(wk, base, cfg.depth, m)
        keys.append(((0 * d1 + dk) * m + fr) * (m + 2) + to)
        kw.append(np.full(dk.size, wk.weight))
    size = k * d1 * m * (m + 2)
    counts = np.bincount(np.concatenate(keys), weights=np.concatenate(kw), minlength=size)
    return np.asarray(counts.reshape(k, d1, m, m + 2), dtype=np.float64)


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
    others = sorted({wk.req_text for wk in walks.held + walks.train + walks.aug} - set(pf.oof))
    shipped: dict[str, float] = {}
    if others:
        shipped = dict(
            zip(others, pf.probe.probs(embed_checked(encoder, others)).tolist(), strict=True)
        )
    for group, oof in ((walks.train, True), (walks.aug, True), (walks.held, False)):
        for wk in group:
            p = pf.oof.get(wk.req_text) if oof else None
            if p is None:
                p = shipped.get(wk.req_text)
            if p is None:  # a held-back walk whose request is also a training text
                p = float(pf.probe.probs(embed_checked(encoder, [wk.req_text]))[0])
                shipped[wk.req_text] = p
            wk.ext = np.full(wk.nf.size, pf.bin_of(p), dtype=np.int8)
    say(f"request probe: out-of-fold AUROC {pf.auroc}, {len(pf.edges)} edges")
    return pf


# -- meta and arrays (the artifact) ---------------------------------------------------------


def build_artifact(
    inp: Inputs,
    resp: ResponseScorerFit,
    req: RequestScorerFit,
    req_edges: FloatArray,
    bins: Bins,
    counts: FloatArray,
    cfg: FitConfig,
    embeddings: WordVectors | None,
    info: dict[str, Any] | None,
    probe: ProbeFit | None = None,
) -> Artifact:
    """The artifact's arrays and metadata (the threshold a placeholder until it is chosen)."""
    created = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
    meta: dict[str, Any] = {
        "created": created,
        "depth": cfg.depth,
        "kappa": cfg.kappa,
        "end_floor": END_FLOOR,
        "suggested_threshold": 0.5,
        "state_space": {
            "n_request_bins": cfg.n_request_bins,
            "n_risk_bins": bins.n_risk_bins,
            "n_external_bins": bins.n_ext,
            "n_phases": N_PHASES,
        },
        "resp_bias": float(resp.bias),
        "req_bias": float(req.bias),
        "certain_logit": bins.certain_logit,
        "certain_min_features": bins.certain_min,
        "resp_char_ngrams": list(cfg.resp_char_ngrams),
        "resp_decay": cfg.resp_decay,
        "req_char_ngrams": list(cfg.req_char_ngrams),
        "harm_rules": cfg.harm_rules,
        "req_max_chars": cfg.req_max_chars,
        "req_norm": cfg.req_norm,
        "req_text": "last_user" if cfg.req_last_user else "all",
        # the phases were recorded with this rule (the _Recorder's scorer default): serving reads
        # the response the same way
        "phase_rule": "no-refusal",
        "scorer": cfg.scorer,
        "scorers": _scorers_meta(inp, cfg),
        "info": dict(info or {}),
    }
    if probe is not None:
        meta["external"] = {
            "target": "request",
            "edges": list(probe.edges),
            "blocks": True,
            "none_bin": True,
            "replaces_request": cfg.probe_replaces_request,
        }
    elif inp.use_ext:
        meta["external"] = cfg.external.to_meta()
    if cfg.req_window:
        # only when on: artifacts without windows stay byte-identical to before
        meta["req_window"] = cfg.req_window
    if cfg.req_content_only:
        meta["req_content_only"] = True
    if cfg.monotone_request:
        meta["monotone_request"] = True
    arrays: dict[str, npt.NDArray[Any]] = {
        "counts": counts.astype(np.float32),
        "resp_w": resp.w16,
        "req_w": req.w16,
        "edges": bins.edges,
        "req_edges": req_edges,
        "ext_edges": np.asarray(
            probe.edges if probe is not None else cfg.external.edges if inp.use_ext else (),
            dtype=np.float64,
        ),
    }
    if probe is not None:
        p_arrays, p_meta = probe.probe.to_artifact()
        arrays.update(p_arrays)
        meta["encoder"] = {**p_meta, "oof_auroc": probe.auroc}
    if embeddings is not None and inp.use_emb:
        arrays["vocab"] = vocab_array(embeddings.words)
        if resp.u16 is not None:
            arrays["resp_u"] = resp.u16
        if req.u16 is not None:
            arrays["req_u"] = req.u16
        meta["embeddings"] = {
            "name": embeddings.name,
            "words": len(embeddings.words),
            "dim": embeddings.dim,
            "response": resp.u16 is not None,
            "request": req.u16 is not None,
        }
    return Artifact(arrays, meta)


def _scorers_meta(inp: Inputs, cfg: FitConfig) -> list[dict[str, Any]]:
    scorers: list[dict[str, Any]] = [
        {
            "name": "lexical",
            "role": "response" if inp.use_lex else "phase markers only",
            "features": "crc32-hashed word unigrams+bigrams, l1-normalised counts",
            "buckets": 1 << cfg.resp_buckets_log2,
        },
        {
            "name": "lexical-request",
            "role": "request",
            "features": "crc32-hashed word unigrams+bigrams, l1-normalised counts",
            "buckets": 1 << cfg.req_buckets_log2,
        },
    ]
    if cfg.encoder_probe:
        scorers.append({"name": "encoder-probe", "role": "request intent (external bins)"})
    elif inp.use_ext:
        scorers.append({"name": "external", "role": "response", **cfg.external.to_meta()})
    return scorers


# -- held-back scores, scorer rule s* -------------------------------------------------------


def score_held_back(
    walks: Walks, resp: ResponseScorerFit, cfg: FitConfig, say: Progress
) -> HeldBack:
    """The held-back walks (the training ones when nothing is held back) and their scores."""
    say("evaluating on the held-back split")
    eval_w = walks.held if walks.held else walks.train
    return HeldBack(
        walks=eval_w,
        logits=[resp.logits(wk) for wk in eval_w],
        pooled=dict(cfg.threshold_pooled),  # kinds held to another kind's budget
    )


def choose_scorer_rule(inp: Inputs, held: HeldBack, bins: Bins, cfg: FitConfig) -> ScorerRule:
    """s* at ``harm_score_fpr`` on the held-back benign replies (``threshold_kind`` when set),
    raised to meet every ``harm_score_budgets`` kind's budget too."""
    harm_min = bins.certain_min if cfg.harm_score_min_features else 0
    # the scores s* is chosen on: only where it can apply (enough features)
    rule_logits = [
        np.where(wk.n_features() >= harm_min, lgt, -np.inf) if harm_min else lgt
        for wk, lgt in zip(held.walks, held.logits, strict=True)
    ]
    harm_logit: float | None = None
    budgets: dict[str, float] = {}
    n = 0
    if cfg.harm_score_fpr is not None and inp.use_lex:
        sel = [
            lgt
            for wk, lgt in zip(held.walks, rule_logits, strict=True)
            if not wk.harmful and (cfg.threshold_kind is None or wk.kind == cfg.threshold_kind)
        ]
        n = len(sel)
        harm_logit = choose_harm_score(sel, cfg.harm_score_fpr)
        budgets = {cfg.threshold_kind or "all benign": cfg.harm_score_fpr}
        for kind, share in cfg.harm_score_budgets:
            other = choose_harm_score(
                [
                    lgt
                    for wk, lgt in zip(held.walks, rule_logits, strict=True)
                    if not wk.harmful and held.pooled.get(wk.kind, wk.kind) == kind
                ],
                share,
            )
            budgets[kind] = share
            if harm_logit is not None and other is not None:
                harm_logit = max(harm_logit, other)
    return ScorerRule(harm_logit, harm_min, budgets, n, rule_logits)


# -- threshold choice -----------------------------------------------------------------------


def choose_threshold(held: HeldBack, bins: Bins, art: Artifact, cfg: FitConfig) -> Threshold:
    """Replay the held-back walks through the fitted model (s* included, as serving runs it)
    and read the suggested threshold off the benign replies' false-halt budgets."""
    model = RiskModel(art.arrays, art.meta)
    pairs = []
    max_risk, pred, yv, kinds = [], [], [], []
    for wk, lgt in zip(held.walks, held.logits, strict=True):
        st = walk_states(wk, lgt, bins.edges, bins.space, bins.replaces_request)
        pairs.append((wk, st))
        r = walk_risks(wk, lgt, st, model)
        # serving halts on the first token (t >= 1) whose risk reaches tau
        max_risk.append(float(r[1:].max()) if r.size > 1 else float(r[0]))
        pred.append(float(r[min(r.size - 1, cfg.depth)]))
        yv.append(1.0 if wk.harmful else 0.0)
        kinds.append(wk.kind)
    mr = np.asarray(max_risk)
    yy = np.asarray(yv)
    kind_arr = np.asarray([held.pooled.get(k, k) for k in kinds])
    benign = mr[yy == 0]
    tau_set = "all benign"
    if cfg.threshold_kind is not None and (kind_arr == cfg.threshold_kind).sum() >= 20:
        benign_tau = mr[kind_arr == cfg.threshold_kind]
        tau_set = cfg.threshold_kind
    else:
        benign_tau = benign
    tau = threshold_at_rate(benign_tau, cfg.target_fpr)
    if cfg.threshold_budgets:
        tau_set = ", ".join(f"{k} {b:.1%}" for k, b in cfg.threshold_budgets)
        for k, budget in cfg.threshold_budgets:
            bk = mr[(kind_arr == k) & (yy == 0)]
            if bk.size >= 20:
                tau = max(tau, threshold_at_rate(bk, budget))
    tau = float(min(max(tau, 0.05), 0.99))
    return Threshold(
        tau, tau_set, mr, np.asarray(pred), yy, kind_arr, pairs, model.transition_probs
    )


# -- report ---------------------------------------------------------------------------------


def fit_report(
    inp: Inputs,
    walks: Walks,
    req: RequestScorerFit,
    bins: Bins,
    counts3: FloatArray,
    held: HeldBack,
    rule: ScorerRule,
    thr: Threshold,
    cfg: FitConfig,
) -> dict[str, Any]:
    """The fit report: configuration, data counts, sparsity, held-back figures, Markov test."""
    n = bins.space.n_states
    markov = markov_order_test(
        list(zip(walks.all_train, bins.states, strict=True)),
        thr.pairs,
        thr.p,
        cfg.depth,
        n,
        cfg.kappa,
    )
    trajs, train_t = inp.trajs, inp.train
    row_tot = counts3.sum(axis=2)
    return {
        "config": {
            "depth": cfg.depth,
            "bins": bins.n_risk_bins,
            "request_bins": cfg.n_request_bins,
            "kappa": cfg.kappa,
            "augment": cfg.augment,
            "holdout": cfg.holdout,
            "seed": cfg.seed,
            "bin_mode": cfg.bin_mode,
            "request_bin_mode": cfg.request_bin_mode,
            "cross_fit": inp.k_folds,
            "cross_fit_by": cfg.cross_fit_by,
            "scorer": cfg.scorer,
            "external": cfg.external.to_meta() if inp.use_ext else None,
            "threshold_kind": cfg.threshold_kind,
        },
        "counts": {
            "trajectories": len(trajs),
            "train": len(train_t),
            "held_back": len(inp.held),
            "train_harmful": sum(t.harmful for t in train_t),
            "train_safe": sum(not t.harmful for t in train_t),
            "censored": sum(t.censored for t in trajs),
            "with_onset": sum(t.harm_start_char is not None for t in trajs),
            "by_kind": dict(Counter(t.kind for t in trajs)),
            "by_source": dict(Counter(t.source for t in trajs)),
            "augmented_rotations": len(walks.aug),
            "augmented_orbits": walks.n_orbits,
            "transitions": float(counts3.sum()),
            "request_examples": len(req.texts),
            "external_texts_scored": walks.n_ext_texts,
        },
        "sparsity": {
            "states": n,
            "rows": int(row_tot.size),
            "empty_rows": int((row_tot == 0).sum()),
            "rows_under_kappa": int((row_tot < cfg.kappa).sum()),
            "nonzero_cells": int((counts3 > 0).sum()),
            "cells": int(counts3.size),
        },
        "held_back": _held_back_report(walks, held, rule, thr),
        "markov_test": markov,
        "certain_logit": bins.certain_logit,
        "harm_score_logit": rule.logit,
    }


def _held_back_report(
    walks: Walks, held: HeldBack, rule: ScorerRule, thr: Threshold
) -> dict[str, Any]:
    mr, yy, kind_arr, tau = thr.max_risk, thr.y, thr.kinds, thr.tau
    benign = mr[yy == 0]
    calib, ece = calibration_table(thr.pred, yy)
    recall = float((mr[yy == 1] >= tau).mean()) if (yy == 1).any() else float("nan")
    fpr = float((benign >= tau).mean()) if benign.size else float("nan")
    fpr_by_kind = {
        str(k): float((mr[(kind_arr == k) & (yy == 0)] >= tau).mean())
        for k in sorted(set(kind_arr.tolist()))
        if k != "harmful"
    }
    rule_fpr, rule_recall = _rule_alone(held, rule)
    return {
        "n": int(yy.size),
        "harmful": int(yy.sum()),
        "suggested_threshold": tau,
        "threshold_set_on": thr.tau_set,
        "recall_at_threshold": recall,
        "false_halt_rate_at_threshold": fpr,
        "false_halt_by_kind": fpr_by_kind,
        "recall_at_fpr": _recall_at_fpr(mr, yy, kind_arr),
        "harm_score_logit": rule.logit,
        "harm_score_false_halt_by_kind": rule_fpr,
        "harm_score_recall": rule_recall,
        "ece": ece,
        "calibration": calib,
        "on_training_data": not walks.held,
    }


def _recall_at_fpr(
    mr: FloatArray, yy: FloatArray, kind_arr: npt.NDArray[np.str_]
) -> dict[str, Any]:
    # validation operating points (same definition as guard eval): recall at a benign kind's FPR
    recall_at_fpr: dict[str, Any] = {}
    for k, target in (("support", 0.01), ("general", 0.01), ("alarming", 0.05)):
        bk = mr[(kind_arr == k) & (yy == 0)]
        if bk.size < 20 or not (yy == 1).any():
            continue
        tk = threshold_at_rate(bk, target)
        recall_at_fpr[k] = {
            "fpr_target": target,
            "n_benign": int(bk.size),
            "threshold": tk,
            "recall": float((mr[yy == 1] >= tk).mean()),
        }
    return recall_at_fpr


def _rule_alone(held: HeldBack, rule: ScorerRule) -> tuple[dict[str, float], float | None]:
    # the scorer rule alone (s*): share of held-back replies that ever reach it
    rule_fpr: dict[str, float] = {}
    rule_recall: float | None = None
    if rule.logit is not None:
        reach = np.asarray(
            [float(x[1:].max()) >= rule.logit for x in rule.rule_logits if x.size > 1]
        )
        eval_w = held.walks
        ky = np.asarray([wk.kind for wk in eval_w if wk.nw is not None and wk.nw.size > 1])
        hy = np.asarray([wk.harmful for wk in eval_w if wk.nw is not None and wk.nw.size > 1])
        rule_fpr = {
            str(k): float(reach[(ky == k) & ~hy].mean())
            for k in sorted(set(ky.tolist()))
            if ((ky == k) & ~hy).any()
        }
        rule_recall = float(reach[hy].mean()) if hy.any() else None
    return rule_fpr, rule_recall
