"""The report stage of ``fit``: the fit report (``guard fit`` prints and writes it).

Takes every stage's value (``Inputs``, ``Walks``, ``RequestScorerFit``, ``Bins``, the counts,
``HeldBack``, ``ScorerRule``, ``Threshold``) and gives ``fit_report``'s dict: configuration, data
counts, sparsity, held-back figures (recall and false halts at the threshold, recall at fixed
false-halt rates, s* alone, calibration) and the Markov-order test. ``report_text`` formats it.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from guard.training.bins import Bins
from guard.training.chain_fit import markov_order_test
from guard.training.scorer_fit import RequestScorerFit
from guard.training.threshold import HeldBack, ScorerRule, Threshold, threshold_at_rate

if TYPE_CHECKING:  # guard.training.fit imports this module
    from guard.training.fit import FitConfig, Inputs, Walks

FloatArray = npt.NDArray[np.float64]


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
