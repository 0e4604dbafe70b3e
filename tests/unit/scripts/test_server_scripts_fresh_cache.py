"""The server scripts on a machine that never ran guard: an empty (or missing) cache folder.

The first ``./scripts/run.sh`` on a fresh machine once ended without a word: ``prune_logs`` ran
``ls -1t`` on a glob that matched nothing, ``ls`` exited 2 and ``set -euo pipefail`` ended the
script. These run the shared shell functions under the same options on an empty cache.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PROC = ROOT / "scripts" / "vllm" / "vllm_proc.sh"


def _run(script: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CACHE": str(cache), "LOGFILE": str(cache / "vllm-server-1.log")}
    return subprocess.run(
        ["bash", "-c", f"set -euo pipefail; source {PROC}; {script}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_prune_logs_on_a_cache_that_does_not_exist(tmp_path: Path) -> None:
    cache = tmp_path / "never-ran" / "guard"
    res = _run("prune_logs 'vllm-server-*.log'; echo reached", cache)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "reached"
    assert cache.is_dir()


def test_prune_logs_keeps_the_newest_and_the_current_log(tmp_path: Path) -> None:
    cache = tmp_path / "guard"
    cache.mkdir()
    for i in range(1, 10):
        f = cache / f"vllm-server-{i}.log"
        f.write_text("x")
        os.utime(f, (1_000_000 - i * 60, 1_000_000 - i * 60))  # 1 is the newest
    res = _run("GUARD_LOG_KEEP=3 prune_logs 'vllm-server-*.log'", cache)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in cache.iterdir()) == [
        "vllm-server-1.log",
        "vllm-server-2.log",
        "vllm-server-3.log",
    ]


def test_server_script_status_on_an_empty_cache(tmp_path: Path) -> None:
    env = {**os.environ, "GUARD_CACHE": str(tmp_path / "empty"), "GUARD_VLLM_PORT": "1"}
    res = subprocess.run(
        ["bash", str(ROOT / "scripts" / "vllm" / "vllm_server.sh"), "stop"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert "not running" in res.stderr + res.stdout
