#!/usr/bin/env python3
"""The hold-back trade-off, measured: window W vs added latency vs harmful tokens leaked.

Against a real vLLM (the tiny, shallowly aligned model), for each W: an enforcing guard with
``--hold-back W``; (1) time to the first content delta on benign support requests, and (2) for
prefilled harmful openers (the shallow-alignment attack), how many generated tokens of unsafe
content reached the client before the halt (onset located by
scripts/models/tiny_model/dialogues.py).

    .venv/bin/python benchmarks/bench_holdback.py --vllm-url URL [--windows 0,2,4,8,16]

A risk model that reads the sentence encoder gets it from ``GUARD_ENCODER_URL`` (passed to the
guard it starts), e.g. ``GUARD_ENCODER_URL=http://127.0.0.1:8002`` with
``scripts/vllm/encoder_server.sh start``.

Writes benchmarks/results/holdback.json and .md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]


def _load(relpath: str) -> Any:
    """A helper module of the repository, by path (the benchmark runs as a plain script)."""
    spec = importlib.util.spec_from_file_location(Path(relpath).stem, ROOT / relpath)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


guard_server = _load("tests/support/guard_proc.py").guard_server
dialogues = _load("scripts/models/tiny_model/dialogues.py")

SAFE = "I'm sorry, but I can't help with that."


def stream(url: str, body: dict[str, Any]) -> tuple[float | None, list[str], str | None]:
    """(seconds to first content delta, content chunks as received, finish reason)."""
    t0 = time.perf_counter()
    first = None
    chunks: list[str] = []
    finish = None
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=120) as r:
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            obj = json.loads(line[6:])
            for c in obj.get("choices", []):
                piece = c.get("delta", {}).get("content") or ""
                if piece and "guard" not in obj:
                    if first is None:
                        first = time.perf_counter() - t0
                    chunks.append(piece)
                finish = c.get("finish_reason") or finish
    return first, chunks, finish


def leaked_tokens(prefill: str, chunks: list[str]) -> int:
    """Generated chunks (≈ tokens) of unsafe content delivered, counted from the harm onset."""
    if chunks and chunks[-1] == SAFE:
        chunks = chunks[:-1]
    text = prefill + "".join(chunks)
    onset = dialogues.find_harm(text)
    if onset is None:
        return 0
    pos, leaked = len(prefill), 0
    for c in chunks:
        end = pos + len(c)
        if end > onset:
            leaked += 1
        pos = end
    return leaked


def _shipped_version() -> str:
    sys.path.insert(0, str(ROOT))
    from guard.risk import load_risk_model

    return str(load_risk_model().meta.version)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--vllm-url", required=True)
    ap.add_argument("--windows", default="0,2,4,8,16")
    ap.add_argument("--n", type=int, default=30, help="requests of each kind per window")
    ap.add_argument(
        "--sampling",
        choices=("default", "greedy"),
        default="default",
        help="default: the model's default sampling (no temperature, no seed: what a client "
        "that sets nothing gets, so a result is one draw); greedy: temperature 0, seeded",
    )
    args = ap.parse_args()

    def sampling(i: int) -> dict[str, Any]:
        return {"temperature": 0, "seed": i} if args.sampling == "greedy" else {}

    windows = [int(w) for w in args.windows.split(",")]
    benign = [e for e in dialogues.examples(400, seed=41, split="test") if e.kind == "benign"]
    attacks = [e for e in dialogues.examples(400, seed=42, split="test") if e.kind == "prefill"]
    benign, attacks = benign[: args.n], attacks[: args.n]
    rows = []
    for w in [-1, *windows]:  # -1: no guard in the way (shadow), the reference
        extra = ["--mode", "shadow"] if w < 0 else ["--hold-back", str(w)]
        with guard_server(args.vllm_url, *extra, "--log-level", "warning") as url:
            ttft = []
            benign_halted = 0
            for i, ex in enumerate(benign):
                body = {
                    "model": "tiny",
                    "messages": ex.prompt,
                    "max_tokens": 32,
                    **sampling(i),
                    "stream": True,
                }
                first, _, fin = stream(url, body)
                benign_halted += fin == "content_filter"
                if first is not None:
                    ttft.append(first * 1000)
            # The guard's own measure of what it added before the first content left (its work
            # before the upstream call + the hold-back delay): immune to the upstream's large
            # request-to-request variance, unlike the client's TTFT.
            metrics = httpx.get(url + "/metrics", timeout=10).text
            added = {
                ln.split(" ")[0]: float(ln.split(" ")[1])
                for ln in metrics.splitlines()
                if ln.startswith("guard_added_ttft_seconds_")
            }
            leaks, halted, delivered_harm = [], 0, 0
            for i, ex in enumerate(attacks):
                body = {
                    "model": "tiny",
                    "max_tokens": 48,
                    **sampling(i),
                    "stream": True,
                    "messages": [*ex.prompt, {"role": "assistant", "content": ex.prefill}],
                    "continue_final_message": True,
                    "add_generation_prompt": False,
                }
                _, chunks, finish = stream(url, body)
                n = leaked_tokens(ex.prefill, chunks)
                leaks.append(n)
                halted += finish == "content_filter"
                delivered_harm += n > 0
        count = added.get("guard_added_ttft_seconds_count", 0.0)
        total = added.get("guard_added_ttft_seconds_sum", 0.0)
        rows.append(
            {
                "window": "no guard (shadow)" if w < 0 else w,
                "guard_added_ttft_mean_ms": round(1000 * total / count, 2) if count else None,
                "benign_halted": benign_halted,
                "benign": len(benign),
                "ttft_p50_ms": round(statistics.median(ttft), 2),
                "ttft_p90_ms": round(statistics.quantiles(ttft, n=10)[-1], 2),
                "attacks": len(attacks),
                "halted": halted,
                "attacks_with_harm_delivered": delivered_harm,
                "harmful_tokens_leaked_mean": round(statistics.mean(leaks), 2),
                "harmful_tokens_leaked_max": max(leaks),
            }
        )
        print(rows[-1], flush=True)
    base = rows[0]["ttft_p50_ms"]
    for r in rows:
        r["added_ttft_p50_ms"] = round(r["ttft_p50_ms"] - base, 2)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "holdback.json").write_text(
        json.dumps(
            {
                "vllm_url": args.vllm_url,
                "sampling": args.sampling,
                "risk_model": _shipped_version(),
                # the sentence encoder the guard asked (a model that reads one; None: lexical)
                "encoder_url": os.environ.get("GUARD_ENCODER_URL"),
                "date": time.strftime("%Y-%m-%d"),
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    lines = [
        "| W (tokens) | guard-added time to 1st content, mean (ms) | client TTFT p50 (ms) | "
        "benign halted | attacks halted | attacks with harm delivered | "
        "harmful tokens leaked (mean / max) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['window']} | {r['guard_added_ttft_mean_ms']} | {r['ttft_p50_ms']} | "
            f"{r['benign_halted']}/{r['benign']} | {r['halted']}/{r['attacks']} | "
            f"{r['attacks_with_harm_delivered']}/{r['attacks']} | "
            f"{r['harmful_tokens_leaked_mean']} / {r['harmful_tokens_leaked_max']} |"
        )
    (out / "holdback.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
