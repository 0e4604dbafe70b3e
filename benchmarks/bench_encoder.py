#!/usr/bin/env python
"""What the sentence encoder costs: per request, per batch, and the time to first token it adds.

    scripts/vllm/encoder_server.sh start           # vLLM CPU serving all-MiniLM-L6-v2 on :8002
    .venv/bin/python benchmarks/bench_encoder.py [--encoder-url URL] [--model PATH] [--n 200]

1. **Encoder latency**, the client guard uses (``EmbeddingsClient``, one HTTP call): one short
   request text per call, ``--n`` sequential calls (p50 / p99), and batches of 32 (per call and per
   text), texts from the must-suite's requests.
2. **TTFT added by the request verdict**: ``guard serve`` with a risk model that reads the encoder,
   in front of the scripted vLLM stand-in (``loadtests/fake_vllm.py``: no prefill time, so the
   whole encoder round trip shows), once with ``GUARD_ENCODER_URL`` and once without (the lexical
   fallback: nothing awaited); ``--n`` sequential streaming requests each, rotated in rounds;
   p50 / p99 of each and the difference of medians. Against a real vLLM the prefill overlaps
   the encoder call, so this is the upper bound.

Writes ``benchmarks/results/encoder.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from guard.risk import load_risk_model  # noqa: E402
from guard.scoring.embeddings import EmbeddingsClient  # noqa: E402
from tests.support.must_cases import must_halt_cases, must_pass_cases  # noqa: E402


def _bench_proxy() -> Any:
    spec = importlib.util.spec_from_file_location("bench_proxy", ROOT / "benchmarks/bench_proxy.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def encoder_latency(url: str, n: int) -> dict[str, Any]:
    cases = must_halt_cases() + must_pass_cases()
    texts = [c.prompt[-1]["content"] for c in cases]
    c = EmbeddingsClient(url, model="all-MiniLM-L6-v2", max_tokens=128, timeout=60.0)
    try:
        c.embed_sync(texts[:4])  # warm
        one = []
        for i in range(n):
            t0 = time.perf_counter()
            c.embed_sync([texts[i % len(texts)]])
            one.append((time.perf_counter() - t0) * 1e3)
        batch = []
        for i in range(max(5, n // 20)):
            part = [texts[(i * 32 + j) % len(texts)] for j in range(32)]
            t0 = time.perf_counter()
            c.embed_sync(part)
            batch.append((time.perf_counter() - t0) * 1e3)
    finally:
        c.close()
    return {
        "single_p50_ms": round(pct(one, 0.5), 2),
        "single_p99_ms": round(pct(one, 0.99), 2),
        "batch32_p50_ms": round(pct(batch, 0.5), 2),
        "batch32_per_text_ms": round(pct(batch, 0.5) / 32, 2),
        "n_single": len(one),
        "n_batch": len(batch),
    }


def ttft(url: str, model_path: Path, n: int, rounds: int) -> dict[str, Any]:
    bp = _bench_proxy()
    logdir = Path(tempfile.mkdtemp(prefix="bench-encoder-"))
    up_port = bp.free_port()
    up = bp.Server(
        "fake_vllm",
        [sys.executable, str(ROOT / "loadtests/fake_vllm.py"), "--port", str(up_port)],
        up_port,
        "/health",
        logdir,
    )
    up.start()
    servers = {}
    try:
        for name, env in (
            ("with-encoder", {"GUARD_ENCODER_URL": url, "GUARD_RISK_MODEL": str(model_path)}),
            ("lexical-fallback", {"GUARD_RISK_MODEL": str(model_path)}),
        ):
            port = bp.free_port()
            s = bp.Server(name, bp.guard_cmd(up.url, port, "enforce"), port, "/health", logdir, env)
            s.start(120)
            servers[name] = s
        samples: dict[str, list[float]] = {k: [] for k in servers}
        p50s: dict[str, list[float]] = {k: [] for k in servers}
        order = list(servers)
        for r in range(rounds):
            for name in order[r % 2 :] + order[: r % 2]:
                res = bp.ttft_run(servers[name].url, "tiny", max(10, n // rounds))
                if res["errors"]:
                    raise RuntimeError(f"{name}: {res['errors']} errors")
                p50s[name].append(res["p50_ms"])
                samples[name].append(res["p99_ms"])
    finally:
        for s in servers.values():
            s.stop()
        up.stop()
    w, lex = statistics.median(p50s["with-encoder"]), statistics.median(p50s["lexical-fallback"])
    return {
        "with_encoder_p50_ms": round(w, 2),
        "with_encoder_p99_ms": round(statistics.median(samples["with-encoder"]), 2),
        "fallback_p50_ms": round(lex, 2),
        "fallback_p99_ms": round(statistics.median(samples["lexical-fallback"]), 2),
        "added_p50_ms": round(w - lex, 2),
        "rounds": rounds,
        "requests_per_round": max(10, n // rounds),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--encoder-url", default=os.environ.get("GUARD_ENCODER_URL", "http://127.0.0.1:8002")
    )
    ap.add_argument("--model", type=Path, default=None, help="a risk model with a probe")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/encoder.json")
    args = ap.parse_args(argv)
    from guard.risk.model import default_model_path

    model_path = args.model or default_model_path()
    model = load_risk_model(model_path)
    if model.probe is None:
        print(f"{model_path}: this risk model reads no encoder", file=sys.stderr)
        return 2
    lat = encoder_latency(args.encoder_url, args.n)
    print(f"encoder: {json.dumps(lat)}")
    tt = ttft(args.encoder_url, model_path, args.n, args.rounds)
    print(f"ttft: {json.dumps(tt)}")
    doc = {
        "benchmark": "encoder",
        "command": "python benchmarks/bench_encoder.py",
        "date": time.strftime("%Y-%m-%d"),
        "model": model.meta.version,
        "encoder": model.probe.encoder.name,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (vLLM CPU encoder)",
        "latency": lat,
        "ttft": tt,
    }
    args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
