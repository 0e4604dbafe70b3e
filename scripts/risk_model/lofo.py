#!/usr/bin/env python
"""Leave-one-family-out evaluation of fitting recipes (the protocol: guard/training/lofo.py).

    .venv/bin/python scripts/risk_model/lofo.py --recipe glove [--recipe cb96e4601149 ...]
        [--families jbb-pair,coconot] [--max-per-family 1000] [--out build/lofo]

For every family F and recipe R: fit R on everything but F, replay F token by token through the
fitted model at its own default threshold, and record recall (harmful families) and false halts
(benign families, against their budgets). Writes ``OUT/<recipe>.json`` and ``OUT/<recipe>.md``
(the table docs/evaluation.md leads with) and prints a side-by-side summary of the recipes.
Slow: one fit per family (a few minutes each on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import recipes

from guard.training.lofo import FamilyResult, format_table, leave_one_family_out, summary

ROOT = Path(__file__).resolve().parents[2]


def say(msg: str) -> None:
    print(f"[lofo] {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--recipe", action="append", choices=sorted(recipes.RECIPES))
    ap.add_argument("--families", default="", help="comma-separated (default: every family)")
    ap.add_argument("--max-per-family", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "lofo")
    ap.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="override the recipe's optimiser iterations (faster folds; stated in the output)",
    )
    ap.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        default=None,
        help="do not fit: merge these lofo JSON files of one recipe (runs split with --families "
        "across processes) into OUT/<recipe>.json and .md",
    )
    args = ap.parse_args(argv)
    if args.merge:
        return _merge(args.merge, args.out)
    names = args.recipe or [recipes.SHIPPED]
    data = args.data or recipes.default_data_dir()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    trajs, reqs = recipes.load(data, args.max_per_family, progress=None)
    fams = [f for f in args.families.split(",") if f] or None
    say(f"{len(trajs)} trajectories, {len(reqs)} request examples")
    summaries = {}
    for name in names:
        recipe = recipes.RECIPES[name]
        if args.iterations is not None:
            recipe = replace(recipe, config=replace(recipe.config, iterations=args.iterations))
        res = leave_one_family_out(
            trajs,
            reqs,
            recipes.fitter(recipe),
            families=fams,
            request_family=lambda r: r.source,
            progress=lambda m, n=name: say(f"{n}: {m}"),
            probes=recipes.request_probes(reqs),
            encoder=recipes.encoder() if recipe.encoder else None,
        )
        summ = summary(res)
        summaries[name] = summ
        doc = {
            "recipe": name,
            "description": recipe.description,
            "max_per_family": args.max_per_family,
            "iterations": recipe.config.iterations,
            "date": time.strftime("%Y-%m-%d"),
            "families_run": fams or "all",
            "summary": summ,
            "families": [r.to_json() for r in res],
        }
        (args.out / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
        (args.out / f"{name}.md").write_text(format_table(res) + "\n")
        print(f"\n## {name}: {recipe.description}\n\n{format_table(res)}\n")
        print(json.dumps(summ, indent=2))
    say(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


def _merge(paths: list[Path], out: Path) -> int:
    docs = [json.loads(p.read_text()) for p in paths]
    names = {d["recipe"] for d in docs}
    if len(names) != 1:
        say(f"cannot merge runs of different recipes: {sorted(names)}")
        return 2
    fams: dict[str, FamilyResult] = {}
    for d in docs:
        for f in d["families"]:
            fams[f["family"]] = FamilyResult.from_json(f)
    res = sorted(fams.values(), key=lambda r: r.family)
    dates = sorted(str(d.get("date", "")) for d in docs)
    doc = {
        **docs[0],
        "date": dates[-1] or time.strftime("%Y-%m-%d"),  # the latest of the merged runs
        "merged_from": [p.name for p in paths],
        "summary": summary(res),
        "families": [r.to_json() for r in res],
    }
    name = docs[0]["recipe"]
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / f"{name}.md").write_text(format_table(res) + "\n")
    print(f"\n## {name}: {doc['description']}\n\n{format_table(res)}\n")
    print(json.dumps(doc["summary"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
