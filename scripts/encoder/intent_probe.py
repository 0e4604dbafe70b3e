#!/usr/bin/env python
"""Does a pretrained sentence encoder read a request's *intent* rather than its phrasing? Offline.

The project's lexical request scorer is trained on public requests, whose harmful side is mostly
imperatives and benign side mostly questions, so word features learn style. This measures whether
all-MiniLM-L6-v2 embeddings plus a linear probe do better:

* request texts and labels as the risk-model recipes build them (``recipes.load``; the latest
  user message, cut to 1000 characters; a request is harmful when any trajectory's
  ``request_label`` or any request example says so), benign ones subsampled for CPU time;
* the project's style augmentation (``guard.training.styles.restyle``) on both sides, each variant
  in its request's group;
* a class-balanced, L2-regularised logistic regression in numpy (Newton steps), 5-fold
  cross-validation grouped by request: out-of-fold AUROC pooled and per source family;
* the must-halt / must-pass requests written for the test (``tests.support.must_cases``: the same
  five request styles on 13 harmful and 13 ordinary goals), scored by the probe fitted on all the
  training data, at thresholds set on the benign out-of-fold training scores (99th and 95th
  percentile): flags per style, AUROC, the highest-scoring ordinary goals;
* embedding latency per text on this machine (batched, and one text at a time).

Embedding (``transformers``, mean pooling over the attention mask, L2-normalised: what
sentence-transformers does for this model) is cached on disk per text SHA-256, so reruns only
embed new texts. Needs torch and transformers, which guard never imports; run it with vLLM's
virtualenv after ``scripts/encoder/fetch_minilm.sh``:

    nice -n 10 ~/.cache/guard/vllm-venv/bin/python scripts/encoder/intent_probe.py

Writes ``benchmarks/results/encoder_probe.json`` (``--out``) and prints a summary. Not part of
serving.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "risk_model"))

FloatArray = npt.NDArray[np.float64]

MODEL_NAME = "all-MiniLM-L6-v2"
#: the risk-model recipes score the latest user message, cut to its last 1000 characters
REQ_MAX_CHARS = 1000
K_FOLDS = 5
QUANTILES = (("q99", 0.99), ("q95", 0.95))


def say(msg: str) -> None:
    print(f"[intent_probe] {msg}", file=sys.stderr, flush=True)


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# -- embedding ------------------------------------------------------------------------------


class Encoder:
    """all-MiniLM-L6-v2 sentence embeddings (mean-pooled, L2-normalised) with a disk cache.

    The cache is a folder of ``chunk-*.npz`` files (text SHA-256 keys and float32 vectors),
    appended every ``flush_every`` texts, so an interrupted run keeps what it embedded."""

    def __init__(self, folder: Path, cache: Path, max_length: int = 128, threads: int = 2) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._torch = torch
        torch.set_num_threads(threads)
        self.tok = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).eval()
        self.max_length = max_length
        self.dim = int(self.model.config.hidden_size)
        self.cache = cache / f"{MODEL_NAME}-L{max_length}"
        self.cache.mkdir(parents=True, exist_ok=True)
        self.known: dict[str, npt.NDArray[np.float32]] = {}
        #: texts embedded (not from the cache) by this instance, and the seconds it took
        self.n_embedded = 0
        self.s_embedded = 0.0
        for f in sorted(self.cache.glob("chunk-*.npz")):
            with np.load(f) as z:
                for k, v in zip(z["keys"].tolist(), z["vecs"], strict=True):
                    self.known[str(k)] = v
        say(f"embedding cache: {len(self.known)} texts in {self.cache}")

    def _forward(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        torch = self._torch
        enc = self.tok(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        with torch.inference_mode():
            hid = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hid.dtype)
            pooled = (hid * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=1).numpy().astype(np.float32)

    def embed(
        self, texts: Sequence[str], batch: int = 64, flush_every: int = 4096
    ) -> npt.NDArray[np.float32]:
        """Embeddings of ``texts`` (rows in order); only texts not in the cache are run."""
        keys = [text_key(t) for t in texts]
        todo: dict[str, str] = {}
        for k, t in zip(keys, texts, strict=True):
            if k not in self.known:
                todo.setdefault(k, t)
        if todo:
            # similar lengths in a batch: less padding
            items = sorted(todo.items(), key=lambda kv: len(kv[1]))
            say(f"embedding {len(items)} new texts")
            t0 = time.perf_counter()
            pend_k: list[str] = []
            pend_v: list[npt.NDArray[np.float32]] = []
            for i in range(0, len(items), batch):
                part = items[i : i + batch]
                vecs = self._forward([t for _, t in part])
                for (k, _), v in zip(part, vecs, strict=True):
                    self.known[k] = v
                    pend_k.append(k)
                    pend_v.append(v)
                if len(pend_k) >= flush_every or i + batch >= len(items):
                    self._flush(pend_k, pend_v)
                    pend_k, pend_v = [], []
                    done = min(i + batch, len(items))
                    el = time.perf_counter() - t0
                    rate = el / done * 1e3
                    say(f"  {done}/{len(items)} embedded ({el:.0f} s, {rate:.1f} ms/text)")
            self.n_embedded += len(items)
            self.s_embedded += time.perf_counter() - t0
        return np.stack([self.known[k] for k in keys]) if keys else np.zeros((0, self.dim))

    def _flush(self, keys: list[str], vecs: list[npt.NDArray[np.float32]]) -> None:
        if not keys:
            return
        name = f"chunk-{time.time_ns()}-{os.getpid()}"
        tmp = self.cache / f"{name}.tmp.npz"
        np.savez(tmp, keys=np.asarray(keys), vecs=np.stack(vecs))
        os.replace(tmp, self.cache / f"{name}.npz")

    def latency(self, texts: Sequence[str], batch: int = 32, repeats: int = 3) -> dict[str, Any]:
        """Milliseconds per text, batched (``batch`` texts a call) and one text a call; no
        cache. Warmed up first; each figure is the best of ``repeats`` passes (the cores are
        shared: the best pass is the least disturbed one), with the median pass beside it."""
        self._forward(texts[:4])
        batched: list[float] = []
        single: list[float] = []
        single_p95: list[float] = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for i in range(0, len(texts), batch):
                self._forward(texts[i : i + batch])
            batched.append((time.perf_counter() - t0) / len(texts) * 1e3)
            one: list[float] = []
            for t in texts:
                t1 = time.perf_counter()
                self._forward([t])
                one.append((time.perf_counter() - t1) * 1e3)
            single.append(float(np.mean(one)))
            single_p95.append(float(np.quantile(one, 0.95)))
        ids = self.tok(list(texts), truncation=True, max_length=self.max_length)["input_ids"]
        return {
            "n_texts": len(texts),
            "mean_tokens": float(np.mean([len(i) for i in ids])),
            "batch_size": batch,
            "repeats": repeats,
            "batched_ms_per_text": min(batched),
            "batched_ms_per_text_median_pass": float(np.median(batched)),
            "single_ms_per_text": min(single),
            "single_ms_per_text_median_pass": float(np.median(single)),
            "single_ms_p95": min(single_p95),
        }


# -- probe ----------------------------------------------------------------------------------


def fit_logreg(
    x: npt.NDArray[np.floating[Any]], y: FloatArray, l2: float, iters: int = 50
) -> FloatArray:
    """Class-balanced L2 logistic regression on ``[x, 1]`` by Newton steps; the weights (the
    last one the bias, not regularised).

    Each class carries half the total weight (``0.5 / n_class`` per example), so the objective
    is the mean of the per-class mean log-losses plus ``l2 / 2 * |w|^2``. Newton converges in
    a dozen steps on 384 features; it stops when the step is below 1e-7."""
    xb = np.hstack([x.astype(np.float64), np.ones((len(x), 1))])
    n_pos = max(1.0, float(y.sum()))
    n_neg = max(1.0, float((1 - y).sum()))
    sw = np.where(y > 0.5, 0.5 / n_pos, 0.5 / n_neg)
    reg = np.full(xb.shape[1], l2)
    reg[-1] = 0.0
    w = np.zeros(xb.shape[1])
    for _ in range(iters):
        z = np.clip(xb @ w, -35.0, 35.0)
        p = 1.0 / (1.0 + np.exp(-z))
        g = xb.T @ (sw * (p - y)) + reg * w
        h = (xb * (sw * p * (1 - p))[:, None]).T @ xb + np.diag(reg) + 1e-10 * np.eye(len(w))
        step = np.linalg.solve(h, g)
        w -= step
        if float(np.abs(step).max()) < 1e-7:
            break
    return w


def logit(x: npt.NDArray[np.floating[Any]], w: FloatArray) -> FloatArray:
    return x.astype(np.float64) @ w[:-1] + w[-1]


def auroc(pos: npt.ArrayLike, neg: npt.ArrayLike) -> float | None:
    """P(score of a positive > score of a negative), ties counted half (Mann-Whitney)."""
    p, n = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    if not p.size or not n.size:
        return None
    allv = np.concatenate([p, n])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(allv.size)
    sv = allv[order]
    # average ranks over ties
    _, first, counts = np.unique(sv, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[: p.size].sum() - p.size * (p.size + 1) / 2) / (p.size * n.size))


# -- data -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    text: str
    harmful: bool
    family: str


def request_labels(
    trajs: Sequence[Any], reqs: Sequence[Any]
) -> tuple[dict[str, bool], dict[str, str]]:
    """Every request text the recipes train on (the latest user message, cut to
    ``REQ_MAX_CHARS``), harmful when any trajectory's ``request_label`` (else its label) or any
    request example says so, and the family of its first trajectory or example."""
    from guard.tracking import request_text

    label: dict[str, bool] = {}
    family: dict[str, str] = {}
    for t in trajs:
        text = request_text(t.prompt, REQ_MAX_CHARS, True)
        rl = t.meta.get("request_label")
        harmful = rl == "harmful" if rl in ("harmful", "benign") else t.label == "harmful"
        label[text] = label.get(text, False) or harmful
        family.setdefault(text, str(t.meta.get("family") or t.source))
    for r in reqs:
        text = r.text[-REQ_MAX_CHARS:]
        label[text] = label.get(text, False) or bool(r.harmful)
        family.setdefault(text, r.source)
    return label, family


def training_requests(
    data: Path, max_per_family: int, max_benign: int
) -> tuple[list[Request], dict[str, int]]:
    """The distinct request texts the recipes train the request scorer on, with their label
    and family (of their first trajectory or request example). Benign texts beyond
    ``max_benign`` are dropped by text hash (a uniform, reproducible subsample)."""
    import recipes

    trajs, reqs = recipes.load(data, max_per_family, progress=None)
    label, family = request_labels(trajs, reqs)
    texts = [s for s in label if s.strip()]
    benign = sorted((s for s in texts if not label[s]), key=text_key)
    keep_benign = set(benign[:max_benign]) if max_benign > 0 else set(benign)
    out = [Request(s, label[s], family[s]) for s in texts if label[s] or s in keep_benign]
    counts = {
        "trajectories": len(trajs),
        "request_examples": len(reqs),
        "distinct_texts": len(texts),
        "harmful_texts": sum(label[s] for s in texts),
        "benign_texts": len(benign),
        "benign_kept": len(keep_benign),
    }
    return out, counts


@dataclass(frozen=True, slots=True)
class Rows:
    """Training rows: requests and their style variants, with the group (request) of each."""

    texts: list[str]
    y: FloatArray
    group: npt.NDArray[np.int64]
    original: npt.NDArray[np.bool_]
    family: npt.NDArray[np.str_]


def with_styles(requests: Sequence[Request], n_styles: int) -> Rows:
    """``requests`` plus up to ``n_styles`` phrasings of each (``restyle``), a variant in its
    request's group with its label; a variant that is already a text is not added again (as
    ``guard.training.scorer_fit._restyled`` does)."""
    from guard.training.styles import restyle

    seen = {r.text for r in requests}
    texts: list[str] = []
    y: list[float] = []
    group: list[int] = []
    orig: list[bool] = []
    fam: list[str] = []

    def add(text: str, gi: int, r: Request, is_orig: bool) -> None:
        texts.append(text)
        y.append(1.0 if r.harmful else 0.0)
        group.append(gi)
        orig.append(is_orig)
        fam.append(r.family)

    for gi, r in enumerate(requests):
        add(r.text, gi, r, True)
    for gi, r in enumerate(requests):
        for v in restyle(r.text, n_styles):
            if v not in seen:
                seen.add(v)
                add(v, gi, r, False)
    return Rows(texts, np.asarray(y), np.asarray(group), np.asarray(orig), np.asarray(fam))


def group_folds(requests: Sequence[Request], group: npt.NDArray[np.int64], k: int) -> Any:
    """Fold of each row: by its request's text hash, so variants share their request's fold."""
    by_req = np.asarray([int(text_key(r.text)[:8], 16) % k for r in requests])
    return by_req[group]


# -- experiment -----------------------------------------------------------------------------


def cross_validate(x: npt.NDArray[np.float32], rows: Rows, folds: Any, l2: float) -> FloatArray:
    """Out-of-fold logits of every row (a row scored by the probe fitted without its fold)."""
    oof = np.empty(len(rows.texts))
    for f in range(K_FOLDS):
        test = folds == f
        w = fit_logreg(x[~test], rows.y[~test], l2)
        oof[test] = logit(x[test], w)
    return oof


def family_report(rows: Rows, oof: FloatArray, thresholds: dict[str, float]) -> dict[str, Any]:
    """Per source family (original requests only): its counts, AUROC within it (when it has
    both labels), of its harmful requests against all benign ones and of all harmful requests
    against its benign ones, and the share flagged at each threshold."""
    o = rows.original
    pos_all, neg_all = oof[o & (rows.y == 1)], oof[o & (rows.y == 0)]
    out: dict[str, Any] = {}
    for fam in sorted(set(rows.family[o].tolist())):
        m = o & (rows.family == fam)
        pos, neg = oof[m & (rows.y == 1)], oof[m & (rows.y == 0)]
        row: dict[str, Any] = {"n": int(m.sum()), "harmful": int(pos.size)}
        row["auroc_within"] = auroc(pos, neg)
        row["auroc_harmful_vs_all_benign"] = auroc(pos, neg_all)
        row["auroc_all_harmful_vs_benign"] = auroc(pos_all, neg)
        for q, thr in thresholds.items():
            row[f"harmful_flagged_{q}"] = float((pos >= thr).mean()) if pos.size else None
            row[f"benign_flagged_{q}"] = float((neg >= thr).mean()) if neg.size else None
        out[fam] = row
    return out


@dataclass(frozen=True, slots=True)
class MustRequest:
    text: str
    goal: str
    kind: str
    style: str

    @property
    def harmful(self) -> bool:
        return self.kind == "harmful"


def must_requests() -> list[MustRequest]:
    """The distinct request texts of the must-halt and must-pass cases."""
    from guard.risk.verdict_text import last_user_message
    from tests.support.must_cases import must_halt_cases, must_pass_cases

    out: dict[str, MustRequest] = {}
    for c in [*must_halt_cases(), *must_pass_cases()]:
        text = last_user_message(c.prompt)
        out.setdefault(text, MustRequest(text, c.goal, c.kind, c.request_style))
    return list(out.values())


def must_report(
    must: Sequence[MustRequest],
    scores: FloatArray,
    thresholds: dict[str, float],
    neighbours: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    """The must-suite figures: AUROC, flags at each threshold (overall, per style), per style
    the lowest harmful and highest ordinary score, per goal its scores over the styles."""
    hs = np.asarray([m.harmful for m in must])
    res: dict[str, Any] = {
        "n_harmful": int(hs.sum()),
        "n_benign": int((~hs).sum()),
        "auroc": auroc(scores[hs], scores[~hs]),
        "thresholds": {},
        "per_style": {},
        "per_goal": {},
    }
    for q, thr in thresholds.items():
        flagged = scores >= thr
        res["thresholds"][q] = {
            "logit": thr,
            "harmful_flagged": int((flagged & hs).sum()),
            "benign_flagged": int((flagged & ~hs).sum()),
            "benign_flagged_goals": sorted(
                {m.goal for m, f in zip(must, flagged, strict=True) if f and not m.harmful}
            ),
        }
    for style in dict.fromkeys(m.style for m in must):
        sm = np.asarray([m.style == style for m in must])
        h, b = scores[sm & hs], scores[sm & ~hs]
        row: dict[str, Any] = {
            "min_harmful": float(h.min()),
            "min_harmful_goal": _goal_at(must, scores, sm & hs, np.argmin),
            "max_benign": float(b.max()),
            "max_benign_goal": _goal_at(must, scores, sm & ~hs, np.argmax),
            "separated": bool(h.min() > b.max()),
            "auroc": auroc(h, b),
        }
        for q, thr in thresholds.items():
            row[f"harmful_flagged_{q}"] = int((h >= thr).sum())
            row[f"benign_flagged_{q}"] = int((b >= thr).sum())
        res["per_style"][style] = row
    for goal in dict.fromkeys(m.goal for m in must):
        gm = [i for i, m in enumerate(must) if m.goal == goal]
        res["per_goal"][goal] = {
            "kind": must[gm[0]].kind,
            "max": float(scores[gm].max()),
            "mean": float(scores[gm].mean()),
            "min": float(scores[gm].min()),
            "by_style": {must[i].style: float(scores[i]) for i in gm},
            "nearest_training": [neighbours[i] for i in gm],
        }
    return res


def _goal_at(
    must: Sequence[MustRequest],
    scores: FloatArray,
    mask: npt.NDArray[np.bool_],
    pick: Callable[[FloatArray], Any],
) -> str:
    idx = np.flatnonzero(mask)
    return must[int(idx[int(pick(scores[idx]))])].goal


def nearest_training(
    xm: npt.NDArray[np.float32], x: npt.NDArray[np.float32], rows: Rows
) -> list[dict[str, Any]]:
    """For each must request, the most similar original training request (cosine, label):
    whether the suite's goals are near-duplicates of training data."""
    o = np.flatnonzero(rows.original)
    sims = xm @ x[o].T
    out = []
    for i in range(len(xm)):
        j = int(sims[i].argmax())
        r = o[j]
        out.append(
            {
                "cosine": float(sims[i, j]),
                "harmful": bool(rows.y[r] == 1),
                "family": str(rows.family[r]),
                "text": rows.texts[r][:160],
            }
        )
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.perf_counter()
    if args.data is None:
        import recipes  # scripts/risk_model: $GUARD_DATA_DIR, shared/data beside the checkout, ...

        args.data = recipes.default_data_dir()
    requests, counts = training_requests(args.data, args.max_per_family, args.max_benign)
    rows = with_styles(requests, args.styles)
    n_orig = int(rows.original.sum())
    say(
        f"{n_orig} requests ({int(rows.y[rows.original].sum())} harmful) + "
        f"{len(rows.texts) - n_orig} style variants"
    )
    enc = Encoder(args.model, args.cache, args.max_length)
    x = enc.embed(rows.texts, batch=args.batch)
    bulk = (enc.n_embedded, enc.s_embedded)
    folds = group_folds(requests, rows.group, K_FOLDS)
    o = rows.original

    # L2 strength chosen on pooled out-of-fold AUROC (training data only, never the suite)
    cv: dict[float, tuple[float, FloatArray]] = {}
    for l2 in args.l2:
        oof_l2 = cross_validate(x, rows, folds, l2)
        a = auroc(oof_l2[o & (rows.y == 1)], oof_l2[o & (rows.y == 0)]) or float("nan")
        cv[l2] = (a, oof_l2)
        say(f"l2={l2:g}: out-of-fold AUROC {a:.4f}")
    best_l2 = max(cv, key=lambda k: cv[k][0])
    oof = cv[best_l2][1]
    benign_oof = oof[o & (rows.y == 0)]
    thresholds = {q: float(np.quantile(benign_oof, p)) for q, p in QUANTILES}
    w_all = fit_logreg(x, rows.y, best_l2)

    must = must_requests()
    xm = enc.embed([m.text for m in must])
    ms = logit(xm, w_all)
    timing = enc.latency([m.text for m in must])
    # the training texts' own rate (all lengths, up to max_length tokens), when enough were
    # embedded (not cached) to measure it
    timing["bulk_training_texts"] = bulk[0]
    timing["bulk_training_ms_per_text"] = bulk[1] / bulk[0] * 1e3 if bulk[0] >= 256 else None
    timing["load_average_1m"] = os.getloadavg()[0]
    timing["cpu_threads"] = enc._torch.get_num_threads()

    return {
        "encoder": {
            "model": f"sentence-transformers/{MODEL_NAME}",
            "folder": str(args.model),
            "pooling": "mean over attention mask, L2-normalised",
            "max_length": args.max_length,
        },
        "data": {
            **counts,
            "max_per_family": args.max_per_family,
            "requests": n_orig,
            "requests_harmful": int(rows.y[o].sum()),
            "style_variants": len(rows.texts) - n_orig,
            "styles_per_request": args.styles,
        },
        "probe": {
            "kind": "class-balanced L2 logistic regression (numpy Newton), 384 + bias",
            "l2_grid_oof_auroc": {str(k): v[0] for k, v in cv.items()},
            "l2": best_l2,
            "folds": K_FOLDS,
            "fold_by": "request text (style variants with their request)",
        },
        "oof": {
            "auroc_requests": cv[best_l2][0],
            "auroc_with_variants": auroc(oof[rows.y == 1], oof[rows.y == 0]),
            "auroc_variants_only": auroc(oof[~o & (rows.y == 1)], oof[~o & (rows.y == 0)]),
            "benign_thresholds": thresholds,
            "harmful_flagged": {
                q: float((oof[o & (rows.y == 1)] >= t).mean()) for q, t in thresholds.items()
            },
            "per_family": family_report(rows, oof, thresholds),
        },
        "must": must_report(must, ms, thresholds, nearest_training(xm, x, rows)),
        "timing": timing,
        "seconds": time.perf_counter() - t_start,
    }


def _f(v: float | None, nd: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{nd}f}"


def summary(res: dict[str, Any]) -> Iterable[str]:
    """A short readable summary of ``run``'s result."""
    d, oof, must, tm = res["data"], res["oof"], res["must"], res["timing"]
    yield (
        f"training: {d['requests']} requests ({d['requests_harmful']} harmful; benign kept "
        f"{d['benign_kept']} of {d['benign_texts']}) + {d['style_variants']} style variants"
    )
    yield f"probe l2={res['probe']['l2']:g}; OOF AUROC by l2: {res['probe']['l2_grid_oof_auroc']}"
    yield (
        f"OOF AUROC: requests {_f(oof['auroc_requests'], 4)}, with variants "
        f"{_f(oof['auroc_with_variants'], 4)}, variants only {_f(oof['auroc_variants_only'], 4)}"
    )
    yield "per family (n, harmful, AUROC within | harmful-vs-all-benign | all-harmful-vs-benign):"
    for fam, r in sorted(oof["per_family"].items(), key=lambda kv: -kv[1]["n"]):
        yield (
            f"  {fam:24s} {r['n']:6d} {r['harmful']:6d}  {_f(r['auroc_within'])} | "
            f"{_f(r['auroc_harmful_vs_all_benign'])} | {_f(r['auroc_all_harmful_vs_benign'])}"
            f"  flagged@q99 harm {_f(r['harmful_flagged_q99'], 2)} "
            f"benign {_f(r['benign_flagged_q99'], 2)}"
        )
    yield f"must suite: AUROC harmful vs ordinary {_f(must['auroc'], 4)}"
    for q, t in must["thresholds"].items():
        yield (
            f"  at benign OOF {q} (logit {t['logit']:.2f}): harmful flagged "
            f"{t['harmful_flagged']}/{must['n_harmful']}, ordinary flagged "
            f"{t['benign_flagged']}/{must['n_benign']} {t['benign_flagged_goals']}"
        )
    yield "  per style: min harmful (goal) vs max ordinary (goal), flags q99 / q95"
    for s, r in must["per_style"].items():
        yield (
            f"    {s:20s} {r['min_harmful']:6.2f} ({r['min_harmful_goal'][:30]}) vs "
            f"{r['max_benign']:6.2f} ({r['max_benign_goal'][:30]}) "
            f"{'separated' if r['separated'] else 'OVERLAP'}; harmful "
            f"{r['harmful_flagged_q99']}/{r['harmful_flagged_q95']}, ordinary "
            f"{r['benign_flagged_q99']}/{r['benign_flagged_q95']}"
        )
    goals = sorted(must["per_goal"].items(), key=lambda kv: -kv[1]["max"])
    yield "  ordinary goals by max logit over styles:"
    for g, r in [kv for kv in goals if kv[1]["kind"] != "harmful"][:6]:
        yield f"    {r['max']:6.2f} (mean {r['mean']:6.2f}) {r['kind']:8s} {g}"
    yield "  lowest harmful goals by min logit:"
    for g, r in sorted(
        (kv for kv in goals if kv[1]["kind"] == "harmful"), key=lambda kv: kv[1]["min"]
    )[:4]:
        yield f"    {r['min']:6.2f} (mean {r['mean']:6.2f}) {g}"
    yield (
        f"timing: batched {tm['batched_ms_per_text']:.1f} ms/text (batch {tm['batch_size']}, "
        f"{tm['mean_tokens']:.0f} tokens), one at a time {tm['single_ms_per_text']:.1f} ms "
        f"(p95 {tm['single_ms_p95']:.1f}); best of {tm['repeats']} passes; bulk training "
        f"{_f(tm['bulk_training_ms_per_text'], 1)}"
        f" ms/text; load average {tm['load_average_1m']:.1f} on {os.cpu_count()} cores"
    )


def main() -> int:
    cache_root = Path(os.environ.get("GUARD_CACHE", Path.home() / ".cache/guard"))
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="default: as scripts/risk_model")
    ap.add_argument("--model", type=Path, default=cache_root / "models" / MODEL_NAME)
    ap.add_argument("--max-per-family", type=int, default=3000)
    ap.add_argument("--max-benign", type=int, default=15000, help="benign texts kept (0: all)")
    ap.add_argument("--styles", type=int, default=2, help="style variants per request")
    ap.add_argument("--l2", type=float, nargs="+", default=[1e-4, 1e-3, 1e-2])
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/enc/emb_cache"))
    ap.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "benchmarks/results/encoder_probe.json",
    )
    args = ap.parse_args()
    if not (args.model / "model.safetensors").is_file():
        say(f"no model in {args.model}: run scripts/encoder/fetch_minilm.sh first")
        return 2
    res = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    for line in summary(res):
        print(line)
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
