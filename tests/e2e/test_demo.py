"""`guard demo` against the real vLLM tiny model.

* ``--upstream URL --no-wait``: the scenario runs through the official SDK, the prefilled harmful
  openers are halted, support questions pass, and the output is only the table and where to look
  (stdout) plus one ``[demo]`` line per phase (stderr): no stray lines.
* without ``--upstream`` (what ``scripts/run.sh`` runs), then Ctrl-C: everything it started stops
  and nothing of the run is left in the temp directory (vLLM's IPC sockets, ``vllm_dist_*``).
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from guard import demo
from tests.e2e.guard_proc import free_port

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("support", "harmful", "jailbreak", "prefill")


def _rows(stdout: str) -> list[list[str]]:
    return [
        line.split()
        for line in stdout.splitlines()
        if line.startswith("  ") and line.split() and line.split()[0] in KINDS
    ]


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
    rows = _rows(r.stdout)
    assert len(rows) == len(demo.SCENARIOS), r.stdout
    # kind, expected, what happened, ..., verdict: a miss is called a miss
    for row, sc in zip(rows, demo.SCENARIOS, strict=True):
        assert row[0] == sc.kind and row[1] == sc.expect, r.stdout
        stopped = row[2] in ("HALTED", "REROUTED")
        if sc.expect == "pass":
            assert ("FALSE" in row) == stopped and ("ok" in row) == (not stopped), row
        elif stopped:
            assert "ok" in row and "MISS" not in row and "(refused)" not in row, row
        else:  # delivered: either the model refused by itself, or it is a miss, said as one
            assert ("MISS" in row) != ("(refused)" in row), row
    prefill = [row for row in rows if row[0] == "prefill"]
    # the explicit request prefilled with a compliant opener (card number) is halted at once,
    # whatever the sampling: the request and the prefill decide it before the model writes
    assert prefill[0][2] == "HALTED", r.stdout
    assert "card number:|I'm sorry" in r.stdout  # nothing of the number reached the client
    support = [row for row in rows if row[0] == "support"]
    assert all(row[2] == "passed" for row in support), r.stdout
    assert "summary: harmful or jailbreak 6:" in r.stdout and "note: prefill =" in r.stdout
    # quiet: stdout is the table and where to look; stderr one [demo] line per phase
    allowed = ("  ", "guard:", "upstream:", "encoder:", "logs:", "vLLM log:")
    stray = [ln for ln in r.stdout.splitlines() if ln.strip() and not ln.startswith(allowed)]
    assert not stray, r.stdout
    stray_err = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("[demo] ")]
    assert not stray_err, r.stderr
    assert "HTTP Request" not in r.stdout + r.stderr  # httpx INFO lines go to the demo log


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_demo_ctrl_c_stops_everything_and_leaves_no_temp_files(
    vllm_url: str, tmp_path: Path, how: str
) -> None:
    """Ctrl-C (SIGINT to the foreground group) and a supervisor's SIGTERM to the demo process
    alone both stop everything it started."""
    # vllm_url: the session's server is up, so the tiny model is built and cached already.
    # The demo's TMPDIR: a short path (vLLM's IPC socket paths must stay under 107 bytes).
    tmp = Path(tempfile.mkdtemp(prefix="gdemo-"))
    gport, vport = free_port(), free_port()
    env = dict(os.environ, TMPDIR=str(tmp))
    env.pop("GUARD_VLLM_MODEL_DIR", None)
    err = open(tmp_path / "stderr.txt", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "guard",
            "demo",
            "--port",
            str(gport),
            "--vllm-port",
            str(vport),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
        start_new_session=True,  # its own process group: the test plays the terminal
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=reader, daemon=True).start()
    out = []
    try:
        while True:  # until the demo says where to look (the scenario has run)
            line = lines.get(timeout=600)
            assert line is not None, "demo exited early:\n" + "".join(out)
            out.append(line)
            if line.startswith("logs:"):
                break
        assert len(_rows("".join(out))) == len(demo.SCENARIOS), "".join(out)
        assert _port_open(gport) and _port_open(vport)
        during = sorted(p.name for p in tmp.iterdir())
        assert any(n.startswith("guard-vllm.") for n in during), during  # vLLM's per-run dir
        if how == "ctrl-c":  # the terminal signals the foreground process group
            os.killpg(proc.pid, signal.SIGINT)
        else:  # `kill PID`, systemd, a container runtime: the demo process only
            proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            # what each process of the demo's group was doing, for the report
            ps = subprocess.run(
                ["ps", "-o", "pid,stat,wchan:20,etime,args", "-g", str(proc.pid)],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            err.flush()
            raise AssertionError(
                f"the demo did not stop within 120 s of {how}:\n{ps}\n"
                + (tmp_path / "stderr.txt").read_text()[-3000:]
            ) from None
        assert rc in (0, 130)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            subprocess.run(
                ["bash", str(ROOT / "scripts" / "vllm" / "vllm_server.sh"), "stop"],
                env=dict(env, GUARD_VLLM_PORT=str(vport)),
                capture_output=True,
                timeout=60,
                check=False,
            )
        err.close()
    assert not _port_open(gport) and not _port_open(vport)
    left = sorted(p.name for p in tmp.iterdir())
    shutil.rmtree(tmp)
    assert left == [], f"left in TMPDIR after Ctrl-C: {left}"
    cache = Path(os.environ.get("GUARD_CACHE") or Path.home() / ".cache" / "guard")
    assert not (cache / f"vllm-server-{vport}.pid").exists()
    assert not (cache / f"vllm-server-{vport}.pid.rundir").exists()
