#!/usr/bin/env python
"""What the decision log's flush policy costs per record, beside the alternatives, in one run.

    .venv/bin/python benchmarks/bench_decision_log.py            # ~20 s on 2 cores

The shipped policy (``guard/observability/decision_log.py``): ``submit`` puts the record on a
bounded queue (the only cost on the event loop); a writer thread takes batches of up to 256,
serialises them and writes each batch with one system call (whole records only). Measured
beside two stricter policies a reader may ask for, on the same records and the same disk:

* ``flush per record``: one ``write`` system call per record (what "nothing in a buffer" costs);
* ``fsync per batch``: the shipped policy plus ``os.fsync`` after each batch (what surviving a
  machine crash, not only a process crash, would cost).

For each: the caller's cost per ``submit`` (ns, median of rounds), and the writer's throughput
(µs per record from the first submit to the last record on disk, ``close()`` included). Two record
shapes: the default (no content) and with ``include_content`` (prompt, ~1 KB response, tokens).
Writes ``benchmarks/results/decision_log.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from guard.observability.decision_log import DecisionLog  # noqa: E402


class FlushPerRecord(DecisionLog):
    def _write(self, batch: list[dict[str, Any]]) -> None:
        for rec in batch:
            super()._write([rec])  # one write system call per record


class FsyncPerBatch(DecisionLog):
    def _write(self, batch: list[dict[str, Any]]) -> None:
        super()._write(batch)
        os.fsync(self._fd)


POLICIES: dict[str, type[DecisionLog]] = {
    "shipped (flush per batch)": DecisionLog,
    "flush per record": FlushPerRecord,
    "fsync per batch": FsyncPerBatch,
}


def record(i: int, content: bool) -> dict[str, Any]:
    """A record shaped like ``guard.generation.accounting.decision_records`` writes."""
    tokens = [f" word{j}" for j in range(160)] if content else None
    return {
        "id": f"req-{i:08d}",
        "source": "guard",
        "prompt": [{"role": "user", "content": "Where is my order? It has not arrived yet."}]
        if content
        else None,
        "prefill": "" if content else None,
        "response": "".join(tokens) if tokens else None,
        "tokens": tokens,
        "label": None,
        "harm_start_char": None,
        "meta": {
            "ts": time.time(),
            "request_id": f"req-{i:08d}",
            "route": "chat",
            "model": "tiny",
            "policy": "default",
            "mode": "enforce",
            "outcome": "ok",
            "censored": False,
            "risk_model": "57d4002b26ab",
            "reroutes": [],
            "decision": {
                "action": "pass",
                "generated_tokens": 160,
                "max_risk": 0.0123,
                "max_risk_token": 3,
                "depth": 32,
                "threshold": 0.807,
                "state": {"phase": "neutral", "request_bin": 1, "response_bin": 0, "t": 32},
            },
        },
    }


def run_once(cls: type[DecisionLog], recs: list[dict[str, Any]], d: Path) -> dict[str, float]:
    path = d / f"log-{time.perf_counter_ns()}.jsonl"
    log = cls(path, max_bytes=1 << 40, queue_size=len(recs) + 1)
    t0 = time.perf_counter_ns()
    submit_ns = []
    for r in recs:
        s = time.perf_counter_ns()
        log.submit(r)
        submit_ns.append(time.perf_counter_ns() - s)
    log.close()  # drains the queue: every record written and flushed
    total = time.perf_counter_ns() - t0
    n_lines = path.read_bytes().count(b"\n")
    assert n_lines == len(recs), (n_lines, len(recs))
    size = path.stat().st_size
    path.unlink()
    return {
        "submit_ns_median": statistics.median(submit_ns),
        "us_per_record": total / len(recs) / 1000,
        "bytes_per_record": size / len(recs),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    a = ap.parse_args(argv)
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="guard-dlog-", dir=a.dir) as tmp:
        d = Path(tmp)
        for content in (False, True):
            recs = [record(i, content) for i in range(a.records)]
            for name, cls in POLICIES.items():
                # fsync is slow: fewer records for it, the per-record figure is what counts
                n = a.records if cls is not FsyncPerBatch else max(2000, a.records // 4)
                runs = [run_once(cls, recs[:n], d) for _ in range(a.rounds)]
                key = f"{name} / {'with content' if content else 'no content'}"
                rows[key] = {
                    "policy": name,
                    "content": content,
                    "records": n,
                    "submit_ns_median": statistics.median(r["submit_ns_median"] for r in runs),
                    "us_per_record_median": statistics.median(r["us_per_record"] for r in runs),
                    "us_per_record_min": min(r["us_per_record"] for r in runs),
                    "us_per_record_max": max(r["us_per_record"] for r in runs),
                    "bytes_per_record": runs[0]["bytes_per_record"],
                }
                print(f"{key}: {rows[key]['us_per_record_median']:.2f} µs/record", file=sys.stderr)
    shipped = {c: rows[f"shipped (flush per batch) / {c}"] for c in ("no content", "with content")}
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cpus": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "args": vars(a),
        "rows": rows,
    }
    out = ROOT / "benchmarks" / "results"
    (out / "decision_log.json").write_text(json.dumps(result, indent=1))
    lines = [
        f"{result['when']}, {result['cpus']} CPUs, Python {result['python']}; {a.rounds} rounds,"
        f" {a.records} records (fsync: a quarter); medians over rounds.",
        "",
        "| policy | record | bytes | submit (caller, ns) | writer µs/record (min–max)"
        " | vs shipped |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows.values():
        c = "with content" if r["content"] else "no content"
        ratio = r["us_per_record_median"] / shipped[c]["us_per_record_median"]
        lines.append(
            f"| {r['policy']} | {c} | {r['bytes_per_record']:.0f} | {r['submit_ns_median']:.0f} |"
            f" {r['us_per_record_median']:.2f} ({r['us_per_record_min']:.2f}–"
            f"{r['us_per_record_max']:.2f}) | {ratio:.2f}× |"
        )
    (out / "decision_log.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
