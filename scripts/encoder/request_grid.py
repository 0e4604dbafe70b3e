#!/usr/bin/env python
"""Which request detector holds the budgets off distribution? An offline grid.

``answer_probe.py`` showed that the answer's embedding adds nothing at the budgets and that the
request side sets the ceiling: a benign request that reads as harmful and gets a helpful answer
shares its cell with harmful compliance. This measures, leave-one-family-out and with the phase
rule (an answer with a refusal among its first words is never halted), several request detectors
and their combinations, each at one τ: the lowest that keeps every left-out benign family within
its budget (support 1 %, general 1 %, alarming 5 %).

Detectors, each fitted for every left-out family F on every other family's request texts (3
style variants each, as the recipes train):

* ``enc``: the encoder recipe's linear probe on all-MiniLM-L6-v2 (16 phrasing directions
  projected out);
* ``ngram``: the shipped request scorer's features (words, character 3-5-grams, bigrams, hashed;
  l2-normalised) in a logistic regression, no GloVe read-out;
* ``mlp``: a one-hidden-layer network on the same (projected) embeddings;
* combinations: each logit standardised by the F-blind benign training texts' mean and spread,
  then averaged (``enc+ngram``, ``mlp+ngram``) or the minimum taken (``min(enc,ngram)``: both
  must read harmful).

``--clean`` also fits every detector without the harmful-labelled training requests that a
5-fold out-of-fold encoder probe scores below the median benign request (label noise in the
question sets: HarmfulQA labels "How to dispose of drugs safely?" harmful). The cleaning folds
see every family, F included (F's texts are never trained on, but they help decide which other
texts are dropped: a mild leak, said where the figures are reported).

Per-family logits go to ``--scores`` (npz) so other rules can be read without refitting;
figures to ``--out``. Embeddings come from the on-disk cache (the encoder server is only needed
for texts not cached yet: ``scripts/vllm/encoder_server.sh start``).

    .venv/bin/python scripts/encoder/request_grid.py [--clean] [--out FILE] [--scores FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "risk_model"))
sys.path.insert(0, str(ROOT / "scripts" / "encoder"))

import recipes  # noqa: E402
from answer_probe import REQ_MAX_CHARS, evaluate, refuses_early  # noqa: E402
from intent_probe import request_labels  # noqa: E402

from guard.tracking import request_text, text_feature_ids  # noqa: E402
from guard.training.lofo import budget_for, family_of  # noqa: E402
from guard.training.logreg import _balanced, _source_weights, train_logreg  # noqa: E402
from guard.training.probe_fit import (  # noqa: E402
    embed_checked,
    phrasing_subspace,
    train_dense_logreg,
)
from guard.training.scorer_fit import _restyled  # noqa: E402
from guard.training.trajectories import Trajectory  # noqa: E402

FloatArray = npt.NDArray[np.float64]
N_HASH_LOG2 = 18
CHAR_NGRAMS = (3, 5)


def say(msg: str) -> None:
    print(f"[request_grid] {msg}", file=sys.stderr, flush=True)


# -- detectors --------------------------------------------------------------------------------


class Ngram:
    """Hashed word / character n-gram features of every text, computed once."""

    def __init__(self, texts: list[str]) -> None:
        self.mask = (1 << N_HASH_LOG2) - 1
        self.ids = [self.features(s) for s in texts]

    def features(self, s: str) -> npt.NDArray[np.int64]:
        return np.unique(np.asarray(text_feature_ids(s, self.mask, CHAR_NGRAMS), dtype=np.int64))

    def fit(self, keep: npt.NDArray[np.int64], y: FloatArray, sw: FloatArray) -> Any:
        docs = [self.ids[i] for i in keep]
        lens = np.asarray([d.size for d in docs])
        doc = np.repeat(np.arange(len(docs)), lens)
        feat = np.concatenate(docs)
        val = (1.0 / np.sqrt(np.maximum(lens, 1)))[doc]
        return train_logreg(doc, feat, val, y, sw, self.mask + 1, l2=1e-5, iterations=150, lr=0.1)

    def logits(self, model: Any, texts: list[str]) -> FloatArray:
        w, b = model
        out = np.empty(len(texts))
        for i, s in enumerate(texts):
            f = self.features(s)
            out[i] = b + w[f].sum() / np.sqrt(max(f.size, 1))
        return out


def fit_mlp(
    x: FloatArray,
    y: FloatArray,
    sw: FloatArray,
    *,
    hidden: int = 64,
    epochs: int = 6,
    batch: int = 256,
    lr: float = 2e-3,
    l2: float = 1e-4,
    seed: int = 0,
) -> tuple[FloatArray, FloatArray, FloatArray, float]:
    """One hidden ReLU layer, weighted cross-entropy, minibatch Adam (numpy)."""
    rng = np.random.default_rng(seed)
    d = x.shape[1]
    params = [
        rng.normal(0, 1 / np.sqrt(d), (d, hidden)),
        np.zeros(hidden),
        rng.normal(0, 1 / np.sqrt(hidden), hidden),
        np.zeros(1),
    ]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    sw = sw / sw.mean()
    t = 0
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for i in range(0, len(y), batch):
            j = order[i : i + batch]
            xb, yb, wb = x[j], y[j], sw[j]
            h_pre = xb @ params[0] + params[1]
            h = np.maximum(h_pre, 0)
            z = h @ params[2] + params[3][0]
            p = 0.5 * (1 + np.tanh(0.5 * z))
            g = wb * (p - yb) / len(j)
            g2 = h.T @ g + l2 * params[2]
            g3 = np.asarray([g.sum()])
            gh = np.outer(g, params[2]) * (h_pre > 0)
            g0 = xb.T @ gh + l2 * params[0]
            g1 = gh.sum(axis=0)
            t += 1
            for k, gk in enumerate((g0, g1, g2, g3)):
                m[k] = 0.9 * m[k] + 0.1 * gk
                v[k] = 0.999 * v[k] + 0.001 * gk * gk
                params[k] -= lr * (m[k] / (1 - 0.9**t)) / (np.sqrt(v[k] / (1 - 0.999**t)) + 1e-8)
    return params[0], params[1], params[2], float(params[3][0])


def mlp_logits(
    model: tuple[FloatArray, FloatArray, FloatArray, float], x: FloatArray
) -> FloatArray:
    w0, b0, w1, b1 = model
    return np.asarray(np.maximum(x @ w0 + b0, 0) @ w1 + b1)


def standardise(z: FloatArray, benign_train: FloatArray) -> FloatArray:
    return (z - benign_train.mean()) / max(float(benign_train.std()), 1e-9)


# -- the run ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-per-family", type=int, default=300)
    ap.add_argument("--families", default="", help="comma-separated (default: every family)")
    ap.add_argument("--clean", action="store_true", help="also fit without noisy harmful labels")
    ap.add_argument("--no-mlp", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/request_grid.json")
    ap.add_argument("--scores", type=Path, default=ROOT / "build" / "request_grid_scores.npz")
    ap.add_argument("--merge", type=Path, nargs="*", help="only report these --scores files")
    a = ap.parse_args(argv)
    if a.merge:
        report(
            a.merge,
            a.out,
            {"max_per_family": a.max_per_family, "merged": [str(p) for p in a.merge]},
        )
        return 0
    t0 = time.perf_counter()
    trajs, reqs = recipes.load(recipes.default_data_dir(), a.max_per_family, progress=None)
    probes = recipes.request_probes(reqs)
    enc = recipes.encoder()
    by_fam: dict[str, list[Trajectory]] = {}
    for t in trajs:
        by_fam.setdefault(family_of(t), []).append(t)
    request_only = set(probes)
    for f, ts in probes.items():
        by_fam.setdefault(f, []).extend(ts)
    fams = [f for f in a.families.split(",") if f in by_fam] or sorted(by_fam)

    req_label, req_fam = request_labels(trajs, reqs)
    req_texts = [s for s in req_label if s.strip()]
    rt, ry, rsrc, variant_of = _restyled(
        req_texts,
        np.asarray([1.0 if req_label[s] else 0.0 for s in req_texts]),
        [req_fam[s] for s in req_texts],
        3,
    )
    rfam = np.asarray([req_fam[variant_of.get(s, s)] for s in rt])
    say(f"{len(rt)} request texts (with style variants); {len(by_fam)} families")
    x_all = embed_checked(enc, rt).astype(np.float64)
    index = {s: i for i, s in enumerate(rt)}
    ngram = Ngram(rt)
    say(f"features ready ({time.perf_counter() - t0:.0f} s)")

    noisy = np.zeros(len(rt), dtype=bool)
    if a.clean:
        noisy = noisy_harmful(x_all, ry, rsrc, rt, variant_of)
        by = Counter(rfam[noisy].tolist())
        say(f"noisy harmful labels: {int(noisy.sum())} texts; by family {by.most_common(8)}")

    variants = ["plain"] + (["clean"] if a.clean else [])
    store: dict[str, Any] = {}
    scores: dict[str, dict[str, dict[str, Any]]] = {v: {} for v in variants}
    for k, f in enumerate(fams, 1):
        mine = by_fam[f]
        texts = [request_text(t.prompt, REQ_MAX_CHARS, True) for t in mine]
        xr = embed_checked(enc, texts).astype(np.float64)
        refused = np.asarray([refuses_early(t.response) for t in mine])
        harmful = np.asarray([t.harmful for t in mine])
        kinds = Counter(t.kind for t in mine if not t.harmful)
        safe_kind = kinds.most_common(1)[0][0] if kinds else None
        for var in variants:
            keep_mask = (rfam != f) & ~(noisy if var == "clean" else False)
            keep = np.flatnonzero(keep_mask)
            y = ry[keep]
            sw = _balanced(y, _source_weights([rsrc[i] for i in keep], y))
            pairs = [
                (index[v], index[o])
                for v, o in variant_of.items()
                if v != o and keep_mask[index[v]] and keep_mask[index[o]]
            ]
            x = x_all[keep]
            u = phrasing_subspace(x_all, index, [(rt[i], rt[j]) for i, j in pairs], 16)
            xp = x - (x @ u.T) @ u if u is not None else x
            xrp = xr - (xr @ u.T) @ u if u is not None else xr
            we, be = train_dense_logreg(xp, y, sw, l2=1e-4, iterations=300)
            z: dict[str, FloatArray] = {}
            z_tr: dict[str, FloatArray] = {}
            z["enc"], z_tr["enc"] = xrp @ we + be, xp @ we + be
            nm = ngram.fit(keep, y, sw)
            z["ngram"] = ngram.logits(nm, texts)
            z_tr["ngram"] = ngram.logits(nm, [rt[i] for i in keep[y == 0][::7]])
            ben_enc = z_tr["enc"][y == 0]
            if not a.no_mlp:
                mm = fit_mlp(xp, y, sw)
                z["mlp"], z_tr["mlp"] = mlp_logits(mm, xrp), mlp_logits(mm, xp)
            ben = {"enc": ben_enc, "ngram": z_tr["ngram"]}
            if "mlp" in z:
                ben["mlp"] = z_tr["mlp"][y == 0]
            zs = {n: standardise(z[n], ben[n]) for n in z}
            rules = {n: z[n] for n in z}
            rules["enc+ngram"] = 0.5 * (zs["enc"] + zs["ngram"])
            rules["min(enc,ngram)"] = np.minimum(zs["enc"], zs["ngram"])
            if "mlp" in z:
                rules["mlp+ngram"] = 0.5 * (zs["mlp"] + zs["ngram"])
            for n, s in z.items():
                store[f"{var}/{f}/{n}"] = s
            scores[var][f] = {
                "harmful": harmful,
                "budget": budget_for(safe_kind) if safe_kind else None,
                "safe_kind": safe_kind,
                "request_only": f in request_only,
                "rules": {n: np.where(refused, -np.inf, s) for n, s in rules.items()},
                "refused_harmful": int((refused & harmful).sum()),
            }
        store[f"meta/{f}/harmful"] = harmful
        store[f"meta/{f}/refused"] = refused
        store[f"meta/{f}/texts"] = np.asarray(texts, dtype=object)
        say(f"{k}/{len(fams)} {f}: {len(mine)} trajectories ({time.perf_counter() - t0:.0f} s)")

    for var in variants:
        for f, d in scores[var].items():
            for n, r in d["rules"].items():
                store[f"rule/{var}/{f}/{n}"] = r
            store[f"info/{var}/{f}"] = np.asarray(
                json.dumps(
                    {k: d[k] for k in ("budget", "safe_kind", "request_only", "refused_harmful")}
                )
            )
    a.scores.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(a.scores, **store)
    report(
        [a.scores],
        a.out,
        {
            "max_per_family": a.max_per_family,
            "encoder": enc.name,
            "seconds": round(time.perf_counter() - t0, 1),
        },
    )
    return 0


def load_scores(paths: list[Path]) -> dict[str, dict[str, dict[str, Any]]]:
    """variant -> family -> the dict ``answer_probe.evaluate`` reads, from ``--scores`` files."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for p in paths:
        z = np.load(p, allow_pickle=True)
        for key in z.files:
            if not key.startswith("info/"):
                continue
            _, var, f = key.split("/", 2)
            d = dict(json.loads(str(z[key])))
            d["harmful"] = z[f"meta/{f}/harmful"]
            prefix = f"rule/{var}/{f}/"
            d["rules"] = {k[len(prefix) :]: z[k] for k in z.files if k.startswith(prefix)}
            out.setdefault(var, {})[f] = d
    return out


def report(paths: list[Path], dest: Path, extra: dict[str, Any]) -> None:
    scores = load_scores(paths)
    out: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), **extra, "variants": {}}
    for var, fam_scores in scores.items():
        rule_names = list(next(iter(fam_scores.values()))["rules"])
        out["variants"][var] = {}
        for r in rule_names:
            res = evaluate(fam_scores, r)
            out["variants"][var][r] = res
            say(
                f"{var} {r}: τ {res['tau']:.3f}, mean recall {res['mean_recall']}, "
                f"binding {res['binding_benign_family']}, worst {res['worst']}"
            )
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n")


def noisy_harmful(
    x: FloatArray, y: FloatArray, src: list[str], texts: list[str], variant_of: dict[str, str]
) -> npt.NDArray[np.bool_]:
    """Harmful-labelled texts whose 5-fold out-of-fold probe logit is below the median benign
    one (folds by original request, so a text's variants share its fold)."""
    import zlib

    fold = np.asarray([zlib.crc32(variant_of.get(s, s).encode()) % 5 for s in texts])
    oof = np.empty(len(y))
    sw = _balanced(y, _source_weights(src, y))
    for k in range(5):
        tr = fold != k
        w, b = train_dense_logreg(x[tr], y[tr], sw[tr], l2=1e-4, iterations=300)
        oof[~tr] = x[~tr] @ w + b
    cut = float(np.median(oof[y == 0]))
    return np.asarray((y == 1) & (oof < cut))


if __name__ == "__main__":
    raise SystemExit(main())
