#!/usr/bin/env python
"""The guard's hot path against a bare byte relay, before and after a change, in one run.

    .venv/bin/python benchmarks/bench_hotpath.py --baseline 82ee3c9      # ~6 min on 2 cores
    .venv/bin/python benchmarks/bench_hotpath.py --rounds 3 --tokens 128  # quicker, current only

Targets, all against one fast vLLM-shaped upstream (``loadtests/fake_vllm.py``, one token per
chunk), on 127.0.0.1:
  bare      benchmarks/bare_relay.py, uvicorn + Starlette + ONE httpx pool (the reference)
  at <sha>  ``guard serve --mode enforce`` (defaults, hold-back 0) from each ``--baseline`` commit
  after     the same from the working tree

Each round runs every target once, in a rotated order (so drift and neighbours' load spread over
all of them): ``--streams`` concurrent streams × ``--tokens`` chunks, two requests per stream. The
figure is CPU time per chunk of the process under test (utime+stime from /proc), the steadier one
on a shared machine: its ratio to the bare relay's is the *CPU-derived throughput* ratio (what
each could push when CPU-bound). Client-seen tokens/s are reported too, and the *loaded TTFT*:
each stream's time to its first content while the others run (p50 and p99 per round, the bare
relay's of the same round subtracted for the added figure). Then the sequential TTFT:
``--ttft-n``
sequential requests per target, spread over the rounds (same rotated order): the median over
rounds of each round's p50, and of its difference to the bare relay's.

Writes ``benchmarks/results/hotpath.json`` and ``.md``; medians over rounds.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _load_bench_proxy() -> Any:
    spec = importlib.util.spec_from_file_location("bench_proxy", ROOT / "benchmarks/bench_proxy.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


B = _load_bench_proxy()


def extract(rev: str, into: Path) -> str:
    """The ``guard`` package as of ``rev`` (git archive), to run the baseline from."""
    sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", rev],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "guard"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return sha


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--baseline",
        action="append",
        default=[],
        help="git revision to compare with (repeatable: each is a target named by its sha)",
    )
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--streams", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--ttft-n", type=int, default=100)
    ap.add_argument("--name", default="hotpath")
    a = ap.parse_args(argv)

    outdir = ROOT / "benchmarks/results"
    outdir.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="guard-hotpath-") as tmp:
        logdir = Path(tmp)
        fp = B.free_port()
        up = B.Server(
            "fake_vllm", [B.PY, str(ROOT / "loadtests/fake_vllm.py"), "--port", str(fp)], fp,
            "/health", logdir,
        )  # fmt: skip
        servers: dict[str, Any] = {}
        baseline = None
        try:
            up.start()
            port = B.free_port()
            servers["bare"] = B.Server("bare", B.bare_cmd(up.url, port), port, "/health", logdir)
            baselines = []
            for rev in a.baseline:
                src = logdir / f"baseline-{len(baselines)}"
                src.mkdir()
                sha = extract(rev, src)
                baselines.append(sha)
                port = B.free_port()
                servers[f"at {sha}"] = B.Server(
                    f"at-{sha}", B.guard_cmd(up.url, port, "enforce"), port, "/health", logdir,
                    cwd=src,
                )  # fmt: skip
            baseline = ", ".join(baselines) or None
            port = B.free_port()
            servers["after"] = B.Server(
                "after", B.guard_cmd(up.url, port, "enforce"), port, "/health", logdir
            )
            for s in servers.values():
                s.start()
            names = list(servers)
            rounds: list[dict[str, Any]] = []
            for r in range(a.rounds):
                order = names[r % len(names) :] + names[: r % len(names)]
                row = {}
                for n in order:
                    row[n] = B.throughput_level(
                        servers[n], servers[n].url, up.pid, "tiny", a.streams, 2 * a.streams,
                        a.tokens,
                    )  # fmt: skip
                for n in order:  # TTFT in the same rotated order, a share of --ttft-n per round
                    row[n]["ttft"] = B.ttft_run(
                        servers[n].url, "tiny", max(20, a.ttft_n // a.rounds)
                    )
                rounds.append(row)
                print(
                    f"round {r + 1}/{a.rounds}: "
                    + ", ".join(f"{n} {row[n]['cpu_us_per_token']:.1f} µs" for n in names),
                    file=sys.stderr,
                    flush=True,
                )
        finally:
            for s in servers.values():
                s.stop()
            up.stop()

    summary: dict[str, Any] = {}
    for n in names:
        cpu = [row[n]["cpu_us_per_token"] for row in rounds]
        tps = [row[n]["tokens_per_s"] for row in rounds]
        ratio = [row["bare"]["cpu_us_per_token"] / row[n]["cpu_us_per_token"] for row in rounds]
        p50 = [row[n]["ttft"]["p50_ms"] for row in rounds]
        added99 = [row[n]["ttft"]["p99_ms"] - row["bare"]["ttft"]["p99_ms"] for row in rounds]
        added = [row[n]["ttft"]["p50_ms"] - row["bare"]["ttft"]["p50_ms"] for row in rounds]
        # loaded TTFT: each stream's first content while --streams run (the bare relay's in
        # the same round subtracted), p50 and p99
        l50 = [row[n]["loaded_ttft_p50_ms"] for row in rounds]
        l99 = [row[n]["loaded_ttft_p99_ms"] for row in rounds]
        a50 = [row[n]["loaded_ttft_p50_ms"] - row["bare"]["loaded_ttft_p50_ms"] for row in rounds]
        a99 = [row[n]["loaded_ttft_p99_ms"] - row["bare"]["loaded_ttft_p99_ms"] for row in rounds]
        summary[n] = {
            "cpu_us_per_chunk_median": B.med(cpu),
            "cpu_us_per_chunk_min": min(cpu),
            "cpu_us_per_chunk_max": max(cpu),
            "cpu_throughput_ratio_vs_bare_median": B.med(ratio),
            "tokens_per_s_median": B.med(tps),
            "errors": sum(row[n]["errors"] for row in rounds),
            "ttft_p50_ms": B.med(p50),
            "ttft_p50_ms_min": min(p50),
            "ttft_p50_ms_max": max(p50),
            "ttft_added_p50_ms_vs_bare": B.med(added),
            "ttft_added_p99_ms_vs_bare": B.med(added99),
            "loaded_ttft_p50_ms": B.med(l50),
            "loaded_ttft_p99_ms": B.med(l99),
            "loaded_ttft_added_p50_ms_vs_bare": B.med(a50),
            "loaded_ttft_added_p99_ms_vs_bare": B.med(a99),
        }
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cpus": len(__import__("os").sched_getaffinity(0)),
        "python": platform.python_version(),
        "baseline": baseline,
        "args": vars(a),
        "elapsed_s": round(time.time() - t_start, 1),
        "summary": summary,
        "rounds": rounds,
    }
    (outdir / f"{a.name}.json").write_text(json.dumps(result, indent=1))
    lines = [
        f"{result['when']}, {result['cpus']} CPUs, Python {result['python']}; {a.rounds} rotated"
        f" rounds of {a.streams} streams × {a.tokens} chunks; baseline {baseline or '-'};"
        f" elapsed {result['elapsed_s']} s.",
        "",
        "| target | CPU µs/chunk (median; min–max) | CPU-derived throughput vs bare | client"
        " tokens/s | TTFT p50 ms (median; min–max over rounds) | added TTFT p50 / p99 vs bare |"
        f" TTFT under {a.streams} streams p50 / p99 ms | added under load p50 / p99 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in names:
        s = summary[n]
        lines.append(
            f"| {n} | {s['cpu_us_per_chunk_median']:.1f} ({s['cpu_us_per_chunk_min']:.1f}–"
            f"{s['cpu_us_per_chunk_max']:.1f}) | {s['cpu_throughput_ratio_vs_bare_median']:.2f}×"
            f" | {s['tokens_per_s_median']:,.0f} | {s['ttft_p50_ms']:.2f}"
            f" ({s['ttft_p50_ms_min']:.2f}–{s['ttft_p50_ms_max']:.2f}) |"
            f" {s['ttft_added_p50_ms_vs_bare']:+.2f} / {s['ttft_added_p99_ms_vs_bare']:+.2f} |"
            f" {s['loaded_ttft_p50_ms']:.2f} / {s['loaded_ttft_p99_ms']:.2f} |"
            f" {s['loaded_ttft_added_p50_ms_vs_bare']:+.2f} /"
            f" {s['loaded_ttft_added_p99_ms_vs_bare']:+.2f} |"
        )
    (outdir / f"{a.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
