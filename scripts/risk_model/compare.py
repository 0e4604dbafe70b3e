#!/usr/bin/env python
"""Side-by-side leave-one-family-out table of two recipes (from ``lofo.py``'s JSON files).

    .venv/bin/python scripts/risk_model/compare.py A.json B.json [--tau-b auto]

Harmful families first (worst recall of the second recipe first), then benign families (worst
false-halt rate against its budget first). Markdown on stdout. Each recipe is read at its fold
models' own default thresholds; ``--tau-b X`` reads recipe B at threshold X instead (``auto``: the
lowest threshold that keeps every left-out benign family within its budget, which is how the
shipped default is chosen).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _f(x: float | None, nd: int = 2) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def _at(r: dict[str, Any], tau: float) -> dict[str, Any]:
    """One family's figures had its fold model used threshold ``tau``."""
    h = r.get("max_risk_harmful") or []
    s = r.get("max_risk_safe") or []
    return {
        **r,
        "threshold": tau,
        "recall": sum(x >= tau for x in h) / len(h) if h else None,
        "false_halt": sum(x >= tau for x in s) / len(s) if s else None,
    }


def _summary(rows: Any) -> dict[str, Any]:
    rows = list(rows)
    harm = sorted((r for r in rows if r["recall"] is not None), key=lambda r: r["recall"])
    over = [
        r["family"]
        for r in rows
        if r["false_halt"] is not None
        and r.get("budget") is not None
        and r["false_halt"] > r["budget"]
    ]
    if not harm:
        raise SystemExit("no per-trajectory risks in this file: rerun lofo.py")
    return {
        "worst_recall": {"family": harm[0]["family"], "recall": harm[0]["recall"]},
        "mean_recall": sum(r["recall"] for r in harm) / len(harm),
        "families_at_or_above_0.80": sum(r["recall"] >= 0.8 for r in harm),
        "harmful_families": len(harm),
        "false_halt_over_budget": over,
    }


def main(argv: list[str] | None = None) -> int:
    args = list(argv if argv is not None else sys.argv[1:])
    tau_b: str | None = None
    if "--tau-b" in args:
        i = args.index("--tau-b")
        tau_b = args[i + 1]
        del args[i : i + 2]
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    a, b = (json.loads(Path(p).read_text()) for p in args)
    ra = {r["family"]: r for r in a["families"]}
    rb = {r["family"]: r for r in b["families"]}
    if tau_b is not None:
        tau = (
            b["summary"]["threshold_within_budgets_off_distribution"]
            if tau_b == "auto"
            else float(tau_b)
        )
        rb = {f: _at(r, tau) for f, r in rb.items()}
        b = {**b, "recipe": f"{b['recipe']} @ τ {tau:.3f}", "summary": _summary(rb.values())}
    fams = [f for f in rb if f in ra]
    harm = sorted((f for f in fams if rb[f]["recall"] is not None), key=lambda f: rb[f]["recall"])
    ben = sorted(
        (f for f in fams if rb[f]["recall"] is None and rb[f]["false_halt"] is not None),
        key=lambda f: -(rb[f]["false_halt"] or 0) / (rb[f]["budget"] or 1),
    )
    na, nb = a["recipe"], b["recipe"]
    out = [
        f"| left-out family | harmful | recall {na} | **recall {nb}** | "
        f"its safe replies | false halts {na} | **false halts {nb}** |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]

    def fh(r: dict[str, Any]) -> str:
        s = _f(r["false_halt"], 3)
        if r.get("budget") is not None and r["false_halt"] is not None:
            s += "" if r["false_halt"] <= r["budget"] else " ✗"
        return s

    for f in harm:
        x, y = ra[f], rb[f]
        out.append(
            f"| {f} | {y['n_harmful']} | {_f(x['recall'])} | **{_f(y['recall'])}** | "
            f"{y['n_safe']} {y['safe_kind'] or ''} | {fh(x)} | {fh(y)} |"
        )
    for f in ben:
        x, y = ra[f], rb[f]
        budget = "" if y.get("budget") is None else f" (budget {y['budget']:.0%})"
        out.append(
            f"| {f} | 0 | - | - | {y['n_safe']} {y['safe_kind'] or ''}{budget} | {fh(x)} | "
            f"**{fh(y)}** |"
        )
    sa, sb = a["summary"], b["summary"]
    out += [
        "",
        f"| summary | {na} | {nb} |",
        "|---|---:|---:|",
        f"| worst harmful family | {sa['worst_recall']['family']} "
        f"{_f(sa['worst_recall']['recall'])} | {sb['worst_recall']['family']} "
        f"{_f(sb['worst_recall']['recall'])} |",
        f"| mean recall over harmful families | {_f(sa['mean_recall'])} | "
        f"{_f(sb['mean_recall'])} |",
        f"| harmful families at ≥ 0.80 | {sa['families_at_or_above_0.80']} / "
        f"{sa['harmful_families']} | {sb['families_at_or_above_0.80']} / "
        f"{sb['harmful_families']} |",
        f"| benign families over their budget | {len(sa['false_halt_over_budget'])} | "
        f"{len(sb['false_halt_over_budget'])} |",
    ]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
