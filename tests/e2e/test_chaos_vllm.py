"""The short, bounded version of the chaos run with the real vLLM (``loadtests/chaos_vllm.py``;
the 20-minute one and its figures are in docs/reliability.md): vLLM SIGKILLed once under load and
restarted, then, with two guard workers, one worker SIGTERMed and one SIGKILLed. Every check of
the script must hold (it exits 1 otherwise); here its summary is read back so a failure names
the check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_chaos_short_vllm_killed_and_workers_killed(tmp_path: Path) -> None:
    out = tmp_path / "chaos.json"
    r = subprocess.run(
        [
            sys.executable, str(ROOT / "loadtests" / "chaos_vllm.py"),
            "--duration", "75", "--concurrency", "8", "--kills", "1", "--workers", "2",
            "--json", str(out),
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.is_file(), r.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert r.returncode == 0 and not summary["failures"], (summary, r.stderr[-2000:])
    (kill,) = summary["per_kill"]
    assert kill["in_flight"] > 0, "nothing was in flight at the kill: the check proved nothing"
    assert kill["in_flight_end_max_s"] <= 1.0, kill
    assert kill["requests_while_down"] > 0 and set(kill["while_down_statuses"]) <= {502, 503}
    assert kill["ready_while_down"] == [503] and kill["ready_after"] == [200], kill
    # requests started from 1 s after /health on all succeeded (the script's default), and
    # there were some: the check proved something
    assert kill["requests_after"] > 0 and kill["failed_after"] == [], kill
    assert summary["vllm_running_after"] == 0 and summary["guard_active_after"] == 0
    assert summary["counted_before_worker_kills"] == summary["sent_before_worker_kills"] > 0
    assert len(summary["workers_after"]) == 2
    assert not set(summary["workers_after"]) & set(summary["workers_before"])
