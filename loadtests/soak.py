#!/usr/bin/env python3
"""Bounded soak test: many concurrent guarded streams for a fixed time, on 127.0.0.1 only.

Starts the scripted fast upstream (loadtests/fake_vllm.py) and `guard serve` in front of it, then
keeps ``--concurrency`` streams in flight for ``--duration`` seconds, mixed benign and harmful
(``--harmful-share``). Checks every stream: it must end with ``data: [DONE]``, every event must
parse, a benign stream's text must equal the upstream's canned reply exactly (nothing lost or
garbled), a harmful one must end in ``finish_reason: "content_filter"`` without the harmful tail.
Samples the guard's resident memory; growth is measured from the end of warm-up (first 10%) to the
end. Exits non-zero if any check fails. Prints and optionally writes a JSON summary.

    python loadtests/soak.py --duration 600 --concurrency 200      # the 10-minute soak
    python loadtests/soak.py --duration 20 --concurrency 50         # the short CI version
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "loadtests"))
import fake_vllm  # noqa: E402

from guard.demo import wait_healthy  # noqa: E402

SUPPORT = fake_vllm.SUPPORT_TEXT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Stats:
    def __init__(self) -> None:
        self.ok = 0
        self.halted = 0
        self.errors: list[str] = []
        self.tokens = 0


async def one_stream(client: httpx.AsyncClient, url: str, harmful: bool, st: Stats) -> None:
    word = "harmful" if harmful else "ordinary"
    body = {
        "model": "tiny",
        "stream": True,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": f"An {word} question about my order."}],
    }
    try:
        async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
            raw = await r.aread()
        if r.status_code != 200:
            st.errors.append(f"status {r.status_code}: {raw[:200]!r}")
            return
        if not raw.endswith(b"data: [DONE]\n\n"):
            st.errors.append("stream did not end with [DONE]")
            return
        text, finish = "", None
        for block in raw.split(b"\n\n"):
            if not block or block == b"data: [DONE]":
                continue
            obj = json.loads(block[6:])
            if "error" in obj:
                st.errors.append(f"error event: {obj['error']}")
                return
            for c in obj["choices"]:
                text += c["delta"].get("content") or ""
                finish = c["finish_reason"] or finish
                st.tokens += 1
        if harmful:
            if finish != "content_filter":
                st.errors.append(f"harmful stream not halted: {text[:80]!r}")
                return
            st.halted += 1
        elif text != SUPPORT[: len(text)] or finish not in ("stop", "length") or not text:
            st.errors.append(f"benign stream garbled or halted: finish={finish} {text[:80]!r}")
            return
        st.ok += 1
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        st.errors.append(
            f"{type(exc).__name__}: {exc!r} harmful={harmful} t={time.monotonic():.1f}"
        )


async def drive(
    url: str,
    duration: float,
    concurrency: int,
    share: float,
    pid: int,
    samples: list[tuple[float, int]],
) -> Stats:
    st = Stats()
    rng = random.Random(1)
    end = time.monotonic() + duration
    limits = httpx.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def worker() -> None:
            while time.monotonic() < end:
                await one_stream(client, url, rng.random() < share, st)

        async def sampler() -> None:
            t0 = time.monotonic()
            while time.monotonic() < end:
                samples.append((time.monotonic() - t0, rss_kib(pid)))
                await asyncio.sleep(max(0.5, duration / 60))

        await asyncio.gather(sampler(), *(worker() for _ in range(concurrency)))
    return st


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--duration", type=float, default=600)
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--harmful-share", type=float, default=0.3)
    ap.add_argument("--max-growth", type=float, default=0.05, help="allowed RSS growth (0.05=5%%)")
    ap.add_argument("--json", help="write the summary here")
    args = ap.parse_args()
    up_port, g_port = free_port(), free_port()
    up = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "loadtests" / "fake_vllm.py"),
            "--port",
            str(up_port),
            "--log-level",
            "warning",
        ],
        stderr=subprocess.DEVNULL,
    )
    guard = None
    try:
        wait_healthy(f"http://127.0.0.1:{up_port}", up, 30)
        # The fake's harmful text scores high with the shipped model; a soak is about the
        # machinery, so the threshold is set where every harmful stream is halted.
        guard = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "guard",
                "serve",
                "--upstream",
                f"http://127.0.0.1:{up_port}",
                "--port",
                str(g_port),
                "--max-streams",
                str(args.concurrency + 64),
                "--threshold",
                os.environ.get("SOAK_THRESHOLD", "0.3"),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
        )
        url = f"http://127.0.0.1:{g_port}"
        wait_healthy(url, guard, 30)
        samples: list[tuple[float, int]] = []
        t0 = time.monotonic()
        st = asyncio.run(
            drive(url, args.duration, args.concurrency, args.harmful_share, guard.pid, samples)
        )
        elapsed = time.monotonic() - t0
        warm = [kib for t, kib in samples if t >= 0.1 * args.duration] or [samples[0][1]]
        growth = (samples[-1][1] - warm[0]) / warm[0]
        metrics = httpx.get(url + "/metrics", timeout=10).text
        active = [ln for ln in metrics.splitlines() if ln.startswith("guard_active_streams ")]
        summary = {
            "duration_s": round(elapsed, 1),
            "concurrency": args.concurrency,
            "streams_ok": st.ok,
            "halted": st.halted,
            "errors": len(st.errors),
            "first_errors": st.errors[:5],
            "streams_per_s": round(st.ok / elapsed, 1),
            "chunks_per_s": round(st.tokens / elapsed, 1),
            "rss_kib_after_warmup": warm[0],
            "rss_kib_end": samples[-1][1],
            "rss_growth": round(growth, 4),
            "active_streams_after": active,
        }
        print(json.dumps(summary, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(summary, indent=2))
        failed = bool(st.errors) or growth > args.max_growth or st.ok == 0
        failed = failed or active != ["guard_active_streams 0.0"]
        return 1 if failed else 0
    finally:
        for p in (guard, up):
            if p is not None:
                p.terminate()
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()


if __name__ == "__main__":
    raise SystemExit(main())
