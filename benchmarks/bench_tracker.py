#!/usr/bin/env python
"""Per-token check cost of the tracker: ``feed(token) + risk()``, in process.

Runs real responses (approximate tokens) through trackers of the shipped default model and times
each token's check with ``perf_counter_ns``. Prints median / p99 and one JSON line.

    .venv/bin/python benchmarks/bench_tracker.py [--model PATH] [--tokens 200000] [--json OUT]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from guard.risk import load_risk_model
from guard.tracking import tokenize_approx

TEXTS = [
    "I understand how unnerving it can be to cancel an order. Here's a quick guide: 1. Log in "
    "to your account. 2. Open Order Details. 3. Press Cancel Order and follow the instructions.",
    "Sure, here is a step-by-step tutorial. First, you will need to gather the materials listed "
    "below, then combine them carefully in a well-ventilated room before proceeding.",
    "I'm sorry, but I can't help with that. If you have questions about safety, I'm happy to "
    "point you to reliable resources, or to help with anything else you need today.",
    "The French Revolution began in 1789 and reshaped European politics; historians still debate "
    "its causes, from fiscal crisis to Enlightenment ideas and food shortages in Paris.",
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--tokens", type=int, default=200_000)
    ap.add_argument("--json", default=None, help="also write the JSON result to this file")
    args = ap.parse_args(argv)
    model = load_risk_model(args.model)
    streams = [tokenize_approx(t) for t in TEXTS]
    prompt = [{"role": "user", "content": "How do I cancel my order?"}]
    samples: list[int] = []
    clock = time.perf_counter_ns
    gc.disable()
    try:
        while len(samples) < args.tokens:
            for toks in streams:
                tr = model.tracker(prompt)
                for tok in toks:
                    t0 = clock()
                    tr.feed(tok)
                    tr.risk()
                    samples.append(clock() - t0)
    finally:
        gc.enable()
    # clock overhead (two perf_counter_ns calls) is included; measure and report it
    overhead = []
    for _ in range(10_000):
        t0 = clock()
        overhead.append(clock() - t0)
    samples.sort()
    n = len(samples)
    res = {
        "benchmark": "tracker_per_token",
        "model": model.meta.version,
        "risk_model": model.meta.version,
        "date": time.strftime("%Y-%m-%d"),
        "tokens": n,
        "median_us": samples[n // 2] / 1000,
        "p90_us": samples[int(n * 0.90)] / 1000,
        "p99_us": samples[int(n * 0.99)] / 1000,
        "mean_us": statistics.fmean(samples) / 1000,
        "timer_overhead_median_us": sorted(overhead)[len(overhead) // 2] / 1000,
        "python": sys.version.split()[0],
    }
    print(
        f"per-token check (feed + risk): median {res['median_us']:.2f} µs, "
        f"p99 {res['p99_us']:.2f} µs over {n} tokens (timer overhead "
        f"{res['timer_overhead_median_us']:.2f} µs)"
    )
    print(json.dumps(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
