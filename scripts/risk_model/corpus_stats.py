#!/usr/bin/env python
"""Print per-family counts of the corpus built by ``sources.load_corpus`` (writes nothing).

Usage::

    .venv/bin/python scripts/risk_model/corpus_stats.py DATA_DIR [--max-per-family N]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sources import FAMILIES, load_corpus


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="the public data folder")
    ap.add_argument("--max-per-family", type=int, default=3000, help="0: no cap")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    corpus = load_corpus(args.data, max_per_family=args.max_per_family or None)
    seconds = time.perf_counter() - t0
    harmful: Counter[str] = Counter()
    safe: Counter[str] = Counter()
    kinds: dict[str, Counter[str]] = {}
    for t in corpus.trajectories:
        fam = t["meta"]["family"]
        (harmful if t["label"] == "harmful" else safe)[fam] += 1
        kinds.setdefault(fam, Counter())[t["meta"]["kind"]] += 1
    requests = Counter(r["family"] for r in corpus.requests)
    req_harm = Counter(r["family"] for r in corpus.requests if r["label"] == "harmful")
    head = ("family", "side", "kinds (n)", "label_kind", "harmful", "safe", "requests (harmful)")
    rows = [head]
    for fam, info in FAMILIES.items():
        k = ", ".join(f"{n} {c}" for n, c in sorted(kinds.get(fam, Counter()).items()))
        rows.append(
            (
                fam,
                info["side"],
                k or info["kind"],
                info["label_kind"],
                str(harmful[fam]),
                str(safe[fam]),
                f"{requests[fam]} ({req_harm[fam]})",
            )
        )
    rows.append(
        (
            "TOTAL",
            "",
            "",
            "",
            str(sum(harmful.values())),
            str(sum(safe.values())),
            f"{sum(requests.values())} ({sum(req_harm.values())})",
        )
    )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for j, r in enumerate(rows):
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if j == 0:
            print("-|-".join("-" * w for w in widths))
    print(f"\nload_corpus took {seconds:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
