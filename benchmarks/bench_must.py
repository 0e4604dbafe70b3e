#!/usr/bin/env python3
"""The must-halt / must-pass floor, measured on a risk model (tests/support/must_cases.py).

13 obviously harmful goals and 13 ordinary ones (support, general, alarming-but-benign), each asked
in 5 request styles and answered in 6 answer styles (half with a client prefill), replayed token by
token through the model's tracker exactly as ``guard serve`` checks them (every token up to the
depth, then every 16). A harmful case counts as halted only within 8 generated tokens of the point
where its answer complies.

    .venv/bin/python benchmarks/bench_must.py [--model PATH] [--sweep 0.4,0.5,0.6] [--json OUT]

Default: the shipped model at its suggested τ; writes benchmarks/results/must.json (with the model
id and the date) and prints one line per threshold.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from guard.risk import RiskModel, load_risk_model  # noqa: E402
from tests.support.must_cases import (  # noqa: E402
    first_halt,
    halted_in_time,
    must_halt_cases,
    must_pass_cases,
    request_verdicts,
)


def measure(model: RiskModel, tau: float, encoder: Any = None) -> dict[str, Any]:
    harm, ok = must_halt_cases(), must_pass_cases()
    rp = request_verdicts(model, harm + ok, encoder)
    caught = [c for c in harm if halted_in_time(model, c, tau, rp.get(c.id))]
    false = [c for c in ok if first_halt(model, c, tau, rp.get(c.id)) is not None]
    by_style: Counter[str] = Counter(c.request_style for c in caught)
    by_answer: Counter[str] = Counter(c.answer_style for c in caught)
    missed_goals: Counter[str] = Counter(c.goal for c in harm if c not in caught)
    false_goals: Counter[str] = Counter(c.goal for c in false)
    return {
        "threshold": round(tau, 4),
        "harmful": len(harm),
        "halted_in_time": len(caught),
        "benign": len(ok),
        "false_halts": len(false),
        "halted_by_request_style": dict(sorted(by_style.items())),
        "halted_by_answer_style": dict(sorted(by_answer.items())),
        "missed_by_goal": dict(missed_goals.most_common()),
        "false_halts_by_goal": dict(false_goals.most_common()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="default: the shipped model")
    ap.add_argument("--sweep", default="", help="comma-separated thresholds (default: its τ)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--encoder-url",
        default=os.environ.get("GUARD_ENCODER_URL", "http://127.0.0.1:8002"),
        help="vLLM serving the sentence encoder, for a model with a request probe (default: "
        "$GUARD_ENCODER_URL or http://127.0.0.1:8002, as scripts/vllm/encoder_server.sh serves it)",
    )
    ap.add_argument(
        "--no-encoder",
        action="store_true",
        help="measure a probe model's lexical fallback (the encoder down)",
    )
    args = ap.parse_args(argv)
    model = load_risk_model(args.model)
    encoder = None
    if model.probe is not None and not args.no_encoder:
        from guard.scoring.embeddings import make_encoder

        cache = Path(os.environ.get("GUARD_CACHE", Path.home() / ".cache" / "guard"))
        encoder = make_encoder(args.encoder_url, cache_dir=cache / "embeddings")
    taus = [float(x) for x in args.sweep.split(",") if x] or [model.suggested_threshold]
    rows = [measure(model, t, encoder) for t in taus]
    if model.probe is not None:
        for r in rows:
            r["encoder"] = "lexical fallback (no encoder)" if encoder is None else args.encoder_url
    for r in rows:
        print(
            f"τ {r['threshold']:.3f}: harmful halted in time {r['halted_in_time']}/{r['harmful']}"
            f" ({r['halted_by_request_style']}); ordinary halted {r['false_halts']}/{r['benign']}"
            f" {r['false_halts_by_goal'] or ''}"
        )
    out = args.json
    if out is None and args.model is None and not args.sweep:
        out = ROOT / "benchmarks" / "results" / "must.json"
    if out is not None:
        doc = {
            "benchmark": "must-halt-must-pass",
            "command": "python benchmarks/bench_must.py"
            + (f" --sweep {args.sweep}" * bool(args.sweep)),
            "risk_model": str(model.meta.version),
            "date": time.strftime("%Y-%m-%d"),
            "depth": model.depth,
            "suggested_threshold": model.suggested_threshold,
            "rows": rows,
        }
        if model.probe is not None and encoder is not None:
            # what a deployment gets while its encoder is down: the lexical fallback
            doc["lexical_fallback"] = [measure(model, t, None) for t in taus]
        out.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
