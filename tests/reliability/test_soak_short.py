"""The short version of the soak (the 10-minute one is `loadtests/soak.py --duration 600
--concurrency 200`, run on demand; figures in docs/reliability.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_short_soak(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "loadtests" / "soak.py"),
            "--duration",
            "15",
            "--concurrency",
            "40",
            "--max-growth",
            "0.05",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    summary = json.loads(out.read_text())
    assert r.returncode == 0, (summary, r.stderr[-2000:])
    assert summary["errors"] == 0 and summary["streams_ok"] > 100 and summary["halted"] > 10
    assert summary["rss_growth"] < 0.05
    # descriptors flat and given back; latency recorded over time (the picture of the long run)
    assert summary["fds_flat"] and summary["fds_idle_after"] <= summary["fds_after_warmup"]
    assert summary["ttft_p50_ms"] is not None and summary["chunk_p99_ms"] is not None
    assert len(summary["windows"]) >= 10 and sum(w["streams"] for w in summary["windows"]) > 100
