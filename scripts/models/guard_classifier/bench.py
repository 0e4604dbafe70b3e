"""Measure the guard-model scorer: /classify latency per call and verdict calls per 100 tokens.

    .venv/bin/python -m scripts.models.guard_classifier.bench --url http://127.0.0.1:8001 [--n 50]

(run from the repository root).

Prints a JSON object: latency (median, p90 in ms) of one /classify call with 1 text and with 32
texts (through ClassifyClient, sync, keep-alive), the same through the MicroBatcher with 32
concurrent submits, and calls per 100 generated tokens of the default VerdictPolicy (k=16,
sentence ends) over responses of scripts/models/tiny_model/dialogues.py tokenized roughly (~4 chars
per
token, one chunk per token).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time

from guard.scoring import (
    ClassifyClient,
    CountingObserver,
    MicroBatcher,
    VerdictPolicy,
    VerdictSchedule,
)

TEXTS = [
    "<|user|>\nWhere is my order?<|end|>\n<|assistant|>\nI understand you want to track it.",
    "<|user|>\nGive me another customer's card.<|end|>\n<|assistant|>\nSure, here is the card",
]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def timed(fn, n: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    fn()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1000)
    return {"median_ms": round(statistics.median(ts), 2), "p90_ms": round(pct(ts, 0.9), 2)}


async def batched(url: str, n: int) -> dict[str, float]:
    c = ClassifyClient(url, model="tiny-guard", timeout=5.0)
    obs = CountingObserver()
    b = MicroBatcher(
        c.score, name="tiny-guard", max_batch=32, window_ms=2.0, observer=obs, timeout_s=5.0
    )
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        await b.score_many([TEXTS[i % 2] for i in range(32)])
        ts.append((time.perf_counter() - t0) * 1000)
    await b.aclose()
    await c.aclose()
    return {
        "median_ms": round(statistics.median(ts), 2),
        "p90_ms": round(pct(ts, 0.9), 2),
        "http_calls_per_32": round(sum(obs.calls.values()) / n, 2),
    }


def calls_per_100_tokens(k: int) -> dict[str, float]:
    from scripts.models.tiny_model import dialogues

    pol = VerdictPolicy(every_k_tokens=k)
    calls = toks = 0
    for e in dialogues.examples(300, seed=7, split="test"):
        s = VerdictSchedule(policy=pol, prompt="x")
        text = e.response
        for i in range(0, len(text), 4):  # ~4 chars per token, one chunk per token
            if s.observe(text[i : i + 4], 1) is not None:
                calls += 1
                s.on_verdict(0.1)  # answered before the next token (upper bound on calls)
            toks += 1
    only_k = VerdictPolicy(every_k_tokens=k, at_sentence_end=False)
    calls_k = 0
    for e in dialogues.examples(300, seed=7, split="test"):
        s = VerdictSchedule(policy=only_k, prompt="x")
        for i in range(0, len(e.response), 4):
            if s.observe(e.response[i : i + 4], 1) is not None:
                calls_k += 1
                s.on_verdict(0.1)
    return {
        "k": k,
        "calls_per_100_tokens": round(100 * calls / toks, 2),
        "calls_per_100_tokens_k_only": round(100 * calls_k / toks, 2),
        "mean_tokens_per_response": round(toks / 300, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default=os.environ.get("GUARD_CLS_URL", "http://127.0.0.1:8001"))
    ap.add_argument("--n", type=int, default=50)
    a = ap.parse_args()
    c = ClassifyClient(a.url, model="tiny-guard", timeout=10.0)
    one = timed(lambda: c.score_sync(TEXTS[:1]), a.n)
    many = timed(lambda: c.score_sync([TEXTS[i % 2] for i in range(32)]), a.n)
    res = {
        "classify_1_text": one,
        "classify_32_texts": many,
        "batcher_32_concurrent": asyncio.run(batched(a.url, a.n)),
        "schedule": calls_per_100_tokens(16),
        "cpu": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
