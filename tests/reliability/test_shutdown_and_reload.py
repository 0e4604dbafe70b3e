"""SIGTERM drains in-flight streams and flushes the decision log; reloads keep a good model."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from guard.config import hash_key
from tests.support.procs import ROOT, fake_upstream, free_port, uvicorn_workers

CHAT = {
    "model": "tiny",
    "messages": [{"role": "user", "content": "where is my order?"}],
    "stream": True,
    "max_tokens": 40,
}


def start_guard(
    upstream: str, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    (ROOT / ".cache").mkdir(exist_ok=True)
    log = open(ROOT / ".cache" / "reliability-guard.log", "ab")  # noqa: SIM115 - child's stderr
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "guard",
            "serve",
            "--upstream",
            upstream,
            "--port",
            str(port),
            *args,
        ],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("guard did not start: see .cache/reliability-guard.log")
        time.sleep(0.1)


def test_sigterm_finishes_in_flight_streams_and_flushes_log(tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    with fake_upstream("--tokens-per-second", "20") as up:
        proc, url = start_guard(up, "--decision-log", str(log))
        result: dict[str, bytes] = {}
        first_bytes = threading.Event()

        def stream() -> None:
            with httpx.stream("POST", url + "/v1/chat/completions", json=CHAT, timeout=30) as r:
                parts = []
                for part in r.iter_raw():
                    parts.append(part)
                    first_bytes.set()
                result["body"] = b"".join(parts)

        t = threading.Thread(target=stream)
        t.start()
        assert first_bytes.wait(30)  # the stream is in flight (40 tokens at 20/s: ~2 s)
        proc.send_signal(signal.SIGTERM)
        # New connections are refused while draining (uvicorn stops listening at once)...
        refused = False
        deadline = time.monotonic() + 10
        while not refused and time.monotonic() < deadline:
            try:
                httpx.post(url + "/health", timeout=0.5)
            except httpx.HTTPError:
                refused = True
        assert refused and t.is_alive()  # ...while the in-flight stream is still going
        t.join(30)
        # uvicorn re-raises SIGTERM after a clean shutdown, so -15 is a clean exit too.
        assert proc.wait(30) in (0, -signal.SIGTERM)
    # ...but the in-flight stream completed, and its decision was written.
    assert result["body"].endswith(b"data: [DONE]\n\n")
    assert b'"finish_reason":"length"' in result["body"]
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) == 1 and records[0]["meta"]["outcome"] == "passed"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600  # owner-only


def test_bad_risk_model_refuses_to_start(tmp_path: Path) -> None:
    bad = tmp_path / "model.npz"
    bad.write_bytes(b"not a model")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "guard",
            "serve",
            "--upstream",
            "http://127.0.0.1:9",
            "--risk-model",
            str(bad),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "model.npz" in r.stderr and "Traceback" not in r.stderr
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "guard",
            "serve",
            "--upstream",
            "http://127.0.0.1:9",
            "--risk-model",
            str(tmp_path / "nope.npz"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and "nope.npz" in missing.stderr


def test_reload_keeps_old_model_on_bad_file_and_reaches_every_worker(tmp_path: Path) -> None:
    from guard.risk import default_model_path

    model = tmp_path / "model.npz"
    model.write_bytes(Path(default_model_path()).read_bytes())
    cfg = tmp_path / "guard.yaml"
    cfg.write_text(f"risk_model: {model}\nadmin_key_sha256: {hash_key('adm')}\n")
    mp = tmp_path / "metrics"
    mp.mkdir()
    with fake_upstream() as up:
        proc, url = start_guard(
            up, "--config", str(cfg), "--workers", "2", env={"PROMETHEUS_MULTIPROC_DIR": str(mp)}
        )
        try:
            adm = {"x-guard-admin-key": "adm"}
            ok = httpx.post(url + "/admin/reload", headers=adm, timeout=30)
            assert ok.status_code == 200, ok.text
            # Tamper with the file: the reload is refused, the old model keeps serving.
            model.write_bytes(model.read_bytes()[:-100] + b"x" * 100)
            bad = httpx.post(url + "/admin/reload", headers=adm, timeout=30)
            assert bad.status_code == 503 and "error" in bad.json()
            r = httpx.post(url + "/v1/chat/completions", json=CHAT, timeout=30)
            assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n")
            # Every worker watches the file (every 2 s): both report the failed reload.

            def reload_errors() -> tuple[float, str]:
                text = httpx.get(url + "/metrics", timeout=10).text
                for line in text.splitlines():
                    if line.startswith('guard_risk_model_reloads_total{outcome="error"}'):
                        return float(line.rsplit(" ", 1)[1]), text
                return 0.0, text

            deadline = time.monotonic() + 20
            errors, text = reload_errors()
            while errors < 2 and time.monotonic() < deadline:
                time.sleep(0.2)  # poll interval: the workers' own poll is every 2 s
                errors, text = reload_errors()
            assert errors >= 2, text[-3000:]
            assert "guard_risk_model_loaded 1.0" in text or "guard_risk_model_loaded 2.0" in text
        finally:
            proc.terminate()
            proc.wait(30)


def test_metrics_add_up_across_workers(tmp_path: Path) -> None:
    mp = tmp_path / "metrics"
    mp.mkdir()
    with fake_upstream() as up:
        proc, url = start_guard(up, "--workers", "2", env={"PROMETHEUS_MULTIPROC_DIR": str(mp)})
        try:
            with httpx.Client(timeout=30) as c:
                # New connections each time, so both workers get traffic.
                for _ in range(20):
                    r = c.post(
                        url + "/v1/chat/completions", json=CHAT, headers={"connection": "close"}
                    )
                    assert r.status_code == 200
            files = {p.name.rsplit("_", 1)[-1] for p in mp.glob("counter_*.db")}
            assert len(files) >= 2, "only one worker served traffic"
            text = httpx.get(url + "/metrics", timeout=10).text
            total = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("guard_requests_total{")
            )
            assert total == 20
            info = [ln for ln in text.splitlines() if ln.startswith("guard_risk_model_info{")]
            assert info, "risk model info missing in multiprocess mode"
        finally:
            proc.terminate()
            proc.wait(30)


def _active(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("guard_active_streams")
    )


def test_sigkilled_workers_are_replaced_and_leave_no_live_gauges(tmp_path: Path) -> None:
    """Both workers SIGKILLed with streams in flight: every client stream ends at once (the
    connection is reset; none hangs), the supervisor starts new workers that serve, and the dead
    workers' live gauges are swept (``guard_active_streams`` back to 0, not stuck at what the
    dead ones held)."""
    mp = tmp_path / "metrics"
    mp.mkdir()
    with fake_upstream("--tokens-per-second", "4") as up:
        proc, url = start_guard(up, "--workers", "2", env={"PROMETHEUS_MULTIPROC_DIR": str(mp)})
        try:
            ended: list[tuple[str, float]] = []

            def stream() -> None:
                try:
                    with (
                        httpx.Client(timeout=30) as c,
                        c.stream("POST", url + "/v1/chat/completions", json=CHAT) as r,
                    ):
                        for _ in r.iter_raw():
                            pass
                    ended.append(("ended", time.monotonic()))
                except httpx.HTTPError as exc:
                    ended.append((type(exc).__name__, time.monotonic()))

            threads = [threading.Thread(target=stream) for _ in range(6)]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 20
            while _active(url) < 6:
                assert time.monotonic() < deadline, "streams did not start"
                time.sleep(0.1)
            old = uvicorn_workers(proc.pid)
            assert len(old) == 2, old
            killed_at = time.monotonic()
            for pid in old:
                os.kill(pid, signal.SIGKILL)
            for t in threads:
                t.join(15)
            assert not any(t.is_alive() for t in threads), "a client stream hung"
            assert len(ended) == 6
            # cut off (40 tokens at 4/s take 10 s): ended by the reset, within seconds
            assert all(kind != "ended" and at - killed_at < 5 for kind, at in ended), ended
            deadline = time.monotonic() + 60
            while True:
                new = uvicorn_workers(proc.pid)
                if len(new) == 2 and not new & old:
                    try:
                        if httpx.get(url + "/health", timeout=1).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                assert time.monotonic() < deadline, f"workers not replaced: {new}"
                time.sleep(0.2)
            assert not [
                p for p in mp.glob("gauge_live*.db") if int(p.stem.rsplit("_", 1)[1]) in old
            ]
            assert _active(url) == 0
            r = httpx.post(url + "/v1/chat/completions", json=dict(CHAT, max_tokens=4), timeout=30)
            assert r.status_code == 200 and b"[DONE]" in r.content
        finally:
            proc.terminate()
            proc.wait(30)


def test_a_config_change_reaches_both_workers_and_the_old_model_info_goes(tmp_path: Path) -> None:
    """Two workers, the threshold changed in the config file and ``/admin/reload`` posted (it
    lands on one worker; the other sees the file change within its 2 s poll): both workers then
    publish the new threshold as the series at 1, and the old one is no longer at 1 anywhere."""
    cfg = tmp_path / "guard.yaml"
    cfg.write_text(f"admin_key_sha256: {hash_key('adm')}\npolicy:\n  threshold: 0.9\n")
    mp = tmp_path / "metrics"
    mp.mkdir()
    with fake_upstream() as up:
        proc, url = start_guard(
            up, "--config", str(cfg), "--workers", "2", env={"PROMETHEUS_MULTIPROC_DIR": str(mp)}
        )
        try:

            def in_use() -> dict[str, str]:
                """pid -> threshold of the model-info series at 1 (one per worker, or fail)."""
                text = httpx.get(url + "/metrics", timeout=10).text
                out: dict[str, str] = {}
                for line in text.splitlines():
                    if line.startswith("guard_risk_model_info{") and line.endswith(" 1.0"):
                        labels = dict(kv.split("=", 1) for kv in line[22:].split("}")[0].split(","))
                        pid = labels["pid"].strip('"')
                        assert pid not in out, f"two models at 1 in worker {pid}:\n{text}"
                        out[pid] = labels["threshold"].strip('"')
                return out

            deadline = time.monotonic() + 20
            while len(in_use()) < 2:  # both workers up and published
                assert time.monotonic() < deadline, in_use()
                time.sleep(0.2)
            assert set(in_use().values()) == {"0.9"}
            cfg.write_text(f"admin_key_sha256: {hash_key('adm')}\npolicy:\n  threshold: 0.85\n")
            r = httpx.post(url + "/admin/reload", headers={"x-guard-admin-key": "adm"}, timeout=30)
            assert r.status_code == 200, r.text
            deadline = time.monotonic() + 20
            while set(in_use().values()) != {"0.85"} or len(in_use()) < 2:
                assert time.monotonic() < deadline, in_use()
                time.sleep(0.2)
        finally:
            proc.terminate()
            proc.wait(30)
