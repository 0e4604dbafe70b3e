"""The guard itself SIGKILLed under load, then restarted on the same decision log (with rotation).

What an operator needs from the log after a crash: a record for every request that had completed
(its client saw ``[DONE]``) before the kill — records reach the operating system one batch after
the stream ends (docs/decision-log.md: the flush policy), so "before" allows that one batch — no
torn record in the middle of any file, and a restarted guard that appends cleanly after whatever
the killed one left. A real ``guard serve`` process in front of the scripted upstream, 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from guard.training.trajectories import read_trajectories
from tests.reliability.test_shutdown_and_reload import CHAT, start_guard
from tests.support.procs import fake_upstream, uvicorn_workers

N_REQUESTS = 900
CONCURRENCY = 48
KILL_AFTER = 400  # completed streams
FLUSH_GRACE_S = 0.25  # a record of a stream that ended this close to the kill may be in flight


def _run_load(url: str, done: dict[str, float], enough: threading.Event) -> None:
    lock = threading.Lock()

    def one(i: int) -> None:
        rid = f"kill-{i:04d}"
        try:
            with httpx.stream(
                "POST",
                url + "/v1/chat/completions",
                json=CHAT,
                headers={"x-request-id": rid},
                timeout=30,
            ) as r:
                body = b"".join(r.iter_raw())
        except httpx.HTTPError:
            return  # the guard is gone: this stream did not complete
        if body.endswith(b"data: [DONE]\n\n"):
            with lock:
                done[rid] = time.monotonic()
                if len(done) >= KILL_AFTER:
                    enough.set()

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(one, range(N_REQUESTS)))


def _lines(files: list[Path]) -> tuple[list[dict[str, object]], list[str]]:
    recs, torn = [], []
    for f in files:
        text = f.read_text()
        lines = text.split("\n")
        for j, line in enumerate(lines):
            if not line:
                continue
            try:
                recs.append(json.loads(line))
            except json.JSONDecodeError:
                # only the very end of a file may be cut off (no newline after it)
                assert j == len(lines) - 1, f"{f}:{j + 1}: a torn record in the middle"
                torn.append(f"{f.name}:{j + 1}")
    return recs, torn


def _kill_all(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the guard and its workers at the same moment (a node lost, an OOM of the pod)."""
    pids = [proc.pid, *uvicorn_workers(proc.pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_under_load_loses_no_completed_record_and_restarts_cleanly(
    tmp_path: Path, workers: int
) -> None:
    """With two workers both append to the same log and rotate it: a record is never split
    between two writes (so never interleaved with the other worker's), and one rotation is done
    once, by whichever worker finds the file full."""
    log = tmp_path / "decisions.jsonl"
    mp = tmp_path / "metrics"
    mp.mkdir()
    env = {
        "GUARD_DECISION_LOG_MAX_BYTES": "65536",
        "GUARD_DECISION_LOG_BACKUPS": "200",
        "GUARD_DECISION_LOG_CONTENT": "true",  # what an operator fitting on the log sets
        "PROMETHEUS_MULTIPROC_DIR": str(mp),
    }
    args = ("--decision-log", str(log), "--workers", str(workers))
    with fake_upstream("--tokens-per-second", "400") as up:
        proc, url = start_guard(up, *args, env=env)
        done: dict[str, float] = {}
        enough = threading.Event()
        load = threading.Thread(target=_run_load, args=(url, done, enough))
        load.start()
        try:
            assert enough.wait(120), f"only {len(done)} streams completed"
            t_kill = time.monotonic()
            _kill_all(proc)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
            load.join(120)
        files = sorted(tmp_path.glob("decisions.jsonl*"))
        assert len(files) > 3, files  # rotation happened under load
        recs, torn = _lines(files)
        logged = {str(r["id"]) for r in recs}
        before = {rid for rid, t in done.items() if t < t_kill - FLUSH_GRACE_S}
        assert len(before) >= KILL_AFTER // 2
        missing = sorted(before - logged)
        assert not missing, f"{len(missing)} of {len(before)} completed streams not logged"
        assert len(logged) == len(recs)  # no record written twice

        # restarted on the same file: appends after what the killed guard left, readable
        proc, url = start_guard(up, *args, env=env)
        try:
            for i in range(20):
                r = httpx.post(
                    url + "/v1/chat/completions",
                    json={**CHAT, "stream": False},
                    headers={"x-request-id": f"again-{i}"},
                    timeout=30,
                )
                assert r.status_code == 200, r.text
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    files = sorted(tmp_path.glob("decisions.jsonl*"))
    recs2, torn2 = _lines(files)
    assert {f"again-{i}" for i in range(20)} <= {str(r["id"]) for r in recs2}
    assert not torn2, torn2  # the restarted guard removed any torn tail before appending
    # what guard fit reads, once labelled (a person's or a job's step): every file, no error
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text("".join(json.dumps({**r, "label": "safe"}) + "\n" for r in recs2))
    trajs, rep = read_trajectories([labelled])
    assert len(trajs) == len(recs2) and not rep.torn
    print(
        f"killed after {len(done)} completed streams; {len(before)} completed before the kill "
        f"(minus {FLUSH_GRACE_S} s) all logged; torn tails at the kill: {torn}; "
        f"{len(files)} files"
    )
