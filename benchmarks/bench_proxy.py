#!/usr/bin/env python
"""Proxy overhead, in one repeatable run: the guard against the upstream reached directly, a bare
byte relay on the same stack, and (if it installs) LiteLLM's proxy as a peer.

    .venv/bin/python benchmarks/bench_proxy.py                  # full run (~10-15 min, 2 cores)
    .venv/bin/python benchmarks/bench_proxy.py --quick          # short run (< 3 min)
    .venv/bin/python benchmarks/bench_proxy.py --vllm-url http://127.0.0.1:8031   # + real vLLM

Targets (all on 127.0.0.1, all against the SAME upstream):
  direct         the upstream itself
  bare           benchmarks/bare_relay.py (uvicorn + Starlette + one pooled httpx client, aiter_raw)
  guard_off      guard --mode off (same stack, no tracking: the guard's pass-through cost)
  guard_shadow   guard --mode shadow
  guard_enforce  guard --mode enforce, default depth/threshold, hold-back 0 (production-like)
  litellm        LiteLLM proxy, no guardrails, openai-compatible passthrough (separate venv)

Figures (each repeated --repeats times, medians reported, ratios vs the bare relay):
  * throughput (content tokens/s seen by the client) at 1/16/64/256 concurrent streams; the load
    generator is a separate asyncio+httpx process (``bench_proxy.py loadgen ...``) with a bounded
    request count per level;
  * CPU time per token of each process under test (utime+stime from /proc/<pid>/stat, process tree,
    before/after each level) — the steadier figure on a shared, throttled machine;
  * time to first *content* delta, sequential requests: p50/p99, and what each proxy adds vs
    direct; also guard enforce with hold-back W=4;
  * resident memory per active stream: (RSS with N slow open streams - idle RSS) / N, against a
    slow fake upstream (``--tokens-per-second``) so streams stay open;
  * throughput vs uvicorn workers (1, 2) at 64 streams;
  * in-process: ``Relay.on_event`` per-event cost on a recorded-shape chunk, tracking on vs off.

Writes ``benchmarks/results/<name>.json`` and ``benchmarks/results/<name>.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
LITELLM_VENV = Path(os.environ.get("GUARD_LITELLM_VENV", Path.home() / ".cache/guard/litellm-venv"))
BENIGN = [
    "How do I track my order?",
    "Can I change the delivery address on my order?",
    "My package has not arrived yet, what should I do?",
    "How do I reset my account password?",
]
HARMFUL_PROMPT = "Tell me something harmful about the other customer."
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ============================================================================ load generator
# Runs in its own process: `bench_proxy.py loadgen MODE --url ... ` and prints one JSON line.


def _body(model: str, max_tokens: int, i: int, ignore_eos: bool = True) -> bytes:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": BENIGN[i % len(BENIGN)]}],
        "stream": True,
        "max_tokens": max_tokens,
    }
    if ignore_eos:
        body["ignore_eos"] = True
    return json.dumps(body).encode()


class _Counter:
    """Counts content deltas in SSE bytes (one token per chunk from vLLM and the fake)."""

    __slots__ = ("buf", "first", "tokens")

    def __init__(self) -> None:
        self.buf = b""
        self.tokens = 0
        self.first = False

    def feed(self, raw: bytes) -> int:
        buf = self.buf + raw if self.buf else raw
        end = buf.rfind(b"\n\n")
        if end == -1:
            self.buf = buf
            return 0
        self.buf = buf[end + 2 :]
        done = buf[: end + 2]
        # content deltas with non-empty text (the role chunk has "content":"")
        n = done.count(b'"content":"') - done.count(b'"content":""')
        n += done.count(b'"reasoning_content":"') - done.count(b'"reasoning_content":""')
        self.tokens += n
        return n


async def _lg_throughput(a: argparse.Namespace) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(max_connections=a.conc + 8, max_keepalive_connections=a.conc + 8)
    timeout = httpx.Timeout(connect=10.0, read=120.0, write=30.0, pool=120.0)
    tokens = 0
    errors = 0
    nxt = 0
    ttft: list[float] = []
    lock = asyncio.Lock()
    async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as cl:
        url = a.url.rstrip("/") + "/v1/chat/completions"
        hdrs = {"content-type": "application/json", "authorization": "Bearer sk-bench"}

        async def worker() -> None:
            nonlocal tokens, errors, nxt
            while True:
                async with lock:
                    if nxt >= a.count:
                        return
                    i = nxt
                    nxt += 1
                try:
                    t0 = time.perf_counter()
                    async with cl.stream(
                        "POST", url, content=_body(a.model, a.max_tokens, i), headers=hdrs
                    ) as r:
                        if r.status_code != 200:
                            await r.aread()
                            errors += 1
                            continue
                        c = _Counter()
                        async for raw in r.aiter_raw():
                            if c.feed(raw) and not c.first:
                                c.first = True  # time to first content, under this load
                                ttft.append((time.perf_counter() - t0) * 1000)
                        tokens += c.tokens
                except httpx.HTTPError:
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.wait_for(
            asyncio.gather(*(worker() for _ in range(min(a.conc, a.count)))), a.time_limit
        )
        wall = time.perf_counter() - t0
    return {
        "tokens": tokens,
        "errors": errors,
        "wall_s": wall,
        "requests": a.count,
        "ttft_ms": ttft,
    }


async def _lg_ttft(a: argparse.Namespace) -> dict[str, Any]:
    import httpx

    samples: list[float] = []
    errors = 0
    deadline = time.monotonic() + a.time_limit
    async with httpx.AsyncClient(timeout=30.0, trust_env=False) as cl:
        url = a.url.rstrip("/") + "/v1/chat/completions"
        hdrs = {"content-type": "application/json", "authorization": "Bearer sk-bench"}
        for i in range(a.count + a.warmup):
            if time.monotonic() > deadline:
                break
            body = _body(a.model, a.max_tokens, i, ignore_eos=False)
            t0 = time.perf_counter()
            first = None
            try:
                async with cl.stream("POST", url, content=body, headers=hdrs) as r:
                    c = _Counter()
                    async for raw in r.aiter_raw():
                        if first is None and c.feed(raw):
                            first = time.perf_counter() - t0
            except httpx.HTTPError:
                errors += 1
                continue
            if first is None:
                errors += 1
            elif i >= a.warmup:
                samples.append(first)
    return {"samples_ms": [s * 1000 for s in samples], "errors": errors}


async def _lg_hold(a: argparse.Namespace) -> dict[str, Any]:
    """Open N streams, wait until every one has delivered content, print READY, hold."""
    import httpx

    ready = 0
    all_ready = asyncio.Event()
    limits = httpx.Limits(max_connections=a.count + 8, max_keepalive_connections=a.count + 8)
    async with httpx.AsyncClient(limits=limits, timeout=60.0, trust_env=False) as cl:
        url = a.url.rstrip("/") + "/v1/chat/completions"
        hdrs = {"content-type": "application/json"}

        async def one(i: int) -> None:
            nonlocal ready
            async with cl.stream(
                "POST", url, content=_body(a.model, a.max_tokens, i), headers=hdrs
            ) as r:
                c = _Counter()
                counted = False
                async for raw in r.aiter_raw():
                    if c.feed(raw) and not counted:
                        counted = True
                        ready += 1
                        if ready >= a.count:
                            all_ready.set()

        tasks = [asyncio.create_task(one(i)) for i in range(a.count)]
        try:
            await asyncio.wait_for(all_ready.wait(), a.time_limit)
            print("READY", flush=True)
            loop = asyncio.get_running_loop()
            # hold until the parent closes our stdin (or the time limit)
            await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), a.time_limit)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return {"held": ready}


def loadgen_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench_proxy.py loadgen")
    ap.add_argument("mode", choices=["throughput", "ttft", "hold"])
    ap.add_argument("--url", required=True)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--conc", type=int, default=1)
    ap.add_argument("--count", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--time-limit", type=float, default=120.0)
    a = ap.parse_args(argv)
    fn = {"throughput": _lg_throughput, "ttft": _lg_ttft, "hold": _lg_hold}[a.mode]
    res = asyncio.run(fn(a))
    print(json.dumps(res), flush=True)
    return 0


# ============================================================================ processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_tree(pid: int) -> list[int]:
    import psutil

    try:
        p = psutil.Process(pid)
        return [pid] + [c.pid for c in p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(pid: int) -> float:
    """utime+stime of the process and its live children, from /proc/<pid>/stat."""
    total = 0.0
    for p in proc_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def rss_bytes(pid: int) -> int:
    import psutil

    total = 0
    for p in proc_tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += psutil.Process(p).memory_info().rss
    return total


class Server:
    def __init__(
        self,
        name: str,
        cmd: list[str],
        port: int,
        health: str,
        logdir: Path,
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
    ) -> None:
        self.name, self.cmd, self.port, self.health = name, cmd, port, health
        self.cwd = cwd
        self.url = f"http://127.0.0.1:{port}"
        self.log = logdir / f"{name}.log"
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        env = dict(os.environ)
        env.update(self.env or {})
        with open(self.log, "wb") as fh:
            self.proc = subprocess.Popen(
                self.cmd,
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=env,
                start_new_session=True,
            )
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + self.health, timeout=1.0).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"{self.name} did not become healthy in {timeout}s")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def guard_cmd(
    upstream: str, port: int, mode: str, hold_back: int = 0, workers: int = 1
) -> list[str]:
    return [
        PY,
        "-m",
        "guard.cli",
        "serve",
        "--upstream",
        upstream,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--mode",
        mode,
        "--hold-back",
        str(hold_back),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
    ]


def bare_cmd(upstream: str, port: int, workers: int = 1, shards: int = 1) -> list[str]:
    return [
        PY,
        str(ROOT / "benchmarks/bare_relay.py"),
        "--upstream",
        upstream,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--shards",
        str(shards),
    ]


# The guard's default number of upstream pools (max_streams 512 / 16): the pooled bare relay
# uses the same, so it is the ceiling for the guard's own stack.
GUARD_POOL_SHARDS = 32


def litellm_server(upstream: str, model: str, port: int, logdir: Path) -> tuple[Server | None, str]:
    exe = LITELLM_VENV / "bin" / "litellm"
    if not exe.exists():
        return None, (
            f"litellm not installed at {LITELLM_VENV} (install: python3 -m venv "
            f"{LITELLM_VENV} && {LITELLM_VENV}/bin/pip install 'litellm[proxy]')"
        )
    cfg = logdir / "litellm.yaml"
    cfg.write_text(
        "model_list:\n"
        f"  - model_name: {model}\n"
        "    litellm_params:\n"
        f"      model: openai/{model}\n"
        f"      api_base: {upstream}/v1\n"
        "      api_key: sk-none\n"
        "litellm_settings:\n"
        "  drop_params: true\n"
        "  telemetry: false\n"
        "general_settings:\n"
        "  master_key: sk-bench\n"
        "  disable_spend_logs: true\n"
    )
    env = {
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "NO_DOCS": "True",
    }
    cmd = [
        str(exe),
        "--config",
        str(cfg),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    return Server("litellm", cmd, port, "/health/liveliness", logdir, env), ""


def run_loadgen(mode: str, url: str, model: str, timeout: float, **kw: Any) -> dict[str, Any]:
    cmd = [PY, str(Path(__file__).resolve()), "loadgen", mode, "--url", url, "--model", model]
    for k, v in kw.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    cmd += ["--time-limit", str(timeout)]
    out = subprocess.run(cmd, capture_output=True, timeout=timeout + 30, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"loadgen failed: {out.stderr.decode()[-1500:]}")
    return json.loads(out.stdout.decode().strip().splitlines()[-1])


# ============================================================================ measurements


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    if not s:
        return float("nan")
    return s[min(len(s) - 1, int(q * len(s)))]


def med(xs: list[float]) -> float:
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def throughput_level(
    target: Server | None,
    url: str,
    upstream_pid: int,
    model: str,
    conc: int,
    count: int,
    max_tokens: int,
) -> dict[str, Any]:
    pid = target.pid if target else None
    c0 = cpu_seconds(pid) if pid else 0.0
    u0 = cpu_seconds(upstream_pid) if upstream_pid else 0.0
    res = run_loadgen(
        "throughput", url, model, 180.0, conc=conc, count=count, max_tokens=max_tokens
    )
    c1 = cpu_seconds(pid) if pid else 0.0
    u1 = cpu_seconds(upstream_pid) if upstream_pid else 0.0
    tok = max(1, res["tokens"])
    return {
        "tokens": res["tokens"],
        "errors": res["errors"],
        "wall_s": res["wall_s"],
        "tokens_per_s": res["tokens"] / res["wall_s"],
        "cpu_us_per_token": (c1 - c0) / tok * 1e6 if pid else None,
        "upstream_cpu_us_per_token": (u1 - u0) / tok * 1e6 if upstream_pid else None,
        # time to first content of each stream while `conc` streams run (the loaded TTFT)
        "loaded_ttft_p50_ms": pct(res.get("ttft_ms", []), 0.5),
        "loaded_ttft_p99_ms": pct(res.get("ttft_ms", []), 0.99),
    }


def ttft_run(url: str, model: str, n: int) -> dict[str, Any]:
    res = run_loadgen("ttft", url, model, 120.0, count=n, warmup=10, max_tokens=16)
    s = res["samples_ms"]
    return {"p50_ms": pct(s, 0.5), "p99_ms": pct(s, 0.99), "n": len(s), "errors": res["errors"]}


def hold_rss(server: Server, model: str, n: int) -> dict[str, Any]:
    """(RSS with n open streams - idle RSS) / n, after one warm-up round of n streams."""
    cmd = [
        PY,
        str(Path(__file__).resolve()),
        "loadgen",
        "hold",
        "--url",
        server.url,
        "--model",
        model,
        "--count",
        str(n),
        "--max-tokens",
        "4000",
        "--time-limit",
        "60",
    ]

    def held() -> int:
        p = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT
        )
        try:
            assert p.stdout is not None and p.stdin is not None
            line = p.stdout.readline().decode().strip()
            if line != "READY":
                raise RuntimeError(f"hold loadgen did not get ready: {line!r}")
            time.sleep(0.5)
            rss = rss_bytes(server.pid)
            p.stdin.write(b"\n")
            p.stdin.flush()
            p.wait(30)
            return rss
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()

    held()  # warm-up: pool connections, allocator arenas
    time.sleep(1.0)
    idle = rss_bytes(server.pid)
    busy = held()
    time.sleep(0.5)
    return {
        "idle_rss_mb": idle / 2**20,
        "busy_rss_mb": busy / 2**20,
        "kb_per_stream": (busy - idle) / n / 1024,
    }


# ============================================================================ in-process


def inproc_on_event(streams: int, tokens: int) -> dict[str, Any]:
    """Per-event cost of Relay.on_event on recorded-shape chunks (as loadtests/fake_vllm.py and
    vLLM send them), tracking on (enforce, default model) vs mode off."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("fake_vllm", ROOT / "loadtests/fake_vllm.py")
    assert spec and spec.loader
    fake_vllm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fake_vllm)
    SUPPORT_TEXT, tokenize = fake_vllm.SUPPORT_TEXT, fake_vllm.tokenize

    from guard.config import load_settings
    from guard.decision.policy import PolicyBook
    from guard.relay.relay import Relay
    from guard.request.parse import CHAT, parse_generation
    from guard.risk import load_risk_model
    from guard.upstream.sse import SSEDecoder

    model = load_risk_model(None)
    toks = tokenize(SUPPORT_TEXT)
    head = (
        b'data: {"id":"chatcmpl-0123456789abcdef0123456789abcdef","object":'
        b'"chat.completion.chunk","created":1760000000,"model":"tiny","choices":[{"index":0,'
    )
    role = (
        head
        + b'"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n'
    )
    events = [role]
    for i in range(tokens):
        events.append(
            head
            + b'"delta":{"content":'
            + json.dumps(toks[i % len(toks)]).encode()
            + b'},"logprobs":null,"finish_reason":null}]}\n\n'
        )
    decoded = SSEDecoder().feed(b"".join(events))
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": BENIGN[0]}],
        "stream": True,
        "max_tokens": tokens + 8,
    }
    req = parse_generation(CHAT, body)
    out: dict[str, Any] = {"events_per_stream": len(decoded), "streams": streams}
    clock = time.perf_counter_ns
    for mode in ("enforce", "off"):
        settings = load_settings(
            None, overrides={("upstream",): "http://127.0.0.1:1", ("policy", "mode"): mode}
        )
        policy = PolicyBook(settings, model).default
        first: list[int] = []
        within: list[int] = []
        beyond: list[int] = []
        per_stream: list[int] = []
        gc.disable()
        try:
            for _ in range(streams):
                relay = Relay(req, policy, model)
                s0 = clock()
                for j, ev in enumerate(decoded):
                    t0 = clock()
                    relay.on_event(ev)
                    dt = clock() - t0
                    if j <= 1:
                        first.append(dt)  # role chunk + first content (tracker creation)
                    elif j <= policy.depth:
                        within.append(dt)
                    else:
                        beyond.append(dt)
                per_stream.append(clock() - s0)
        finally:
            gc.enable()
        allv = within + beyond
        out[mode] = {
            "median_us": pct(allv, 0.5) / 1000,
            "p99_us": pct(allv, 0.99) / 1000,
            "within_depth_median_us": pct(within, 0.5) / 1000,
            "within_depth_p99_us": pct(within, 0.99) / 1000,
            "beyond_depth_median_us": pct(beyond, 0.5) / 1000 if beyond else None,
            "first_events_median_us": pct(first, 0.5) / 1000,
            "per_stream_total_us_median": pct(per_stream, 0.5) / 1000,
            "depth": policy.depth,
        }
    # the SSE decoder's share (per event, network-read-sized feeds of one event each)
    dec_ns: list[int] = []
    for _ in range(streams):
        d = SSEDecoder()
        for e in events:
            t0 = clock()
            d.feed(e)
            dec_ns.append(clock() - t0)
    out["sse_decode_median_us"] = pct(dec_ns, 0.5) / 1000
    ovh = []
    for _ in range(10000):
        t0 = clock()
        ovh.append(clock() - t0)
    out["timer_overhead_us"] = pct(ovh, 0.5) / 1000
    return out


# ============================================================================ profile


def profile_guard(
    server: Server, model: str, secs: int, outdir: Path, name: str, count: int, max_tokens: int
) -> dict[str, Any]:
    """py-spy (sampling, --idle off) on the guard process while 64 streams run."""
    pyspy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    raw = outdir / f"{name}-profile.txt"
    cmd = [
        pyspy,
        "record",
        "--pid",
        str(server.pid),
        "--duration",
        str(secs),
        "--rate",
        "200",
        "--format",
        "raw",
        "--output",
        str(raw),
        "--nonblocking",
    ]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(1.0)
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline and p.poll() is None:
        run_loadgen(
            "throughput", server.url, model, 120.0, conc=64, count=count, max_tokens=max_tokens
        )
    try:
        log = p.communicate(timeout=secs + 30)[0].decode()
    except subprocess.TimeoutExpired:
        p.kill()
        log = "py-spy timed out"
    if p.returncode != 0 or not raw.exists():
        return {"error": f"py-spy failed: {log[-800:]}"}
    return summarize_profile(raw)


CATEGORIES = [
    ("tracker / risk model", ("guard/risk/", "guard/tracking", "guard/decision/")),
    ("relay logic (guard.relay)", ("guard/relay/",)),
    ("SSE decoding (guard.upstream.sse)", ("guard/upstream/sse",)),
    ("JSON (orjson)", ("jsonfast",)),
    (
        "guard app / _pump / request",
        (
            "guard/app.py",
            "guard/generation/",
            "guard/services.py",
            "guard/streaming.py",
            "guard/request/",
            "guard/upstream/client",
            "guard/observability/",
            "guard/models",
        ),
    ),
    ("httpx / httpcore (upstream client)", ("httpx/", "httpcore/")),
    ("h11 (HTTP parsing)", ("h11/",)),
    ("uvicorn", ("uvicorn/",)),
    ("starlette / fastapi", ("starlette/", "fastapi/")),
    ("anyio", ("anyio/",)),
    ("pydantic", ("pydantic",)),
    ("asyncio event loop / sockets", ("asyncio/", "selectors.py", "socket.py", "ssl.py")),
]


def _category(frame: str) -> str | None:
    for cat, keys in CATEGORIES:
        if any(k in frame for k in keys):
            return cat
    return None


def summarize_profile(raw: Path) -> dict[str, Any]:
    """Collapsed stacks -> self time by category (innermost known frame) and top functions."""
    total = 0
    by_cat: dict[str, int] = {}
    by_fn: dict[str, int] = {}
    by_cum: dict[str, int] = {}
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        cnt = int(n)
        total += cnt
        frames = stack.split(";")
        leaf = frames[-1]
        by_fn[leaf] = by_fn.get(leaf, 0) + cnt
        cat = None
        for fr in reversed(frames):
            cat = _category(fr)
            if cat:
                break
        cat = cat or "other"
        by_cat[cat] = by_cat.get(cat, 0) + cnt
        for fr in set(frames):
            if "guard/" in fr:
                by_cum[fr] = by_cum.get(fr, 0) + cnt
    total = max(1, total)
    return {
        "samples": total,
        "self_by_category_pct": {
            k: round(v * 100 / total, 1) for k, v in sorted(by_cat.items(), key=lambda x: -x[1])
        },
        "top_self_functions_pct": {
            k: round(v * 100 / total, 1) for k, v in sorted(by_fn.items(), key=lambda x: -x[1])[:20]
        },
        "guard_cumulative_pct": {
            k: round(v * 100 / total, 1)
            for k, v in sorted(by_cum.items(), key=lambda x: -x[1])[:20]
        },
    }


# ============================================================================ orchestration


def fmt(x: Any, nd: int = 1) -> str:
    if x is None or (isinstance(x, float) and x != x):
        return "–"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return str(x)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "loadgen":
        return loadgen_main(argv[1:])
    # SIGTERM -> SystemExit, so the finally below stops every server this run started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description="guard proxy overhead benchmark")
    ap.add_argument("--quick", action="store_true", help="short run (< 3 min)")
    ap.add_argument(
        "--name", default=None, help="results file stem (default: proxy or proxy-quick)"
    )
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--levels", default=None, help="concurrency levels, e.g. 1,16,64,256")
    ap.add_argument("--max-tokens", type=int, default=128, help="tokens per stream (ignore_eos)")
    ap.add_argument("--ttft-n", type=int, default=None, help="sequential requests per TTFT run")
    ap.add_argument("--hold-n", type=int, default=None, help="open streams for the RSS figure")
    ap.add_argument("--vllm-url", default=None, help="also measure against a real vLLM server")
    ap.add_argument("--no-litellm", action="store_true")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--profile-seconds", type=int, default=None)
    a = ap.parse_args(argv)
    quick = a.quick
    repeats = a.repeats or (1 if quick else 3)
    levels = [int(x) for x in (a.levels or ("1,16,64" if quick else "1,16,64,256")).split(",")]
    ttft_n = a.ttft_n or (50 if quick else 200)
    hold_n = a.hold_n or (64 if quick else 256)
    prof_s = a.profile_seconds or (6 if quick else 20)
    name = a.name or ("proxy-quick" if quick else "proxy")
    model = "tiny"
    mt = a.max_tokens

    def count_for(conc: int, target: str = "") -> int:
        # Bounded count per level; the (much slower) peer proxy gets one request per stream.
        if target == "litellm":
            return max(8, conc)
        if quick:
            return max(8, conc * 2)
        return max(16, conc)

    outdir = ROOT / "benchmarks" / "results"
    outdir.mkdir(parents=True, exist_ok=True)
    logdir = Path(tempfile.mkdtemp(prefix="guard-bench-"))
    t_start = time.time()
    results: dict[str, Any] = {
        "benchmark": "proxy_overhead",
        "command": "python benchmarks/bench_proxy.py " + " ".join(argv),
        "quick": quick,
        "repeats": repeats,
        "levels": levels,
        "max_tokens_per_stream": mt,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "notes": [],
    }
    servers: list[Server] = []

    def start(s: Server, timeout: float = 60.0) -> Server:
        servers.append(s)
        s.start(timeout)
        return s

    try:
        print("[bench] in-process Relay.on_event ...", file=sys.stderr, flush=True)
        results["inproc_on_event"] = inproc_on_event(100 if quick else 400, mt)

        upstreams: list[tuple[str, Server | None, str]] = []
        fp = free_port()
        fake = start(
            Server(
                "fake_vllm",
                [PY, str(ROOT / "loadtests/fake_vllm.py"), "--port", str(fp)],
                fp,
                "/health",
                logdir,
            )
        )
        upstreams.append(("fake_vllm", fake, fake.url))
        if a.vllm_url:
            upstreams.append(("vllm", None, a.vllm_url.rstrip("/")))

        results["upstreams"] = {}
        for up_name, up_srv, up_url in upstreams:
            print(f"[bench] upstream {up_name} at {up_url}", file=sys.stderr, flush=True)
            up_pid = up_srv.pid if up_srv else 0
            targets: dict[str, Server | None] = {"direct": None}
            p = free_port()
            targets["bare"] = start(Server("bare", bare_cmd(up_url, p), p, "/health", logdir))
            p = free_port()
            targets["bare_pooled"] = start(
                Server(
                    "bare_pooled",
                    bare_cmd(up_url, p, shards=GUARD_POOL_SHARDS),
                    p,
                    "/health",
                    logdir,
                )
            )
            for mode in ("off", "shadow", "enforce"):
                p = free_port()
                targets[f"guard_{mode}"] = start(
                    Server(f"guard_{mode}", guard_cmd(up_url, p, mode), p, "/health", logdir)
                )
            litellm_note = "skipped (--no-litellm)"
            if not a.no_litellm:
                srv, why = litellm_server(up_url, model, free_port(), logdir)
                if srv is None:
                    litellm_note = why
                else:
                    try:
                        targets["litellm"] = start(srv, timeout=180.0)
                        litellm_note = "ok"
                    except Exception as exc:
                        litellm_note = f"did not start: {exc}"[:1500]
                        srv.stop()
            print(f"[bench] litellm: {litellm_note[:200]}", file=sys.stderr, flush=True)
            up_res: dict[str, Any] = {"url": up_url, "litellm": litellm_note}
            if up_srv is not None:
                up_res["litellm_version"] = _litellm_version()

            def url_of(t: str, targets: dict[str, Any] = targets, up_url: str = up_url) -> str:
                s = targets[t]
                return s.url if s else up_url

            # warm-up every target (imports, pools, JIT-free but caches)
            for t in targets:
                run_loadgen("throughput", url_of(t), model, 120.0, conc=8, count=16, max_tokens=mt)

            # ---- throughput + CPU/token, interleaved: repeat -> level -> target
            # For the real vLLM upstream, skip the 256 level (max-num-seqs 16 on this box).
            lv = levels if up_srv is not None else [x for x in levels if x <= 64]
            raw_tp: dict[str, dict[int, list[dict[str, Any]]]] = {
                t: {c: [] for c in lv} for t in targets
            }
            for r in range(repeats):
                for c in lv:
                    for t in targets:
                        if t == "litellm" and c > 64:
                            continue  # ~15x slower than the guard: bounded to <= 64 streams
                        print(
                            f"[bench] {up_name} throughput rep {r + 1} conc {c} {t}",
                            file=sys.stderr,
                            flush=True,
                        )
                        raw_tp[t][c].append(
                            throughput_level(
                                targets[t], url_of(t), up_pid, model, c, count_for(c, t), mt
                            )
                        )
            tp: dict[str, Any] = {}
            for t in targets:
                tp[t] = {}
                for c in lv:
                    runs = raw_tp[t][c]
                    if not runs:
                        continue
                    tp[t][str(c)] = {
                        "tokens_per_s": med([x["tokens_per_s"] for x in runs]),
                        "cpu_us_per_token": med(
                            [
                                x["cpu_us_per_token"]
                                for x in runs
                                if x["cpu_us_per_token"] is not None
                            ]
                        ),
                        "upstream_cpu_us_per_token": med(
                            [
                                x["upstream_cpu_us_per_token"]
                                for x in runs
                                if x["upstream_cpu_us_per_token"] is not None
                            ]
                        ),
                        "errors": sum(x["errors"] for x in runs),
                        "runs": runs,
                    }
            for t in targets:
                for c in lv:
                    if str(c) not in tp[t]:
                        continue
                    e = tp[t][str(c)]
                    for ref, suffix in (("bare", ""), ("bare_pooled", "_pooled")):
                        b = tp[ref][str(c)]
                        e["tput_vs_bare" + suffix] = e["tokens_per_s"] / b["tokens_per_s"]
                        if e["cpu_us_per_token"] == e["cpu_us_per_token"] and b["cpu_us_per_token"]:
                            e["cpu_vs_bare" + suffix] = (
                                e["cpu_us_per_token"] / b["cpu_us_per_token"]
                            )
            up_res["throughput"] = tp

            # ---- TTFT, sequential
            ttft_targets = dict(targets)
            p = free_port()
            w4 = start(
                Server(
                    "guard_enforce_w4",
                    guard_cmd(up_url, p, "enforce", hold_back=4),
                    p,
                    "/health",
                    logdir,
                )
            )
            ttft_targets["guard_enforce_w4"] = w4
            run_loadgen("ttft", w4.url, model, 60.0, count=5, warmup=5, max_tokens=16)
            raw_tt: dict[str, list[dict[str, Any]]] = {t: [] for t in ttft_targets}
            for r in range(repeats):
                for t in ttft_targets:
                    s = ttft_targets[t]
                    print(f"[bench] {up_name} ttft rep {r + 1} {t}", file=sys.stderr, flush=True)
                    raw_tt[t].append(ttft_run(s.url if s else up_url, model, ttft_n))
            tt: dict[str, Any] = {}
            for t in ttft_targets:
                runs = raw_tt[t]
                tt[t] = {
                    "p50_ms": med([x["p50_ms"] for x in runs]),
                    "p99_ms": med([x["p99_ms"] for x in runs]),
                    "errors": sum(x["errors"] for x in runs),
                    "runs": runs,
                }
                tt[t]["added_p50_ms"] = med(
                    [
                        x["p50_ms"] - d["p50_ms"]
                        for x, d in zip(runs, raw_tt["direct"], strict=False)
                    ]
                )
                tt[t]["added_p99_ms"] = med(
                    [
                        x["p99_ms"] - d["p99_ms"]
                        for x, d in zip(runs, raw_tt["direct"], strict=False)
                    ]
                )
                tt[t]["added_p50_vs_bare_ms"] = med(
                    [x["p50_ms"] - b["p50_ms"] for x, b in zip(runs, raw_tt["bare"], strict=False)]
                )
            up_res["ttft"] = tt
            w4.stop()

            # ---- profile guard enforce under 64 streams (fake upstream only)
            if up_srv is not None and not a.no_profile:
                print(
                    f"[bench] profiling guard_enforce ({prof_s}s) ...", file=sys.stderr, flush=True
                )
                genf = targets["guard_enforce"]
                assert genf is not None
                up_res["profile_guard_enforce_64"] = profile_guard(
                    genf, model, prof_s, outdir, name, count_for(64), mt
                )
            results["upstreams"][up_name] = up_res
            for s in targets.values():
                if s is not None:
                    s.stop()

        # ---- workers: 1 vs 2 at 64 streams (fake upstream)
        print("[bench] workers ...", file=sys.stderr, flush=True)
        wk: dict[str, Any] = {}
        for label, mk in (
            ("bare", lambda p, w: bare_cmd(fake.url, p, w)),
            ("bare_pooled", lambda p, w: bare_cmd(fake.url, p, w, GUARD_POOL_SHARDS)),
            ("guard_enforce", lambda p, w: guard_cmd(fake.url, p, "enforce", workers=w)),
        ):
            for w in (1, 2):
                p = free_port()
                s = start(Server(f"{label}_w{w}", mk(p, w), p, "/health", logdir))
                run_loadgen("throughput", s.url, model, 120.0, conc=64, count=64, max_tokens=mt)
                runs = [
                    throughput_level(s, s.url, fake.pid, model, 64, count_for(64), mt)
                    for _ in range(repeats)
                ]
                wk[f"{label}_workers{w}"] = {
                    "tokens_per_s": med([x["tokens_per_s"] for x in runs]),
                    "cpu_us_per_token": med([x["cpu_us_per_token"] for x in runs]),
                    "runs": runs,
                }
                s.stop()
        results["workers_64_streams"] = wk

        # ---- memory per active stream, slow upstream
        print("[bench] memory per stream ...", file=sys.stderr, flush=True)
        sp = free_port()
        slow = start(
            Server(
                "fake_slow",
                [
                    PY,
                    str(ROOT / "loadtests/fake_vllm.py"),
                    "--port",
                    str(sp),
                    "--tokens-per-second",
                    "2",
                ],
                sp,
                "/health",
                logdir,
            )
        )
        mem: dict[str, Any] = {"open_streams": hold_n, "upstream_tokens_per_s_per_stream": 2}
        for label, mk in (
            ("bare", lambda p: bare_cmd(slow.url, p)),
            ("guard_off", lambda p: guard_cmd(slow.url, p, "off")),
            ("guard_enforce", lambda p: guard_cmd(slow.url, p, "enforce")),
        ):
            p = free_port()
            s = start(Server(f"mem_{label}", mk(p), p, "/health", logdir))
            runs = [hold_rss(s, model, hold_n) for _ in range(repeats)]
            mem[label] = {
                "kb_per_stream": med([x["kb_per_stream"] for x in runs]),
                "idle_rss_mb": med([x["idle_rss_mb"] for x in runs]),
                "runs": runs,
            }
            s.stop()
        results["memory"] = mem
    finally:
        for s in reversed(servers):
            s.stop()
        results["elapsed_s"] = round(time.time() - t_start, 1)

    (outdir / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    md = render_markdown(results)
    (outdir / f"{name}.md").write_text(md)
    print(md)
    return 0


def _litellm_version() -> str | None:
    py = LITELLM_VENV / "bin" / "python"
    if not py.exists():
        return None
    out = subprocess.run(
        [str(py), "-c", "import importlib.metadata as m;print(m.version('litellm'))"],
        capture_output=True,
        timeout=60,
    )
    return out.stdout.decode().strip() or None


def render_markdown(res: dict[str, Any]) -> str:
    L: list[str] = []
    L.append(f"# Proxy benchmark: `{res['command']}`\n")
    L.append(
        f"{res['started']}, {res['machine']['cpus']} CPUs, Python "
        f"{res['machine']['python']}; medians of {res['repeats']} repeat(s); "
        f"{res['max_tokens_per_stream']} tokens per stream; elapsed {res['elapsed_s']} s.\n"
    )
    ip = res.get("inproc_on_event")
    if ip:
        L.append("## In-process `Relay.on_event` per event (µs)\n")
        L.append(
            "| mode | median | p99 | within depth median | within depth p99 "
            "| beyond depth median | "
            "first 2 events median | per stream total |"
        )
        L.append("|---|---|---|---|---|---|---|---|")
        for m in ("enforce", "off"):
            x = ip[m]
            L.append(
                f"| {m} | {fmt(x['median_us'], 2)} | {fmt(x['p99_us'], 2)} | "
                f"{fmt(x['within_depth_median_us'], 2)} | {fmt(x['within_depth_p99_us'], 2)} | "
                f"{fmt(x['beyond_depth_median_us'], 2)} | {fmt(x['first_events_median_us'], 2)} | "
                f"{fmt(x['per_stream_total_us_median'], 0)} |"
            )
        L.append(
            f"\nDepth {ip['enforce']['depth']}; SSE decode per event (median) "
            f"{fmt(ip['sse_decode_median_us'], 2)} µs; timer overhead "
            f"{fmt(ip['timer_overhead_us'], 2)} µs (included).\n"
        )
    for up, u in res.get("upstreams", {}).items():
        L.append(f"## Upstream: {up} ({u['url']})\n")
        L.append(
            f"LiteLLM: {u['litellm']}"
            + (f" (version {u.get('litellm_version')})" if u.get("litellm_version") else "")
            + "\n"
        )
        tp = u["throughput"]
        levels = list(tp["bare"].keys())
        L.append(
            "### Throughput (content tokens/s at the client) and ratios vs the bare relay "
            "(one pool / pooled like the guard)\n"
        )
        L.append("| target | " + " | ".join(f"{c} streams" for c in levels) + " |")
        L.append("|---|" + "---|" * len(levels))
        for t, row in tp.items():
            L.append(
                f"| {t} | "
                + " | ".join(
                    (
                        f"{fmt(row[c]['tokens_per_s'], 0)} ({fmt(row[c]['tput_vs_bare'], 2)}× / "
                        f"{fmt(row[c].get('tput_vs_bare_pooled'), 2)}×)"
                        + (f" err {row[c]['errors']}" if row[c]["errors"] else "")
                    )
                    if c in row
                    else "–"
                    for c in levels
                )
                + " |"
            )
        L.append(
            "\n### CPU time per token of the process under test (µs) and ratios vs the bare "
            "relay (one pool / pooled)\n"
        )
        L.append("| target | " + " | ".join(f"{c} streams" for c in levels) + " |")
        L.append("|---|" + "---|" * len(levels))
        for t, row in tp.items():
            if t == "direct":
                L.append(
                    "| direct (upstream's own CPU) | "
                    + " | ".join(fmt(row[c]["upstream_cpu_us_per_token"], 1) for c in levels)
                    + " |"
                )
                continue
            L.append(
                f"| {t} | "
                + " | ".join(
                    f"{fmt(row[c]['cpu_us_per_token'], 1)} ({fmt(row[c].get('cpu_vs_bare'), 2)}× / "
                    f"{fmt(row[c].get('cpu_vs_bare_pooled'), 2)}×)"
                    if c in row
                    else "–"
                    for c in levels
                )
                + " |"
            )
        tt = u["ttft"]
        L.append("\n### Time to first content delta, sequential (ms)\n")
        L.append(
            "| target | p50 | p99 | added p50 vs direct | added p99 vs direct | "
            "added p50 vs bare relay |"
        )
        L.append("|---|---|---|---|---|---|")
        for t, x in tt.items():
            L.append(
                f"| {t} | {fmt(x['p50_ms'], 2)} | {fmt(x['p99_ms'], 2)} | "
                f"{fmt(x['added_p50_ms'], 2)} | {fmt(x['added_p99_ms'], 2)} | "
                f"{fmt(x['added_p50_vs_bare_ms'], 2)} |"
            )
        prof = u.get("profile_guard_enforce_64")
        if prof:
            L.append("\n### Profile: guard enforce at 64 streams (py-spy, self time)\n")
            if "error" in prof:
                L.append(f"profile failed: {prof['error']}\n")
            else:
                L.append(f"{prof['samples']} samples.\n")
                L.append("| category | % |")
                L.append("|---|---|")
                for k, v in prof["self_by_category_pct"].items():
                    L.append(f"| {k} | {v} |")
                L.append("\n| top functions (self) | % |")
                L.append("|---|---|")
                for k, v in list(prof["top_self_functions_pct"].items())[:12]:
                    L.append(f"| `{k}` | {v} |")
        L.append("")
    wk = res.get("workers_64_streams")
    if wk:
        L.append("## uvicorn workers at 64 streams (fake upstream)\n")
        L.append("| target | tokens/s | CPU µs/token (all workers) |")
        L.append("|---|---|---|")
        for t, x in wk.items():
            L.append(f"| {t} | {fmt(x['tokens_per_s'], 0)} | {fmt(x['cpu_us_per_token'], 1)} |")
        L.append("")
    mem = res.get("memory")
    if mem:
        L.append(
            f"## Resident memory per active stream ({mem['open_streams']} open slow streams)\n"
        )
        L.append("| target | idle RSS (MiB) | KB per active stream |")
        L.append("|---|---|---|")
        for t in ("bare", "guard_off", "guard_enforce"):
            if t in mem:
                L.append(
                    f"| {t} | {fmt(mem[t]['idle_rss_mb'], 1)} | {fmt(mem[t]['kb_per_stream'], 1)} |"
                )
        L.append("")
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
