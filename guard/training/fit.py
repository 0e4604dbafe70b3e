"""Fitting a risk model from labelled trajectories (``guard fit``): the configuration, the input
checks and walks (the data stage), and ``fit``, which runs the stages in order.

Pipeline: extract per-token walks (feature ids, phase) -> train the lexical scorers (hashed-feature
logistic regression, numpy) -> quantise weights -> per-depth quantile bins -> count depth-indexed
transitions (HARM at onset or at the end of a harmful trajectory, END at the end of a safe one,
nothing at the end of a censored one) -> Dirichlet smoothing with back-off -> tables.

``fit`` runs it as a pipeline of stages, each handing the next a frozen value, one module per
role:

- data (this module): ``check_inputs`` (-> ``Inputs``), ``extract_walks`` (-> ``Walks``);
- scorers (``guard.training.scorer_fit``): ``fit_request_scorer`` (-> ``RequestScorerFit``),
  ``attach_request_probe`` (-> ``ProbeFit``, with ``encoder_probe``), ``fit_response_scorer``
  (-> ``ResponseScorerFit``);
- bins (``guard.training.bins``): ``assign_request_bins``, ``response_bins`` (-> ``Bins``);
- chain (``guard.training.chain_fit``): ``count_transitions``, ``build_artifact``
  (-> ``Artifact``);
- threshold (``guard.training.threshold``): ``score_held_back`` (-> ``HeldBack``),
  ``choose_scorer_rule`` (-> ``ScorerRule``), ``choose_threshold`` (-> ``Threshold``);
- report (``guard.training.fit_report``): ``fit_report``.

The stage modules import this one's types (``FitConfig``, ``Walk``, ``Inputs``, ``Walks``) for
type checking only: this module imports them.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from guard.errors import DataError
from guard.risk.model import RiskModel
from guard.tracking import LexicalScorer, request_text
from guard.tracking.text import context_secrets, leak_watch
from guard.training.bins import assign_request_bins, response_bins
from guard.training.chain_fit import build_artifact, count_transitions
from guard.training.embeddings import WordVectors
from guard.training.external import (
    SCORER_MODES,
    ExternalScorer,
    ExternalSpec,
    ext_bin_series,
    prefix_texts,
    score_all,
    verdict_points,
)
from guard.training.fit_report import fit_report
from guard.training.phrases import cyclic_rotations
from guard.training.probe_fit import Encoder
from guard.training.report_text import _summary, json_safe
from guard.training.scorer_fit import (
    attach_request_probe,
    fit_request_scorer,
    fit_response_scorer,
)
from guard.training.threshold import choose_scorer_rule, choose_threshold, score_held_back
from guard.training.trajectories import Trajectory

FloatArray = npt.NDArray[np.float64]
Progress = Callable[[str], None]
#: progress of a long fitting step: ``(label, done, total)`` (e.g. a progress bar in the CLI)
Steps = Callable[[str, int, int], None]


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
    #: the verdict's bin is of the mean of the probe's and the lexical request scorer's logits,
    #: each standardised on the benign training requests' out-of-fold scores (two views of the
    #: request: the encoder's meaning, the n-grams' explicit words); serving mixes the same way
    #: (``guard.tracking.tracker.mix_verdict``)
    probe_lexical_mix: bool = False
    #: quantile levels of the benign / harmful out-of-fold (mixed) verdicts the verdict's bin
    #: edges sit at (``probe_lexical_mix`` only; the plain probe keeps the defaults)
    probe_benign_levels: tuple[float, ...] = (0.5, 0.9, 0.98, 0.995)
    probe_harmful_levels: tuple[float, ...] = (0.25, 0.5)


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


# -- the fit: a pipeline of stages, each handing the next a frozen value --------------------


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
