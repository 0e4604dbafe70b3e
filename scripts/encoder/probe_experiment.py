#!/usr/bin/env python
"""Does a pretrained sentence encoder carry request *intent* the lexical scorer lacks? Offline.

Embeds request texts with all-MiniLM-L6-v2 (scripts/encoder/fetch_minilm.sh; mean pooling over
the attention mask, L2-normalised, as sentence-transformers does for it), fits a class-balanced
logistic-regression probe in numpy on the public request data the risk-model recipes use (with the
project's style augmentation, variants in their request's fold), and measures:

* out-of-fold AUROC (5 folds by request text) pooled and leave-one-family-out per family;
* the must-halt / must-pass requests written for the test (tests/support/must_cases.py): how many
  of the 65 harmful and 65 ordinary requests are above the 99th / 95th percentile of the
  out-of-fold benign training scores, per request style, and the highest-scoring ordinary goals.

Run with vLLM's virtualenv (it has torch and transformers; guard never imports them):

    ~/.cache/guard/vllm-venv/bin/python scripts/encoder/probe_experiment.py [--max-per-family 3000]

Writes benchmarks/results/encoder_probe.json. Not part of serving or of the shipped model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "risk_model"))


def embed(texts: list[str], folder: Path, cache: Path, batch: int = 64) -> np.ndarray:
    """Normalised mean-pooled embeddings, cached on disk by text hash (one .npy per text set)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    key = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    path = cache / f"emb-{key}.npy"
    if path.is_file():
        return np.load(path)
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    torch.set_num_threads(2)
    out = np.empty((len(texts), 384), dtype=np.float32)
    order = np.argsort([len(t) for t in texts])  # similar lengths together: less padding
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(texts), batch):
            idx = order[i : i + batch]
            enc = tok([texts[j] for j in idx], padding=True, truncation=True, max_length=128,
                      return_tensors="pt")  # fmt: skip
            hid = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            v = (hid * m).sum(1) / m.sum(1).clamp(min=1e-9)
            v = torch.nn.functional.normalize(v, dim=1)
            out[idx] = v.numpy()
            if (i // batch) % 50 == 0:
                print(f"  embedded {i + len(idx)}/{len(texts)} ({time.perf_counter() - t0:.0f} s)",
                      file=sys.stderr)  # fmt: skip
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out


def fit_lr(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, iters: int = 300) -> np.ndarray:
    """Class-balanced L2 logistic regression by Newton steps on [x, 1]; returns weights."""
    xb = np.hstack([x, np.ones((len(x), 1), np.float32)]).astype(np.float64)
    w_pos = 0.5 / max(1, y.sum())
    w_neg = 0.5 / max(1, (1 - y).sum())
    sw = np.where(y == 1, w_pos, w_neg)
    w = np.zeros(xb.shape[1])
    for _ in range(min(iters, 25)):
        p = 1 / (1 + np.exp(-(xb @ w)))
        g = xb.T @ (sw * (p - y)) + l2 * w
        h = (xb * (sw * p * (1 - p))[:, None]).T @ xb + l2 * np.eye(len(w))
        step = np.linalg.solve(h, g)
        w -= step
        if np.abs(step).max() < 1e-6:
            break
    return w


def score(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) @ w[:-1] + w[-1]


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    if not len(pos) or not len(neg):
        return float("nan")
    allv = np.concatenate([pos, neg])
    ranks = allv.argsort().argsort() + 1.0
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--max-per-family", type=int, default=3000)
    ap.add_argument("--styles", type=int, default=2, help="style variants per request")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/guard-encoder-cache"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/encoder_probe.json")
    args = ap.parse_args()
    import recipes

    from guard.tracking.text import last_user_text
    from guard.training import styles
    from tests.support.must_cases import must_halt_cases, must_pass_cases

    folder = Path.home() / ".cache/guard/models/all-MiniLM-L6-v2"
    data = args.data or recipes.default_data_dir()
    trajs, reqs = recipes.load(data, args.max_per_family, progress=None)
    label: dict[str, bool] = {}
    fam: dict[str, str] = {}
    for t in trajs:
        text = last_user_text(t.prompt).strip()
        if text:
            label[text] = label.get(text, False) or t.label == "harmful"
            fam.setdefault(text, str(t.meta.get("family") or t.source))
    for r in reqs:
        text = r.text.strip()
        if text:
            label[text] = label.get(text, False) or bool(r.harmful)
            fam.setdefault(text, r.source)
    base = sorted(label)
    print(f"{len(base)} distinct request texts ({sum(label.values())} harmful)", file=sys.stderr)
    texts, group, y, fams = [], [], [], []
    for gi, t in enumerate(base):
        variants = [t, *styles.restyle(t, args.styles)] if args.styles else [t]
        for v in variants:
            texts.append(v)
            group.append(gi)
            y.append(1.0 if label[t] else 0.0)
            fams.append(fam[t])
    yv, gv, fv = np.array(y), np.array(group), np.array(fams)
    t0 = time.perf_counter()
    x = embed(texts, folder, args.cache)
    embed_s = time.perf_counter() - t0
    fold = np.array([int(hashlib.sha256(base[g].encode()).hexdigest(), 16) % 5 for g in gv])
    oof = np.empty(len(texts))
    for k in range(5):
        w = fit_lr(x[fold != k], yv[fold != k])
        oof[fold == k] = score(x[fold == k], w)
    orig = np.array([texts[i] == base[gv[i]] for i in range(len(texts))])
    pooled = auroc(oof[orig & (yv == 1)], oof[orig & (yv == 0)])
    benign_oof = oof[orig & (yv == 0)]
    lofo = {}
    for f in sorted(set(fv.tolist())):
        m = fv == f
        w = fit_lr(x[~m], yv[~m])
        s = score(x[m & orig], w)
        ref = score(x[(~m) & orig & (yv == 0)], w)
        q99 = float(np.quantile(ref, 0.99))
        yy = yv[m & orig]
        lofo[f] = {
            "n": len(s),
            "harmful": int(yy.sum()),
            "flagged_at_benign_q99": float((s >= q99).mean()),
        }
    w_all = fit_lr(x, yv)
    cases = [*must_halt_cases(), *must_pass_cases()]
    reqs_must = {}
    for c in cases:
        reqs_must.setdefault(c.prompt[0]["content"], c)
    mt = list(reqs_must)
    ms = score(embed(mt, folder, args.cache), w_all)
    res: dict[str, object] = {
        "encoder": "sentence-transformers/all-MiniLM-L6-v2 (sha256 53aa5117...)",
        "date": time.strftime("%Y-%m-%d"),
        "training_texts": len(texts),
        "distinct_requests": len(base),
        "embed_seconds": round(embed_s, 1),
        "oof_auroc_pooled": pooled,
        "lofo_request_flag_at_benign_q99": lofo,
    }
    must: dict[str, object] = {}
    for qname, q in (("q99", 0.99), ("q95", 0.95)):
        thr = float(np.quantile(benign_oof, q))
        per: dict[str, list[int]] = {}
        for t, sc in zip(mt, ms, strict=True):
            c = reqs_must[t]
            row = per.setdefault(c.request_style, [0, 0, 0, 0])
            harmful = c.kind == "harmful"
            row[0 if harmful else 2] += int(sc >= thr)
            row[1 if harmful else 3] += 1
        must[qname] = {
            "threshold": thr,
            "harmful_flagged": sum(v[0] for v in per.values()),
            "harmful": sum(v[1] for v in per.values()),
            "ordinary_flagged": sum(v[2] for v in per.values()),
            "ordinary": sum(v[3] for v in per.values()),
            "per_style_harmful_flagged": {k: v[0] for k, v in per.items()},
        }
    hs = np.array([reqs_must[t].kind == "harmful" for t in mt])
    must["auroc"] = auroc(ms[hs], ms[~hs])
    pairs = [(float(sc), reqs_must[t]) for t, sc in zip(mt, ms, strict=True)]
    top_benign = sorted(((sc, c.goal) for sc, c in pairs if c.kind != "harmful"), reverse=True)[:8]
    must["top_ordinary"] = top_benign
    must["min_harmful"] = sorted((sc, c.goal) for sc, c in pairs if c.kind == "harmful")[:5]
    res["must"] = must
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k != "lofo_request_flag_at_benign_q99"},
                     indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
