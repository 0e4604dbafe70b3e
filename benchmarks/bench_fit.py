#!/usr/bin/env python
"""Fit time and peak memory for N synthetic trajectories (default 100k).

Trajectories are drawn from a small vocabulary of harmful / refusal / support phrases (see
``_make``), about 25 approximate tokens each. Peak memory is the process's max RSS (``ru_maxrss``)
and the ``tracemalloc`` peak of Python allocations during the fit.

    .venv/bin/python benchmarks/bench_fit.py [--n 100000] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from guard.training.fit import FitConfig, fit
from guard.training.trajectories import Trajectory

HARM = ["mix the powder with fuel", "wire the timer", "send the phishing email", "hide the poison"]
OPEN = ["Sure, here is how.", "Certainly! Step 1:", "I'm sorry, but I can't help with that."]
SUPPORT = ["Please log in to your account.", "Your refund is on its way.", "Open Order Details."]


def _make(n: int, seed: int = 0) -> list[Trajectory]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        harmful = rng.random() < 0.3
        if harmful:
            resp = rng.choice(OPEN[:2]) + " " + ". ".join(rng.sample(HARM, 3)) + "."
            q = "How do I hurt someone?"
        else:
            resp = " ".join(rng.sample(SUPPORT, 2) + [rng.choice(SUPPORT)])
            q = "Where is my order?"
        out.append(
            Trajectory(
                id=f"b{i}",
                source="bench",
                prompt=q,
                prefill="",
                response=resp,
                tokens=None,
                label="harmful" if harmful else "safe",
                harm_start_char=None,
                meta={"kind": "harmful" if harmful else "support"},
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    import tracemalloc

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--json", default=None)
    ap.add_argument("--tracemalloc", action="store_true", help="also trace Python allocations")
    args = ap.parse_args(argv)
    trajs = _make(args.n)
    if args.tracemalloc:
        tracemalloc.start()
    t0 = time.perf_counter()
    res = fit(trajs, FitConfig(), progress=lambda m: print(m, file=sys.stderr, flush=True))
    dt = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] if args.tracemalloc else 0
    tracemalloc.stop()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {
        "benchmark": "fit",
        "trajectories": args.n,
        "transitions": res.report["counts"]["transitions"],
        "fit_seconds": round(dt, 2),
        "peak_rss_mib": round(rss_mb, 1),
        "tracemalloc_peak_mib": round(peak / 2**20, 1),
    }
    print(
        f"fit of {args.n} trajectories ({out['transitions']:.0f} transitions): {dt:.1f} s, "
        f"peak RSS {rss_mb:.0f} MiB (python allocations peak {out['tracemalloc_peak_mib']} MiB)"
    )
    print(json.dumps(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
