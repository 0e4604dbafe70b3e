#!/usr/bin/env python
"""What the leak rule alone fires on, per family of the public data (every trajectory).

    .venv/bin/python scripts/risk_model/leak_rule.py [--out benchmarks/results/leak_rule.md]

The rule is not fitted, so every family is "left out" for it. A trajectory counts when its
reply, fed as the proxy feeds it, trips a harm rule *with* the prompt's credentials and not
without them (the other harm rules are not this rule's doing). Markdown on stdout.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import recipes

from guard.tracking import LeakWatch, LexicalScorer, context_secrets, leak_watch
from guard.training.lofo import family_of
from guard.training.trajectories import Trajectory


def _flag(sc: LexicalScorer, t: Trajectory, watch: LeakWatch | None) -> bool:
    st = sc.stream()
    st.leak = watch
    if t.prefill:
        st.feed(t.prefill)
    for tok in t.generated_tokens():
        st.feed(tok)
    st.flush()
    return st.harm_flag


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    trajs, _ = recipes.load(args.data or recipes.default_data_dir(), None, progress=None)
    sc = LexicalScorer([0.0] * 16, 0.0)
    fired: Counter[tuple[str, bool]] = Counter()
    total: Counter[tuple[str, bool]] = Counter()
    for t in trajs:
        key = (family_of(t), t.harmful)
        total[key] += 1
        watch = leak_watch(context_secrets(t.prompt))
        if watch is not None and _flag(sc, t, watch) and not _flag(sc, t, None):
            fired[key] += 1
    lines = [
        "| family | harmful replies: leak rule fires | safe replies: leak rule fires |",
        "|---|---:|---:|",
    ]
    for fam in sorted({f for f, _ in total}):
        cells = []
        for harmful in (True, False):
            n = total[(fam, harmful)]
            cells.append(f"{fired[(fam, harmful)]} / {n}" if n else "-")
        lines.append(f"| {fam} | {cells[0]} | {cells[1]} |")
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
