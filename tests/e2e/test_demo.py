"""`guard demo --upstream URL --no-wait` against the real vLLM tiny model: the scenario runs
through the official SDK and the prefilled harmful openers are halted, support questions pass."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.e2e.guard_proc import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_demo_scenario(vllm_url: str) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "guard",
            "demo",
            "--upstream",
            vllm_url,
            "--no-wait",
            "--port",
            str(free_port()),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [
        line.split()
        for line in r.stdout.splitlines()
        if line.startswith("  ")
        and line.split()
        and line.split()[0] in ("support", "harmful", "jailbreak", "prefill")
    ]
    assert len(rows) == 8, r.stdout
    prefill = [row for row in rows if row[0] == "prefill"]
    assert all(row[1] == "HALTED" for row in prefill), r.stdout
    support = [row for row in rows if row[0] == "support"]
    assert all(row[1] == "passed" for row in support), r.stdout
