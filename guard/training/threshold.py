"""The threshold stage of ``fit``: held-back scores, the scorer rule s* and the threshold tau.

Takes the held-back walks (the training ones when nothing is held back), the response scorer,
the bins and the artifact, and gives

- ``score_held_back`` -> ``HeldBack``: the shipped scorer's scores of those walks;
- ``choose_scorer_rule`` -> ``ScorerRule``: s* (``harm_score_fpr``, ``harm_score_budgets``);
- ``choose_threshold`` -> ``Threshold``: the held-back walks replayed through the fitted model
  (s* included) and the suggested threshold read off the benign replies' false-halt budgets.

``threshold_at_rate`` is the one definition of "threshold at a false-halt rate" (``guard eval``
and the LOFO protocol use it too).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from guard.risk.model import RiskModel
from guard.training.bins import Bins, walk_states
from guard.training.chain_fit import Artifact, walk_risks
from guard.training.scorer_fit import ResponseScorerFit

if TYPE_CHECKING:  # guard.training.fit imports this module
    from guard.training.fit import FitConfig, Inputs, Progress, Walk, Walks

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


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


# -- held-back scores, scorer rule s* -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeldBack:
    """The walks the threshold and s* are chosen on, with the shipped scorer's scores."""

    walks: list[Walk]
    logits: list[FloatArray]
    #: kinds held to another kind's budget (``FitConfig.threshold_pooled``)
    pooled: dict[str, str]


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
