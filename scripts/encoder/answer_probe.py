#!/usr/bin/env python
"""Does the *answer's* embedding add the information the request probe lacks? Offline.

The ``encoder`` recipe (request probe on all-MiniLM-L6-v2, compliance = no early refusal) lost
at the false-halt budgets: benign families whose requests read as harmful to the probe and that
get helpful answers (arena-hard's security coding tasks, CoCoNot, the constructed alarming set)
land in the cell of a harmful request answered compliantly, and the lexical response bin cannot
tell them apart (docs/evaluation.md). This measures, leave-one-family-out and before anything is
built into the state, whether a linear probe on the embedding of the answer so far separates
them:

* the families, trajectories and request-only probes exactly as ``scripts/risk_model/lofo.py``
  loads them (``--max-per-family``, default 300 as in the ``encoder`` run);
* for every left-out family F: a request probe (``guard.training.probe_fit.fit_request_probe``,
  the recipe's settings: 3 style variants per request, 16 phrasing directions projected out)
  and an answer probe (class-balanced logistic regression, every family weighing the same) on
  the embeddings of the answer's first ``--checkpoints`` words (client prefill included), both
  trained on every family but F, answers that refuse early left out (the phase rule removes
  them);
* each of F's trajectories scored by the F-blind probes: request logit r, answer logit a_c at
  each checkpoint c; an answer that has a refusal among its first 24 words is never halted
  (the phase rule: a refusal counts only near the start);
* rules, each with one threshold τ for all families, the lowest that keeps every left-out
  benign family within its budget (support 1 %, general 1 %, alarming 5 %), as the shipped
  default is chosen: ``request`` (r ≥ τ: the encoder recipe's information), ``answer`` (max_c a_c
  ≥ τ), ``sum`` (r + max_c a_c ≥ τ) and ``both`` (min(r, max_c a_c) ≥ τ: the request reads
  harmful *and* the answer does);
* per family recall (harmful) or false-halt rate (benign) at each rule's τ; the request-only
  families (their answer is the protocol's constant generic compliant answer, so the answer
  probe says nothing about them) are reported apart.

A feasibility figure, not the shipped model: the Markov chain's calibration, the per-token
tracker and the checkpoint timing are not in it. Needs the encoder server
(``scripts/vllm/encoder_server.sh start``; ``$GUARD_ENCODER_URL``, default 127.0.0.1:8002);
embeddings are cached under ``$GUARD_CACHE/embeddings`` like every fit's.

    .venv/bin/python scripts/encoder/answer_probe.py [--out benchmarks/results/answer_probe.json]
"""

from __future__ import annotations

import argparse
import json
import math
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
from intent_probe import request_labels  # noqa: E402

from guard.progress import ProgressBars  # noqa: E402
from guard.tracking.text import _REFUSAL, REFUSAL_WORDS, WORD_RE, request_text  # noqa: E402
from guard.training.lofo import BUDGETS, budget_for, family_of  # noqa: E402
from guard.training.logreg import _balanced, _source_weights  # noqa: E402
from guard.training.probe_fit import (  # noqa: E402
    embed_checked,
    fit_request_probe,
    train_dense_logreg,
)
from guard.training.scorer_fit import _restyled  # noqa: E402
from guard.training.threshold import threshold_at_rate  # noqa: E402
from guard.training.trajectories import Trajectory  # noqa: E402

FloatArray = npt.NDArray[np.float64]

REQ_MAX_CHARS = 1000
RULES = ("request", "answer", "sum", "both")


def say(msg: str) -> None:
    print(f"[answer_probe] {msg}", file=sys.stderr, flush=True)


def first_words(text: str, n: int) -> str:
    """The text up to the end of its ``n``-th word (as the lexical scorer splits words)."""
    for i, m in enumerate(WORD_RE.finditer(text)):
        if i + 1 == n:
            return text[: m.end()]
    return text


def refuses_early(text: str) -> bool:
    """A refusal marker among the first ``REFUSAL_WORDS`` words (the phase rule's window)."""
    head = " ".join(w.lower() for w in WORD_RE.findall(first_words(text, REFUSAL_WORDS)))
    return any(m in head for m in _REFUSAL)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-per-family", type=int, default=300)
    ap.add_argument("--checkpoints", default="16,48", help="answer words at each checkpoint")
    ap.add_argument("--families", default="", help="comma-separated (default: every family)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/answer_probe.json")
    a = ap.parse_args(argv)
    cps = [int(c) for c in a.checkpoints.split(",")]
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
    fams = [f for f in a.families.split(",") if f] or sorted(by_fam)
    say(f"{len(trajs)} trajectories, {len(reqs)} request examples, {len(by_fam)} families")

    # -- texts, embedded once (cached on disk) -------------------------------------------------
    req_label, req_fam = request_labels(trajs, reqs)
    req_texts = [s for s in req_label if s.strip()]
    rt, ry, rsrc, variant_of = _restyled(
        req_texts,
        np.asarray([1.0 if req_label[s] else 0.0 for s in req_texts]),
        [req_fam[s] for s in req_texts],
        3,
    )
    rfam = [req_fam[variant_of.get(s, s)] for s in rt]
    # every trajectory: its request text, answer prefixes, early refusal
    rows: list[tuple[str, Trajectory, str, list[str], bool]] = []
    for f, ts in by_fam.items():
        for t in ts:
            rows.append(
                (
                    f,
                    t,
                    request_text(t.prompt, REQ_MAX_CHARS, True),
                    [first_words(t.response, c) for c in cps],
                    refuses_early(t.response),
                )
            )
    ans_texts = sorted({x for r in rows for x in r[3]})
    with ProgressBars("count") as update:
        if update is not None:
            enc.progress = lambda d, n: update("embedding", d, n)
        embed_checked(enc, rt)
        embed_checked(enc, sorted({r[2] for r in rows} - set(rt)))
        embed_checked(enc, ans_texts)
    say(f"embedded {enc.n_embedded} new texts in {enc.seconds:.0f} s")
    a_x = {s: v for s, v in zip(ans_texts, embed_checked(enc, ans_texts), strict=True)}

    # -- per left-out family: F-blind probes, F's scores ---------------------------------------
    scores: dict[str, dict[str, Any]] = {}
    for k, f in enumerate(fams, 1):
        keep = [i for i, fam in enumerate(rfam) if fam != f]
        texts = [rt[i] for i in keep]
        pf = fit_request_probe(
            enc,
            texts,
            ry[keep],
            [rsrc[i] for i in keep],
            {},
            0,
            style_pairs=[(v, o) for v, o in variant_of.items() if v != o and req_fam[o] != f],
            style_dims=16,
        )
        train = [r for r in rows if r[0] != f and r[0] not in request_only and not r[4]]
        xa = np.stack([a_x[x] for r in train for x in r[3]]).astype(np.float64)
        ya = np.asarray([1.0 if r[1].harmful else 0.0 for r in train for _ in r[3]])
        sa = [r[0] for r in train for _ in r[3]]
        wa, ba = train_dense_logreg(
            xa, ya, _balanced(ya, _source_weights(sa, ya)), l2=1e-4, iterations=300
        )
        mine = [r for r in rows if r[0] == f]
        xr = embed_checked(enc, [r[2] for r in mine]).astype(np.float64)
        r_logit = xr @ np.asarray(pf.probe.w) + pf.probe.bias
        a_logit = np.asarray(
            [max(float(a_x[x].astype(np.float64) @ wa + ba) for x in r[3]) for r in mine]
        )
        refused = np.asarray([r[4] for r in mine])
        harmful = np.asarray([r[1].harmful for r in mine])
        kinds = Counter(r[1].kind for r in mine if not r[1].harmful)
        safe_kind = kinds.most_common(1)[0][0] if kinds else None
        rule_scores = {
            "request": r_logit,
            "answer": a_logit,
            "sum": r_logit + a_logit,
            "both": np.minimum(r_logit, a_logit),
        }
        scores[f] = {
            "harmful": harmful,
            "budget": budget_for(safe_kind) if safe_kind else None,
            "safe_kind": safe_kind,
            "request_only": f in request_only,
            "rules": {n: np.where(refused, -np.inf, s) for n, s in rule_scores.items()},
            "refused_harmful": int((refused & harmful).sum()),
        }
        say(f"{k}/{len(fams)} {f}: {len(mine)} trajectories ({time.perf_counter() - t0:.0f} s)")

    # -- one τ per rule: the lowest within every benign budget --------------------------------
    out: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "max_per_family": a.max_per_family,
        "checkpoints_words": cps,
        "budgets": BUDGETS,
        "encoder": {"name": enc.name, "sha256": enc.sha256},
        "rules": {},
    }
    # Request-only families have the protocol's constant generic answer: the answer probe says
    # nothing about them, so the rules that read the answer are measured on the answered
    # families only (their τ from the answered benign families), and the request-only families
    # at the request flag (the request rule, τ from every benign family).
    answered = {f: d for f, d in scores.items() if not d["request_only"]}
    for name, rule, fams_in in [("request-flag", "request", scores)] + [
        (r, r, answered) for r in RULES
    ]:
        out["rules"][name] = evaluate(fams_in, rule)
        res = out["rules"][name]
        say(f"{name}: τ {res['tau']:.3f}, mean recall {res['mean_recall']}, worst {res['worst']}")
    out["seconds"] = round(time.perf_counter() - t0, 1)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2) + "\n")
    print(table(out))
    return 0


def evaluate(scores: dict[str, dict[str, Any]], rule: str) -> dict[str, Any]:
    """``rule``'s τ (the lowest that keeps every benign family of ``scores`` within its
    budget) and each family's recall or false-halt rate at it."""
    tau = max(
        (
            threshold_at_rate(d["rules"][rule][~d["harmful"]], d["budget"])
            for d in scores.values()
            if d["budget"] is not None and (~d["harmful"]).any()
        ),
        default=-math.inf,
    )
    fam_rows = {}
    for f, d in scores.items():
        s = d["rules"][rule]
        h = d["harmful"]
        row: dict[str, Any] = {"request_only": d["request_only"]}
        if h.any():
            row["recall"] = round(float((s[h] >= tau).mean()), 3)
            row["n_harmful"] = int(h.sum())
            row["refused_early"] = d["refused_harmful"]
        if (~h).any():
            row["false_halt"] = round(float((s[~h] >= tau).mean()), 4)
            row["n_safe"] = int((~h).sum())
            row["budget"] = d["budget"]
            row["safe_kind"] = d["safe_kind"]
        fam_rows[f] = row
    rec = sorted(
        ((f, r["recall"]) for f, r in fam_rows.items() if "recall" in r), key=lambda x: x[1]
    )
    binding = max(
        (f for f, r in fam_rows.items() if r.get("budget")),
        key=lambda f: fam_rows[f]["false_halt"] / fam_rows[f]["budget"],
        default=None,
    )
    return {
        "tau": tau,
        "mean_recall": round(float(np.mean([v for _, v in rec])), 3) if rec else None,
        "n_harmful_families": len(rec),
        "worst": rec[:3],
        "families_at_0_5_or_more": sum(v >= 0.5 for _, v in rec),
        "binding_benign_family": binding,
        "families": fam_rows,
    }


def table(out: dict[str, Any]) -> str:
    """Families × rules: recall or false-halt rate at each rule's τ."""
    rules = list(out["rules"])
    fams = sorted(
        out["rules"][rules[0]]["families"],
        key=lambda f: (f in out["rules"][rules[-1]]["families"], f),
    )
    lines = [
        "| family | " + " | ".join(f"{r} (τ {out['rules'][r]['tau']:.2f})" for r in rules) + " |",
        "|---|" + "---:|" * len(rules),
    ]
    for f in fams:
        cells = []
        for r in rules:
            row = out["rules"][r]["families"].get(f)
            if row is None:
                cells.append("–")
            elif "recall" in row:
                cells.append(f"{row['recall']:.2f}")
            else:
                fh = row.get("false_halt", 0.0)
                over = row.get("budget") is not None and fh > row["budget"]
                cells.append(f"fh {100 * fh:.1f} %" + (" **over**" if over else ""))
        tag = " (request only)" if out["rules"][rules[0]]["families"][f]["request_only"] else ""
        lines.append(f"| {f}{tag} | " + " | ".join(cells) + " |")
    lines.append(
        "| **mean recall** | "
        + " | ".join(
            f"**{out['rules'][r]['mean_recall']}** ({out['rules'][r]['n_harmful_families']})"
            for r in rules
        )
        + " |"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
